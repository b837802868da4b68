"""Pattern layer: market windows, the window encoder and the vector store of their embeddings."""
