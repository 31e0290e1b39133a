"""cli/: the command line, in process (cli.main), and the health client."""
