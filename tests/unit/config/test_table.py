"""The settings table is the Settings dataclass: each field's type must agree with its knob, so a
new setting cannot be declared inconsistently (and mypy, which reads the annotations, sees the
type the parser produces)."""

from __future__ import annotations

import dataclasses
import re
import typing

from queue_pump.config import from_mapping
from queue_pump.config.knobs import KNOB, Kind, knobs_of, setting
from queue_pump.config.settings import KNOBS, Settings
from tests.support.env import BASE_ENV, ROOT

# What each kind parses to. An optional setting's empty value is resolved before Settings is
# built (QUEUE_PUMP_IDLE_MAX_SLEEP_MS: to the idle sleep), so its field has the plain type too.
TYPE_OF = {Kind.MS: float, Kind.INT: int, Kind.BOOL: bool}


def declaration_problems(cls: type) -> list[str]:
    """Every way the fields of ``cls`` disagree with their knobs, one line each."""
    hints = typing.get_type_hints(cls)
    problems = []
    for f in dataclasses.fields(cls):
        if KNOB not in f.metadata:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{f.name}: neither a setting() nor derived (no default)")
            continue
        knob = f.metadata[KNOB]
        expected = TYPE_OF.get(knob.kind, str)
        hint = hints[f.name]
        if hint is not expected:
            problems.append(f"{f.name}: {knob.kind} wants {expected.__name__}, "
                            f"annotated {getattr(hint, '__name__', hint)}")
        if knob.kind is Kind.MS and not f.name.endswith("_s"):
            problems.append(f"{f.name}: an ms setting is held in seconds, named ..._s")
        if knob.kind in (Kind.MS, Kind.INT) and (knob.low is None or knob.high is None):
            problems.append(f"{f.name}: a number needs low= and high=")
        if knob.kind is Kind.CHOICE and knob.default not in (*knob.choices, ""):
            problems.append(f"{f.name}: default {knob.default!r} is not among its choices")
        if knob.required != bool(knob.placeholder):
            problems.append(f"{f.name}: a required setting, and only one, has a placeholder")
    return problems


def test_every_setting_is_declared_consistently() -> None:
    assert declaration_problems(Settings) == []


def test_the_checker_reports_each_inconsistency() -> None:
    @dataclasses.dataclass(frozen=True)
    class Bad:
        count: str = setting("X_COUNT", Kind.INT, "1", "Count.", low=0, high=9)
        wait: float = setting("X_WAIT_MS", Kind.MS, "5", "Wait.")
        on: int = setting("X_ON", Kind.BOOL, "0", "On.")
        mode: str = setting("X_MODE", Kind.CHOICE, "c", "Mode.", choices=("a", "b"))
        url: str = setting("X_URL", Kind.URL, None, "Url.", required=True)
        maybe: float | None = setting("X_MAYBE_MS", Kind.MS, "", "Maybe.", low=0, high=9,
                                      optional=True)
        stray: int
        derived: int = 0

    assert declaration_problems(Bad) == [
        "count: int wants int, annotated str",
        "wait: an ms setting is held in seconds, named ..._s",
        "wait: a number needs low= and high=",
        "on: bool wants bool, annotated int",
        "mode: default 'c' is not among its choices",
        "url: a required setting, and only one, has a placeholder",
        "maybe: ms wants float, annotated float | None",
        "maybe: an ms setting is held in seconds, named ..._s",
        "stray: neither a setting() nor derived (no default)",
    ]


def test_parsed_values_have_the_declared_types() -> None:
    """What from_mapping builds (every default, an optional one resolved) has the field's
    type exactly: an int is no bool, a None is no float."""
    s = from_mapping(BASE_ENV, hostname="h")
    hints = typing.get_type_hints(Settings)
    wrong = {k.attr: type(getattr(s, k.attr)).__name__ for k in KNOBS
             if type(getattr(s, k.attr)) is not hints[k.attr]}
    assert wrong == {}


def test_the_knobs_are_the_fields_in_order() -> None:
    names = [f.name for f in dataclasses.fields(Settings)]
    assert [k.attr for k in KNOBS] == [n for n in names if n != "lanes"]
    assert knobs_of(Settings) == KNOBS
    assert len({k.env for k in KNOBS}) == len(KNOBS)


def test_a_secret_setting_stays_out_of_the_generated_repr() -> None:
    @dataclasses.dataclass(frozen=True)
    class Two:
        token: str = setting("X_TOKEN", Kind.SECRET, "", "Token.")
        hook: str = setting("X_HOOK", Kind.URL, "", "Hook.", secret=True)
        name: str = setting("X_NAME", Kind.STR, "", "Name.")

    text = repr(Two(token="tok-1234", hook="https://h.example/SECRETPATH", name="n"))
    assert text == "test_a_secret_setting_stays_out_of_the_generated_repr.<locals>.Two(name='n')"
    assert [k.secret for k in knobs_of(Two)] == [True, True, False]


PACKAGE = ROOT / "queue_pump"
# The table itself; and the reference runner, a program of its own that imports nothing of the
# pump (its QUEUE_PUMP_RUNNER_* flags are its own table; it reads the contract's variables too).
TABLE_AND_APART = (PACKAGE / "config" / "settings.py", PACKAGE / "reference_runner")


def test_no_variable_is_named_outside_the_table() -> None:
    names = {knob.env for knob in KNOBS}
    pattern = re.compile(r"\bQUEUE_PUMP_[A-Z0-9]|\b(" + "|".join(sorted(names)) + r")\b")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if any(path == apart or apart in path.parents for apart in TABLE_AND_APART):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if pattern.search(line):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not found, "variables named outside queue_pump/config/settings.py:\n" + "\n".join(
        found)
