"""What the operator commands read and print: durations as people write them, times as ages,
tables that fit a terminal (pure functions, as tables)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from queue_pump.cli.render import ago, parse_duration, parse_time, short_duration, table

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("90s", 90), ("30m", 1800), ("6h", 21600), ("7d", 604800), ("2w", 1209600),
    ("1.5h", 5400), (" 5m ", 300),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "--older-than") == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "-5m", "5y", "m"])
def test_a_bad_duration_names_the_flag_and_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"^--older-than .* expected e\.g\. 90s, 30m, 6h, 7d"):
        parse_duration(text, "--older-than")


@pytest.mark.parametrize(("text", "expected"), [
    ("1h", "2026-12-06T11:00:00+00:00"),
    ("2026-12-01T08:00:00Z", "2026-12-01T08:00:00+00:00"),
    ("2026-12-01T08:00:00+02:00", "2026-12-01T08:00:00+02:00"),
    ("2026-12-01T08:00:00", "2026-12-01T08:00:00+00:00"),  # no zone: UTC
])
def test_times_are_a_duration_ago_or_iso(text: str, expected: str) -> None:
    assert parse_time(text, "--since", now=NOW) == expected


def test_a_bad_time_names_the_flag() -> None:
    with pytest.raises(ValueError, match=r"^--since 'yesterday' is neither a duration ago"):
        parse_time("yesterday", "--since", now=NOW)


@pytest.mark.parametrize(("iso", "expected"), [
    (None, "-"), ("2026-12-06T11:59:55Z", "5.0s ago"), ("2026-12-06T11:30:00Z", "30m ago"),
    ("2026-12-06T13:00:00Z", "in 1.0h"), ("2026-12-01T12:00:00Z", "5.0d ago"),
])
def test_ages(iso: str | None, expected: str) -> None:
    assert ago(iso, now=NOW) == expected


def test_short_durations() -> None:
    assert [short_duration(s) for s in (3.14, 42, 600, 7200, 86400 * 3)] == [
        "3.1s", "42s", "10m", "2.0h", "3.0d"]


def test_a_table_fits_the_width_by_clipping_its_last_column() -> None:
    rows = [(1, "failed", "x" * 200), (22, "done", "short\nsecond line")]
    text = table(("ID", "STATUS", "LAST ERROR"), rows, width=40)
    lines = text.splitlines()
    assert all(len(line) <= 40 for line in lines)
    assert lines[1].endswith("\u2026") and lines[2].endswith("short second line")
    assert lines[0].split() == ["ID", "STATUS", "LAST", "ERROR"]
    wide = table(("ID", "STATUS", "LAST ERROR"), rows, width=None)
    assert "x" * 200 in wide  # piped: never clipped
