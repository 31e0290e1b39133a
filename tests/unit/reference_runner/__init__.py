"""reference_runner/: its store, its HTTP app, its command line."""
