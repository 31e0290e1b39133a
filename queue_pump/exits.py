"""How a run ends: the mode that ends it (forever, once, drain) and the code it exits with.

Shared by the command line, the wiring and the loop, so it stands on the ground floor. A leaf:
it imports nothing, so the command line can name these without loading the pump.
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
