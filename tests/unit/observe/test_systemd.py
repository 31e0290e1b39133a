"""systemd's notify protocol over a real datagram socket, and the watchdog's pings in fake time."""

from __future__ import annotations

import asyncio
import socket

from queue_pump.observe.state import Stats
from queue_pump.observe.systemd import Notifier, watchdog, watchdog_interval_s
from tests.support.env import FakeTime


def test_notifier_speaks_the_datagram_protocol(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    assert Notifier.from_environ({"NOTIFY_SOCKET": path}).send("READY=1")
    assert sock.recv(100) == b"READY=1"
    assert not Notifier.from_environ({}).send("READY=1")
    assert not Notifier.from_environ({"NOTIFY_SOCKET": path + ".gone"}).send("READY=1")


def test_watchdog_pings_at_half_the_interval_only_while_healthy(
        notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    assert watchdog_interval_s(env) == 0.1
    assert watchdog_interval_s({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}) is None
    fake = FakeTime()
    stats = Stats(clock=fake.clock)
    loop = stats.add_loop("agent-0", "agent")

    waits: list[float] = []

    async def go() -> tuple[list[bytes], list[bytes]]:
        healthy_seen, resume, stuck_seen = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def pause(seconds: float) -> None:
            # Fake time: no real sleep; the test decides when each phase ends.
            waits.append(seconds)
            fake.now += seconds
            if len(waits) == 4:
                healthy_seen.set()
                await resume.wait()
            if len(waits) == 7:
                stuck_seen.set()
                await asyncio.Event().wait()  # until cancelled

        task = asyncio.create_task(watchdog(Notifier.from_environ(env), stats, env,
                                            pause=pause))
        await healthy_seen.wait()
        sock.setblocking(False)
        healthy = _drain(sock)
        stats.call_started(loop, 1.0)
        fake.now += 1000  # the loop is now stuck: pings must stop, the status says so
        resume.set()
        await stuck_seen.wait()
        task.cancel()
        return healthy, _drain(sock)

    healthy, stuck = asyncio.run(go())
    assert waits == [0.1] * 7  # half of WATCHDOG_USEC
    assert len(healthy) == 4
    assert all(m.startswith(b"WATCHDOG=1\nSTATUS=") for m in healthy)
    assert b"0 processed, 0 idle, 0 errors" in healthy[0]
    assert stuck and not any(b"WATCHDOG=1" in m for m in stuck)
    assert all(m.startswith(b"STATUS=") and m.endswith(b"STUCK") for m in stuck)


def _drain(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(200))
        except BlockingIOError:
            return got
