"""Compression steps: each takes an artifact and returns a new one with its lineage."""
