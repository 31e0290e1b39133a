"""The loops' state as its readers see it: stopping, stopped, drained."""

from __future__ import annotations

from queue_pump.observe.state import LoopState, Stats


def test_shutdown_marks_loops_stopping_and_a_drained_queue_does_not_look_stopped() -> None:
    stats = Stats()
    busy, drained = stats.add_loop("a-0", "a"), stats.add_loop("b-0", "b")
    stats.call_started(busy, 10)
    stats.set_state(drained, LoopState.STOPPED)
    assert stats.overall_state() == "working"
    assert stats.mark_stopping() == 1
    assert stats.overall_state() == "stopping"
    assert [loop["state"] for loop in stats.snapshot()["loops"]] == ["stopping", "stopped"]
