"""DAVIS benchmarking with the official J&F semantics."""
