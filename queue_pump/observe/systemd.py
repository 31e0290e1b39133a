"""systemd's notify protocol: READY=1, WATCHDOG=1, STOPPING=1 as datagrams to $NOTIFY_SOCKET.

The protocol is a few lines over a unix datagram socket, so no library is pulled in for it.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .state import Stats


class Notifier:
    def __init__(self, address: str | None) -> None:
        self._address = address

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier:
        path = environ.get("NOTIFY_SOCKET", "")
        if not path or not path.startswith(("/", "@")):
            return cls(None)
        # A leading @ names a socket in the abstract namespace.
        return cls("\0" + path[1:] if path.startswith("@") else path)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, message: str) -> bool:
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode())
            return True
        except OSError:
            # systemd gone or socket unreachable: the pump's work matters more than the ping.
            return False


def watchdog_interval_s(environ: Mapping[str, str]) -> float | None:
    """Half of WATCHDOG_USEC, as systemd recommends; None when no watchdog is asked for."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process
    return int(usec) / 2_000_000


STATUS_INTERVAL_S = 10.0


def status_line(snapshot: Mapping[str, Any]) -> str:
    """What `systemctl status` shows next to the unit."""
    counters = snapshot["counters"]
    line = (f"{snapshot['state']}: {counters['processed']} processed, {counters['idle']} idle, "
            f"{counters['errors']} errors")
    if snapshot["consecutive_failures"]:
        line += f", {snapshot['consecutive_failures']} failing in a row"
    if snapshot["status"] != "ok":
        line += ", STUCK"
    return line


async def watchdog(notifier: Notifier, stats: Stats, environ: Mapping[str, str],
                   pause: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Ping while every loop is healthy, with a STATUS= line. A stuck loop (or a wedged event
    loop, which stops this task too) stops the pings, and systemd restarts the service.

    ``pause`` is a plain sleep, not the pump's stop-or-timeout: the pings go on through the
    shutdown grace (the task is cancelled at the end). Tests hand in a fake one."""
    if not notifier.enabled:
        return
    interval = watchdog_interval_s(environ)
    # Keeps pinging through the shutdown grace too: calls finishing are not a wedge.
    while True:
        snapshot = stats.snapshot()
        message = f"STATUS={status_line(snapshot)}"
        if interval is not None and snapshot["status"] == "ok":
            message = "WATCHDOG=1\n" + message
        notifier.send(message)
        await pause(min(interval or STATUS_INTERVAL_S, STATUS_INTERVAL_S))
