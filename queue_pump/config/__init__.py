"""Configuration, the ground floor: what a setting is (knobs.py), the one table of them
(settings.py), the rules every Settings is held to (rules.py), the environment and .env parsed
into Settings (environment.py, envfile.py), names that look like settings but are not
(unknown_names.py), and the URL helpers they share (urls.py). Imports nothing of the pump."""

from .envfile import load_env, missing_env_note
from .environment import from_mapping, some_from_mapping
from .knobs import Kind, Knob
from .rules import ConfigError
from .settings import (
    KNOBS,
    KNOBS_BY_ATTR,
    KNOBS_BY_ENV,
    PREFIX,
    Settings,
    describe_knobs,
    env_example,
    env_of,
)
from .urls import is_loopback_host, redact_url

__all__ = [
    "KNOBS",
    "KNOBS_BY_ATTR",
    "KNOBS_BY_ENV",
    "PREFIX",
    "ConfigError",
    "Kind",
    "Knob",
    "Settings",
    "describe_knobs",
    "env_example",
    "env_of",
    "from_mapping",
    "is_loopback_host",
    "load_env",
    "missing_env_note",
    "redact_url",
    "some_from_mapping",
]
