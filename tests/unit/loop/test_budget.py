import pytest

from queue_pump.loop.budget import TokenBucket
from tests.support.env import FakeTime


def test_a_burst_up_to_capacity_then_paced_at_the_rate(fake_time: FakeTime) -> None:
    bucket = TokenBucket(per_hour=3600, capacity=3, clock=fake_time.clock)  # 1 call/s
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    # Reservations behind an empty bucket each wait one more second: fair, never dropped.
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([1.0, 2.0, 3.0])


def test_calls_never_exceed_the_budget_over_an_hour(fake_time: FakeTime) -> None:
    bucket = TokenBucket(per_hour=120, capacity=4, clock=fake_time.clock)
    start, calls = fake_time.now, 0
    while fake_time.now - start < 3600:
        wait = bucket.reserve()
        fake_time.now += wait  # the loop waits, then calls at once
        if fake_time.now - start < 3600:
            calls += 1
    assert 120 <= calls <= 124  # the rate, plus the initial burst of 4 at most


def test_idle_time_refills_up_to_capacity_only(fake_time: FakeTime) -> None:
    bucket = TokenBucket(per_hour=3600, capacity=2, clock=fake_time.clock)
    bucket.reserve()
    bucket.reserve()
    fake_time.now += 100  # a long quiet spell does not bank 100 calls
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0.0, 0.0, 1.0])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        TokenBucket(per_hour=0, capacity=1)
