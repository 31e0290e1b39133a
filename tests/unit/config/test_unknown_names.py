"""Misspelled QUEUE_PUMP_* variables: found, with the closest real name."""

from __future__ import annotations

import pytest

from queue_pump.config.settings import KNOBS
from queue_pump.config.unknown_names import unknown_settings, warning_line

KNOWN = [k.env for k in KNOBS]


@pytest.mark.parametrize(("name", "suggestion"), [
    ("QUEUE_PUMP_IDLE_SLEEP", "QUEUE_PUMP_IDLE_SLEEP_MS"),
    ("QUEUE_PUMP_CONCURENCY", "QUEUE_PUMP_CONCURRENCY"),
    ("QUEUE_PUMP_TICK_SLEEP", "QUEUE_PUMP_TICK_SLEEP_MS"),
    ("QUEUE_PUMP_HTTP_TIMEOUT", "QUEUE_PUMP_HTTP_TIMEOUT_MS"),
    ("QUEUE_PUMP_FROBNICATE", None),
])
def test_a_misspelled_setting_is_named_with_the_closest_one(name: str,
                                                            suggestion: str | None) -> None:
    assert unknown_settings({name: "1", "PATH": "/bin"}, KNOWN) == [(name, suggestion)]


def test_known_settings_other_programs_variables_and_the_runners_are_not_reported() -> None:
    env = {k: "1" for k in KNOWN} | {"HOME": "/root", "QUEUE_PUMP_RUNNER_PORT": "8000",
                                     "QUEUE_PUMP_DENO": "/x", "QUEUE_PUMP_REQUIRE_KIT": "1"}
    assert unknown_settings(env, KNOWN) == []


def test_the_warning_says_it_is_ignored_and_what_to_write() -> None:
    assert warning_line("QUEUE_PUMP_CONCURENCY", "QUEUE_PUMP_CONCURRENCY") == (
        "QUEUE_PUMP_CONCURENCY is not a queue-pump setting and is ignored;"
        " did you mean QUEUE_PUMP_CONCURRENCY?")
    assert warning_line("QUEUE_PUMP_X", None).endswith("is ignored")
