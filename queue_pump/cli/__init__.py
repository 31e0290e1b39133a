"""The command line, the top floor: `queue-pump` and its commands (commands.py picks one and imports
its handler when asked), run and config (run.py), the health client behind status and
healthcheck (health_client.py), the demo (demo.py), and the one-line argument errors they share
(parsing.py). Commands to come (jobs, top, dashboard) live here too, each loading its libraries
lazily, so the pump's start-up, `--help` and idle memory never pay for them."""

from .commands import main

__all__ = ["main"]
