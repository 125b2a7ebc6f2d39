"""Benchmarking: ``parity bench``, the gradient benchmark, timing-regression statistics."""
