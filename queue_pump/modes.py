"""What the command line and the pump share: how a run ends (modes) and what it exits with.

A leaf: it imports nothing, so the command line can name these without loading the pump.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Mode(StrEnum):
    FOREVER = "forever"
    ONCE = "once"
    DRAIN = "drain"


class ExitCode(IntEnum):
    OK = 0
    CALL_FAILED = 1  # --once or --drain could not finish its calls, or a loop crashed
    CONFIG = 2
    GRACE_EXPIRED = 3  # calls in flight were cancelled when the shutdown grace ran out
