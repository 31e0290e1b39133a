#!/usr/bin/env python3
"""Is a lock consistent with pyproject.toml? Asks nothing of the package index.

A lock is consistent when it could have come from resolving pyproject.toml, whatever the index
holds today: every dependency of pyproject.toml (and the build backend) is pinned to a version
its range allows, every pin carries a hash, and nothing is left over from a dependency that is
gone. Whether a newer release exists is a different question (scripts/lock.sh --fresh, asked
by a scheduled job), so an upstream release never turns CI red.

    python3 scripts/lock_check.py                       requirements.lock and requirements-dev.lock
    python3 scripts/lock_check.py --installed           also against what is installed here
    python3 scripts/lock_check.py --lock L [--extra dev] [--pyproject P] [--site DIR]

--installed walks the dependency metadata of the distributions installed in this interpreter
(after `pip install --require-hashes --no-deps -r requirements.lock`, say) from pyproject's
requirements: every requirement met by a pin that satisfies it, every pin that applies to this
platform reached. The text checks rely on the lock's "# via" annotations; this one does not.

One line per problem, then exit 1; exit 0 and one line when consistent; exit 2 on bad usage.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

try:
    from packaging import markers, requirements, utils, version
except ImportError:  # a bare venv made from the lock: pip carries its own copy
    from pip._vendor.packaging import (  # type: ignore[no-redef]
        markers,
        requirements,
        utils,
        version,
    )

Marker = markers.Marker
Requirement = requirements.Requirement
InvalidRequirement = requirements.InvalidRequirement
InvalidVersion = version.InvalidVersion
Version = version.Version
canonicalize_name = utils.canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# What uv writes in "# via" for the roots: the project itself, and the build backend's input.
PROJECT_VIA = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)(?:\[[^\]]*\])? \(pyproject\.toml\)$")
BUILD_VIA = "-r build-system.requires (pyproject.toml)"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)"
                 r"\s*(?:;\s*(?P<marker>[^\\]+?))?\s*\\?\s*$")
HASH = re.compile(r"^\s+--hash=sha256:[0-9a-f]{64}\s*\\?\s*$")


@dataclass
class Pin:
    name: str            # canonical
    version: str
    marker: str | None
    line: int
    hashes: int = 0
    via: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Roots:
    """pyproject.toml's requirements: the project's own (with the extras asked for) and the
    build backend's."""
    project: str
    runtime: tuple[Requirement, ...]
    build: tuple[Requirement, ...]


def parse_lock(text: str) -> tuple[list[Pin], list[str]]:
    pins: list[Pin] = []
    problems: list[str] = []
    in_via = False
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line.strip():
            continue
        if m := PIN.match(line):
            pins.append(Pin(canonicalize_name(m["name"]), m["version"], m["marker"], n))
            in_via = False
        elif HASH.match(line) and pins:
            pins[-1].hashes += 1
        elif line.strip().startswith("#"):
            in_via = _read_comment(line.strip(), pins, in_via)
        else:
            problems.append(f"line {n}: not a pin, a hash or a comment: {line.strip()[:80]!r}")
    return pins, problems


def _read_comment(comment: str, pins: list[Pin], in_via: bool) -> bool:
    body = comment.lstrip("#").strip()
    if not pins:
        return False                       # the header
    if body == "via":
        return True
    if body.startswith("via "):
        pins[-1].via.append(body[4:].strip())
        return False
    if in_via and comment.startswith("#   "):
        pins[-1].via.append(body)
        return True
    return False


def read_roots(pyproject: Path, extras: Iterable[str]) -> Roots:
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    project = data["project"]
    runtime = [Requirement(r) for r in project.get("dependencies", [])]
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"lock_check: pyproject.toml has no extra {extra!r} "
                             f"(it has: {', '.join(sorted(optional)) or 'none'})")
        runtime += [Requirement(r) for r in optional[extra]]
    build = [Requirement(r) for r in data.get("build-system", {}).get("requires", [])]
    return Roots(canonicalize_name(project["name"]), tuple(runtime), tuple(build))


