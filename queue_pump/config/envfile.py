"""Where settings come from before they are parsed: the real environment over a .env file,
with the warnings about that file (readable by everyone) and about names that are no setting,
and where the pump looked when a required one is missing."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

from .rules import ConfigError
from .settings import KNOBS
from .unknown_names import unknown_settings, warning_line


def load_env(env_file: str | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The real environment over the .env file: an explicit variable always wins.

    ``env_file`` None means ``.env`` in the working directory if it exists; a named file that
    does not exist is an error, since the user asked for it.
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, str] = {}
    path = Path(env_file) if env_file else Path(".env")
    if env_file and not path.is_file():
        raise ConfigError([f"--env-file {env_file!r} does not exist or is not a file"])
    if path.is_file():
        from dotenv import dotenv_values  # only with a file to read: most deployments have none

        try:
            file_values = dotenv_values(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"--env-file {str(path)!r} cannot be read: "
                               f"{exc.__class__.__name__}"]) from None
        merged.update({k: v for k, v in file_values.items() if v is not None})
        warning = _world_readable_secrets(path, merged)
        if warning:
            print(f"queue-pump: warning: {warning}", file=sys.stderr)
    merged.update(environ)
    # A misspelled name is otherwise ignored in silence and its default used. A warning, not an
    # error: a newer .env must still start an older pump.
    for name, suggestion in unknown_settings(merged, [k.env for k in KNOBS]):
        print(f"queue-pump: warning: {warning_line(name, suggestion)}", file=sys.stderr)
    return merged


def missing_env_note(env_file: str | None, problems: list[str]) -> list[str]:
    """When a required setting is missing and no .env was read, the first such line also says
    where the pump looked (still one line per problem)."""
    if env_file or Path(".env").is_file():
        return problems
    out, told = [], False
    for problem in problems:
        if not told and " is not set" in problem:
            problem += (f"; no .env was read in {str(Path.cwd())!r} (the working directory): "
                        "run the pump where .env is, or pass --env-file PATH")
            told = True
        out.append(problem)
    return out


def _world_readable_secrets(path: Path, values: Mapping[str, str]) -> str | None:
    """A warning when ``path`` holds a secret and every user of the machine may read it.

    A warning, not an error: the Node pump's users have such files, and refusing to start would
    turn an upgrade into an outage."""
    if os.name != "posix":
        return None  # the mode bits mean nothing there
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    held = [k.env for k in KNOBS if k.secret and values.get(k.env)]
    if not (mode & stat.S_IROTH and held):
        return None
    return (f"{str(path)!r} holds {', '.join(held)} and is readable by every user (mode "
            f"{stat.S_IMODE(mode):o}); make it private: chmod 600 {str(path)!r}")
