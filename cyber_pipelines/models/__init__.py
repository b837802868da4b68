"""Learned models: the model store (safetensors + JSON config, never pickle)."""
