"""Benchmarks: each prints the figures that docs/benchmarks.md records."""
