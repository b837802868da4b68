"""Local fake servers of external APIs, for tests."""
