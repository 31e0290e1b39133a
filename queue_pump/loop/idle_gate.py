"""Who may call an idle queue: one loop probes it, the others wait, so an idle queue costs one
loop's calls whatever the concurrency. Pure: no clock, no asyncio; the pump does the waiting.

Each loop polling at the idle pace on its own made 158 calls in 20 s with 8 loops against an
empty queue, 20 with one: the runner's bill grew with the loops, not with the work. Here a
loop that gets an idle answer becomes the queue's prober if there is none (and sleeps the
adaptive idle pace), or else parks: it makes no call until the queue has work again. A loop
leaves work only on its own idle answer, as before, so loops still draining a burst are
never parked by another loop's empty claim.

A call that runs long while others are parked (the runner runs a job before it answers, for
minutes maybe) is work too: it doubles the loops calling without waiting for that answer.

The first answer with work ends the probing and lets parked loops call again: as many as the
answer says are useful. A runner that sends ``backlog`` (jobs due after the call) gets
ceil(backlog / jobs per call) loops, so a lone job after a quiet hour costs no extra calls at
C=64; a runner that does not (the one-job drop-in) gets every loop back, since nothing says
fewer would do, and the loops that find nothing park again after one call each.
"""

from __future__ import annotations

import math


def loops_wanted(backlog: int | None, jobs: int, loops: int) -> int:
    """How many of ``loops`` are worth calling after an answer with work: every one when the
    runner says nothing of its backlog; else enough to take the backlog at ``jobs`` per call
    (at least one: the loop that got the work goes on)."""
    if backlog is None:
        return loops
    per_call = max(jobs, 1)
    return max(1, min(loops, math.ceil(backlog / per_call)))


class IdleGate:
    """One queue's loops: the prober, the parked, and the permits to unpark."""

    def __init__(self) -> None:
        self.prober: str | None = None
        self.members: set[str] = set()
        self.parked: set[str] = set()
        self.permits = 0  # parked loops that may call again (the first to ask take them)

    @property
    def active(self) -> int:
        """Loops that call (or are about to): the unparked, and the parked holding a permit."""
        return len(self.members) - len(self.parked) + self.permits

    def join(self, loop: str) -> None:
        self.members.add(loop)

    def leave(self, loop: str) -> bool:
        """A loop ends (stop, crash): True when a parked loop must be let out to take over."""
        self.members.discard(loop)
        if loop in self.parked:
            self.parked.discard(loop)
            self.permits = min(self.permits, len(self.parked))
        if self.prober == loop:
            self.prober = None
        return self._needs_one()

    def may_call(self, loop: str) -> bool:
        """Asked before every call: False means park (wait for a release, then ask again)."""
        if loop not in self.parked:
            return True
        if self.permits > 0:
            self.permits -= 1
            self.parked.discard(loop)
            return True
        if self.prober is None and len(self.members) == len(self.parked):
            # Nobody else calls (the last active loop ended): this one probes from now on.
            self.parked.discard(loop)
            self.prober = loop
            return True
        return False

    def on_idle(self, loop: str) -> bool:
        """An idle answer to ``loop``: True when it is the prober (it sleeps the idle pace and
        calls again), False when it parks."""
        if self.prober is None or self.prober == loop:
            self.prober = loop
            return True
        self.parked.add(loop)
        return False

    def on_work(self, loop: str, wanted: int) -> int:
        """An answer with work to ``loop``: probing ends (a sleeping prober parks, to be let
        out like the rest) and up to ``wanted`` loops in all call. Returns the new permits: the
        pump wakes the parked loops when there are any."""
        self._busy(loop)
        before = self.permits
        self.permits = max(self.permits, min(len(self.parked), wanted - self.active + self.permits))
        return self.permits - before

    def on_long_call(self, loop: str) -> int:
        """``loop``'s call is still in flight long after an idle answer would have come: the
        runner is running a job, so the queue has work, though nobody knows how much yet. The
        loops calling double (each long call once): 1, 2, 4, ... all, a step per long call,
        while a lone long job costs one extra call (the loop let out finds nothing, parks)."""
        return self.on_work(loop, wanted=2 * self.active)

    def _busy(self, loop: str) -> None:
        self.parked.discard(loop)
        if self.prober is not None and self.prober != loop:
            self.parked.add(self.prober)
        self.prober = None

    def _needs_one(self) -> bool:
        if self.parked and self.active == 0:
            self.permits = 1
            return True
        return False