def check_text(lock_name: str, text: str, roots: Roots, hashed: bool = True) -> list[str]:
    """The checks that need only the two files."""
    pins, problems = parse_lock(text)
    problems = [f"{lock_name}: {p}" for p in problems]
    by_name: dict[str, list[Pin]] = {}
    for pin in pins:
        by_name.setdefault(pin.name, []).append(pin)
    problems += [f"{lock_name}: {p}" for p in _pins_well_formed(pins, by_name, hashed)]
    problems += [f"{lock_name}: {p}" for p in _roots_pinned(roots, by_name)]
    problems += [f"{lock_name}: {p}" for p in _nothing_left_over(pins, by_name, roots)]
    return problems


def _pins_well_formed(pins: list[Pin], by_name: dict[str, list[Pin]],
                      hashed: bool) -> Iterator[str]:
    for pin in pins:
        try:
            Version(pin.version)
        except InvalidVersion:
            yield f"{pin.name}=={pin.version} (line {pin.line}): not a version"
        if hashed and pin.hashes == 0:
            yield f"{pin.name}=={pin.version} (line {pin.line}): no --hash, so " \
                  "pip install --require-hashes refuses the lock"
    for name, same in by_name.items():
        # A universal lock may pin one package twice, each for its own platforms (markers).
        if len(same) > 1 and any(p.marker is None for p in same):
            yield f"{name} is pinned {len(same)} times (lines " \
                  f"{', '.join(str(p.line) for p in same)}) without a marker to tell them apart"


def _roots_pinned(roots: Roots, by_name: dict[str, list[Pin]]) -> Iterator[str]:
    for origin, reqs in (("project", roots.runtime), ("build-system.requires", roots.build)):
        for req in reqs:
            name = canonicalize_name(req.name)
            if name not in by_name:
                yield f"{req} ({origin} in pyproject.toml) is not in the lock; run scripts/lock.sh"
                continue
            for pin in by_name[name]:
                if not req.specifier.contains(pin.version, prereleases=True):
                    yield (f"{pin.name}=={pin.version} is outside pyproject.toml's range "
                           f"{req} ({origin}); run scripts/lock.sh")


def _nothing_left_over(pins: list[Pin], by_name: dict[str, list[Pin]],
                       roots: Roots) -> Iterator[str]:
    runtime = {canonicalize_name(r.name) for r in roots.runtime}
    build = {canonicalize_name(r.name) for r in roots.build}
    reached = {p.name for p in pins if p.name in runtime or p.name in build}
    for pin in pins:
        for via in pin.via:
            m = PROJECT_VIA.match(via)
            if m and canonicalize_name(m["name"]) == roots.project and pin.name not in runtime:
                yield (f"{pin.name}=={pin.version} says it comes from pyproject.toml, which no "
                       "longer asks for it; run scripts/lock.sh")
            if via == BUILD_VIA and pin.name not in build:
                yield (f"{pin.name}=={pin.version} says it comes from build-system.requires, "
                       "which no longer asks for it; run scripts/lock.sh")
    # What the rest is there for, by the lock's own account: reached from a root through "via".
    changed = True
    while changed:
        changed = False
        for pin in pins:
            if pin.name not in reached and any(canonicalize_name(v) in reached
                                               for v in pin.via if v in by_name
                                               or canonicalize_name(v) in by_name):
                reached.add(pin.name)
                changed = True
    for pin in pins:
        if pin.name not in reached:
            yield (f"{pin.name}=={pin.version} is left over: nothing in pyproject.toml leads to "
                   "it; run scripts/lock.sh")


