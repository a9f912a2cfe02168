"""Benchmarks for infw: every figure is a ratio or difference against a floor or a peer measured in the same run."""
