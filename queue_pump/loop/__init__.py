"""The loop: call the runner, read the outcome, record it, pause or back off, until stopped.

``pump.py`` runs the loops; ``client.py`` makes the one contract call and classifies its answer;
``failures.py`` names every failure (kind, reason, hint) for calls and schedules alike;
``backoff.py`` holds the wait rules as pure functions, ``budget.py`` the shared call budget, and
``waits.py`` every wait (stop or timeout, and wakes). It writes to observe's loop state and
knows nothing of the health endpoint or the process that wires it.
"""

from .budget import TokenBucket
from .client import IDLE, Idle, Outcome, Processed, RunnerClient
from .failures import CallError, ErrorKind
from .pump import Lane, Policy, Pump
from .waits import Pause, Waker, stop_or_timeout

__all__ = [
    "IDLE",
    "CallError",
    "ErrorKind",
    "Idle",
    "Lane",
    "Outcome",
    "Pause",
    "Policy",
    "Processed",
    "Pump",
    "RunnerClient",
    "TokenBucket",
    "Waker",
    "stop_or_timeout",
]