def check_installed(lock_name: str, text: str, roots: Roots,
                    site: list[str] | None) -> list[str]:
    """Walk the installed distributions' own requirements from the roots, on this platform."""
    pins, _ = parse_lock(text)
    env: dict[str, str] = {k: str(v) for k, v in markers.default_environment().items()}
    applies = {p.name: p for p in pins if p.marker is None or Marker(p.marker).evaluate(env)}
    found = metadata.distributions(path=site) if site else metadata.distributions()
    dists = {canonicalize_name(d.metadata["Name"]): d for d in found}
    problems: list[str] = []
    # The build backend is installed into pip's build environment, not here: its pins count as
    # reached, and their presence and range are check_text's.
    done: set[tuple[str, frozenset[str]]] = {
        (canonicalize_name(r.name), frozenset()) for r in roots.build}
    todo: list[tuple[Requirement, frozenset[str], str]] = [
        (r, frozenset(), "pyproject.toml") for r in roots.runtime]
    while todo:
        req, extras, wanted_by = todo.pop()
        if req.marker is not None and not any(
                req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})):
            continue
        name = canonicalize_name(req.name)
        pin = applies.get(name)
        if pin is None:
            problems.append(f"{lock_name}: {req} (wanted by {wanted_by}) has no pin for "
                            "this platform; run scripts/lock.sh")
            continue
        if not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{lock_name}: {name}=={pin.version} does not satisfy {req} "
                            f"(wanted by {wanted_by}); run scripts/lock.sh")
        key = (name, frozenset(req.extras))
        if key not in done:
            done.add(key)
            problems += _follow(lock_name, pin, dists.get(name), key[1], todo)
    reached = {name for name, _ in done}
    problems += [f"{lock_name}: {p.name}=={p.version} is left over: nothing installed from "
                 "pyproject.toml requires it here; run scripts/lock.sh"
                 for p in applies.values() if p.name not in reached]
    return problems


def _follow(lock_name: str, pin: Pin, dist: metadata.Distribution | None,
            extras: frozenset[str],
            todo: list[tuple[Requirement, frozenset[str], str]]) -> list[str]:
    if dist is None:
        return [f"{lock_name}: {pin.name}=={pin.version} is pinned for this platform but "
                "not installed (install with pip install --require-hashes --no-deps -r LOCK)"]
    if dist.version != pin.version and Version(dist.version) != Version(pin.version):
        return [f"{lock_name}: {pin.name} is installed at {dist.version}, the lock pins "
                f"{pin.version}"]
    problems = []
    for spec in dist.requires or []:
        try:
            todo.append((Requirement(spec), extras, f"{pin.name}=={pin.version}"))
        except InvalidRequirement:
            problems.append(f"{lock_name}: {pin.name}'s metadata has a requirement pip "
                            f"cannot read: {spec!r}")
    return problems


# The locks this project keeps: which extras each covers, and whether pins carry hashes. The
# runtime lock is installed with --require-hashes; the development lock is a pip constraints
# file (PIP_CONSTRAINT), and pip refuses hashes there for an editable install.
LOCKS = (("requirements.lock", (), True), ("requirements-dev.lock", ("dev",), False))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lock", help="one lock to check (default: the project's locks)")
    ap.add_argument("--extra", action="append", default=[],
                    help="an extra of pyproject.toml the lock covers (with --lock)")
    ap.add_argument("--no-hashes", action="store_true",
                    help="the lock is a constraints file without hashes (with --lock)")
    ap.add_argument("--pyproject", default=str(ROOT / "pyproject.toml"))
    ap.add_argument("--installed", action="store_true",
                    help="also check against the distributions installed here")
    ap.add_argument("--site", action="append",
                    help="look for installed distributions in DIR (with --installed)")
    args = ap.parse_args(argv)
    locks = ([(args.lock, tuple(args.extra), not args.no_hashes)] if args.lock
             else [(str(ROOT / n), x, h) for n, x, h in LOCKS])
    problems: list[str] = []
    for lock, extras, hashed in locks:
        roots = read_roots(Path(args.pyproject), extras)
        name = Path(lock).name
        try:
            text = Path(lock).read_text(encoding="utf-8")
        except OSError as e:
            problems.append(f"{name}: cannot be read ({e.strerror}); run scripts/lock.sh")
            continue
        problems += check_text(name, text, roots, hashed)
        if args.installed:
            problems += check_installed(name, text, roots, args.site)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print(f"consistent with pyproject.toml: {', '.join(Path(lock).name for lock, _, _ in locks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
