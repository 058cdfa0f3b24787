"""Benchmarking: pure-inference and end-to-end harness, device timing, FLOPs, renderings."""
