"""Data: synthetic videos (and, later, datasets)."""
