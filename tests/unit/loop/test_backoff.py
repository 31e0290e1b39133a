import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from queue_pump.loop.backoff import (
    RETRY_AFTER_CEILING_S,
    RETRY_AFTER_SPREAD,
    full_jitter,
    idle_delay,
    next_delay,
    parse_retry_after,
    retry_delay,
)


@pytest.mark.parametrize("failures", range(1, 12))
def test_full_jitter_stays_within_its_exponential_bound(failures: int) -> None:
    strategy = full_jitter(1.0, 60.0)
    bound = min(60.0, 1.0 * 2 ** (failures - 1))
    rng = random.Random(failures)
    delays = [retry_delay(strategy, failures, rng) for _ in range(300)]
    assert all(0 <= d <= bound for d in delays)
    # Full jitter spreads over the whole range, not a narrow band near the bound.
    assert min(delays) < bound * 0.2 and max(delays) > bound * 0.8


def test_full_jitter_grows_then_caps() -> None:
    rng = random.Random(7)
    strategy = full_jitter(0.5, 8.0)
    means = [sum(retry_delay(strategy, n, rng) for _ in range(2000)) / 2000 for n in (1, 3, 5, 9)]
    assert means[0] < means[1] < means[2]
    assert means[3] == pytest.approx(4.0, rel=0.1)  # uniform(0, cap) averages cap / 2


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) \
        == pytest.approx(90)
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0
    assert parse_retry_after("999999", now) == RETRY_AFTER_CEILING_S


@pytest.mark.parametrize("garbage", ["", None, "soon", "-5", "1.5e9", "1.", "nan", "Mon, 99 Foo"])
def test_retry_after_garbage_is_ignored(garbage: str | None) -> None:
    assert parse_retry_after(garbage) is None


def test_next_delay_rules() -> None:
    strategy = full_jitter(1.0, 60.0)
    rng = random.Random(3)
    # The runner's Retry-After is the least wait, even above the cap (plus up to 25 %).
    assert 120.0 <= next_delay(strategy, 1, 60.0, retry_after_s=120.0, at_cap=False,
                               rng=rng) <= 150.0
    assert next_delay(strategy, 1, 60.0, retry_after_s=120.0, at_cap=True, rng=rng) == 120.0
    # ...but never less than the backoff: "Retry-After: 0" must not make a tight loop.
    zero = [next_delay(strategy, 5, 60.0, retry_after_s=0.0, at_cap=False, rng=rng)
            for _ in range(200)]
    assert max(zero) > 8 and sum(zero) / len(zero) > 4  # uniform(0, 16) averages 8
    assert next_delay(strategy, 1, 60.0, retry_after_s=0.0, at_cap=True, rng=rng) == 60.0
    # Configuration problems wait the cap from the first failure.
    assert next_delay(strategy, 1, 60.0, retry_after_s=None, at_cap=True, rng=rng) == 60.0
    assert 0 <= next_delay(strategy, 1, 60.0, retry_after_s=None, at_cap=False, rng=rng) <= 1.0


def test_idle_delay_jitters_ten_percent() -> None:
    rng = random.Random(1)
    delays = [idle_delay(10.0, rng) for _ in range(500)]
    assert all(9.0 <= d <= 11.0 for d in delays)
    assert max(delays) - min(delays) > 1.5


def test_retry_after_is_a_floor_with_independent_jitter_above_it() -> None:
    # 256 loops told "Retry-After: 5" used to come back within the same 100 ms, every 5 s.
    rng = random.Random(5)
    strategy = full_jitter(1.0, 60.0)
    delays = [next_delay(strategy, 1, 60.0, retry_after_s=5.0, at_cap=False, rng=rng)
              for _ in range(256)]
    assert all(5.0 <= d <= 5.0 * (1 + RETRY_AFTER_SPREAD) for d in delays)
    per_100ms = Counter(int(d * 10) for d in delays)
    assert max(per_100ms.values()) <= 40  # spread over 1.25 s: about 20 per 100 ms
    assert max(delays) - min(delays) > 1.0


def test_the_queue_gate_lets_one_loop_probe_and_holds_the_others() -> None:
    from queue_pump.loop.backoff import QueueGate

    gate = QueueGate(spread_s=1.0, rng=random.Random(2))
    assert gate.hold("a-0", 100.0) == 0 and gate.hold("a-1", 100.0) == 0  # open: all call
    gate.failed("a-0", 100.0, delay_s=4.0)  # a-0 failed first: it probes
    gate.failed("a-1", 100.1, delay_s=0.5)  # a-1's failure does not move the probe
    assert gate.prober == "a-0" and gate.next_probe_at == 104.0
    assert gate.hold("a-0", 100.2) == 0
    held = [gate.hold("a-1", 100.2) for _ in range(50)]
    assert all(3.8 + 0.1 <= h <= 3.8 + 1.0 for h in held)  # past the next probe, jittered
    assert max(held) - min(held) > 0.5
    gate.failed("a-0", 104.0, delay_s=8.0)  # the probe failed again: hold longer
    assert gate.hold("a-1", 104.0) >= 8.0
    gate.succeeded()  # any answer that is not a failure opens the gate for all
    assert gate.hold("a-1", 104.1) == 0 and gate.prober is None
    gate.failed("a-1", 105.0, delay_s=1.0)
    gate.leave("a-1")  # a prober that ends hands the probing on
    assert gate.prober is None and gate.hold("a-2", 105.0) == 0


def test_the_retry_after_jitter_never_passes_the_ceiling() -> None:
    strategy = full_jitter(1.0, 60.0)
    rng = random.Random(9)
    waits = [next_delay(strategy, 1, 60.0, retry_after_s=RETRY_AFTER_CEILING_S, at_cap=False,
                        rng=rng) for _ in range(50)]
    assert waits == [RETRY_AFTER_CEILING_S] * 50
    assert next_delay(strategy, 1, 60.0, retry_after_s=7.0, at_cap=False, rng=rng,
                      spread=0.0) == 7.0


def test_the_jitter_comes_from_the_random_source_handed_in() -> None:
    strategy = full_jitter(1.0, 60.0)
    first = [retry_delay(strategy, 6, random.Random(42)) for _ in range(3)]
    assert first[0] == first[1] == first[2]  # the same seed, the same wait: nothing global
    assert retry_delay(strategy, 6, random.Random(43)) != first[0]
    with pytest.raises(TypeError):
        retry_delay(strategy, 6)  # a jittered wait without a source is a bug, not a default


def test_exponential_bound_never_overflows() -> None:
    assert retry_delay(full_jitter(1.0, 60.0), 10_000, random.Random(1)) <= 60.0
