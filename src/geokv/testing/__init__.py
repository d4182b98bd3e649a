"""Helpers to run real geokv members and clusters in tests, demos and benchmarks."""
