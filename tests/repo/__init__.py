"""The repository around the package: the docs stay true, the benchmark harness still runs."""
