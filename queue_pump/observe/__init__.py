"""What the pump shows of itself: the loops' state (state.py), the health endpoint (health.py)
on its bounded HTTP server (http_server.py), systemd's notify protocol (systemd.py), the outage
webhook (alerts.py) and the logs (logs.py). The loop writes the state; everything else here only
reads it. Nothing here calls the runner."""

from .alerts import Alerter
from .health import HealthServer
from .logs import Redactor, configure, get_logger
from .state import LoopRecord, LoopState, Stats
from .systemd import Notifier, watchdog

__all__ = [
    "Alerter",
    "HealthServer",
    "LoopRecord",
    "LoopState",
    "Notifier",
    "Redactor",
    "Stats",
    "configure",
    "get_logger",
    "watchdog",
]
