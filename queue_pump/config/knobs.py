"""The vocabulary of settings: what a knob is (variable, kind, default, help, range, flags) and
``setting()``, which declares one as a field of the Settings dataclass (settings.py).

The table itself is ``Settings``: each field is declared once, with its type and its knob, and
parsing (environment.py), ``--help``, ``.env.example`` and the README table are derived from it, so
they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MIB = 1024 * 1024


class Kind(StrEnum):
    """How a value is written in the environment, and so how it is parsed (environment.py)."""

    MS = "ms"  # whole milliseconds in the environment; seconds (float) in Settings
    INT = "int"
    BOOL = "bool"
    STR = "str"
    CHOICE = "choice"
    URL = "url"
    SECRET = "secret"


@dataclass(frozen=True)
class Knob:
    env: str
    attr: str  # the Settings field; an MS knob's ends in _s: the loop works in seconds
    kind: Kind
    default: str | None
    help: str
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()
    required: bool = False
    optional: bool = False  # empty means "not set" (None), resolved after parsing
    # Never in any output: a SECRET always; also e.g. a Slack-style webhook URL, which carries
    # its credential in the path.
    secret: bool = False
    header: bool = False  # travels as an HTTP header on every call
    placeholder: str = ""  # what .env.example ships for a required one
    # A value set must be at least this long, and why (the end of the problem line).
    min_chars: int = 0
    min_chars_why: str = ""
    # The field (attr) this one may not be below, and what to add to the problem line.
    at_least: str = ""
    at_least_note: str = ""

    @property
    def view_name(self) -> str:
        """The name in `queue-pump config` and the start line: the unit the user wrote."""
        return self.attr.removesuffix("_s") + "_ms" if self.kind is Kind.MS else self.attr

    @property
    def unit(self) -> str:
        return " ms" if self.kind is Kind.MS else ""

    @property
    def scale(self) -> float:
        """Settings' unit per the environment's: an MS knob's value is held in seconds."""
        return 1000.0 if self.kind is Kind.MS else 1.0

    def shown(self, value: Any) -> str:
        """A parsed value as the environment writes it, for a problem line."""
        if self.kind is Kind.MS and isinstance(value, int | float):
            return str(round(value * 1000))
        return repr(value)


MAX_TOTAL_CONCURRENCY = 256
# One minimum for every token the pump and the kit share (the agent's, the admin's, the wake
# token): the kit's functions refuse a shorter one (supabase/functions/_shared/env.ts), so the
# pump refuses it too, at its start, rather than start and meet a misconfigured function. A
# token is a shared secret that whoever reaches the endpoint may try to guess: 16 characters
# from a random source (openssl rand -hex 32 gives 64) cannot be guessed by trying.
MIN_TOKEN_CHARS = 16
MIN_WAKE_TOKEN = MIN_TOKEN_CHARS
MIN_ADMIN_TOKEN = MIN_TOKEN_CHARS
# Every secret is masked wherever it appears in a log line: a one-letter token would turn
# "call_failed" into "call_fail***d" and so show the token. Shorter than this is no secret
# (the floor for secrets the pump is given but does not choose, like Supabase's anon key).
MIN_SECRET_CHARS = 8
MAX_HEADER_CHARS = 4096

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# The key of a setting's Knob in its dataclass field's metadata.
KNOB = "queue_pump.knob"


def setting(env: str, kind: Kind, default: str | None, help: str, *,
            low: int | None = None, high: int | None = None, choices: tuple[str, ...] = (),
            required: bool = False, optional: bool = False, secret: bool = False,
            header: bool = False, placeholder: str = "", min_chars: int = 0,
            min_chars_why: str = "", at_least: str = "", at_least_note: str = "") -> Any:
    """A Settings field and its knob, in one declaration: ``name: type = setting(...)``.

    The field has no default (Settings is built from every value, by config.from_mapping);
    ``default`` is the environment's, as written there. A secret is kept out of repr()."""
    secret = secret or kind is Kind.SECRET
    knob = Knob(env, "", kind, default, help, low, high, choices, required, optional, secret,
                header, placeholder, min_chars, min_chars_why, at_least, at_least_note)
    return dataclasses.field(metadata={KNOB: knob}, repr=not secret)


def knobs_of(cls: type) -> tuple[Knob, ...]:
    """The knobs of a dataclass declared with ``setting()``, in field order, each with its
    ``attr`` filled from the field's name. Fields without a knob (derived ones) are left out."""
    return tuple(dataclasses.replace(f.metadata[KNOB], attr=f.name)
                 for f in dataclasses.fields(cls) if KNOB in f.metadata)
