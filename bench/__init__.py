"""Benchmarks and long runs: not part of the default test run."""
