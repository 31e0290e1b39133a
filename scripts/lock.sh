#!/usr/bin/env bash
# The project's two locks, both made from pyproject.toml by uv (resolved for Python 3.11+ on any
# platform, one version per package):
#   requirements.lock      the runtime dependencies and the build backend (build-system.requires),
#                          with the sha256 of every distribution PyPI serves for each pin. Images,
#                          systemd and deploy installs use it:
#                            pip install --require-hashes --no-deps -r requirements.lock
#   requirements-dev.lock  the same pins plus the dev extra, as a pip constraints file (no hashes:
#                          pip refuses them beside an editable install). CI installs with it:
#                            PIP_CONSTRAINT=requirements-dev.lock pip install -e '.[dev]'
#
#   scripts/lock.sh            bring the locks in line with pyproject.toml, keeping every pin
#                              that still fits (what to run after editing dependencies)
#   scripts/lock.sh --upgrade  re-resolve everything to the newest releases (the scheduled
#                              re-lock job runs this and proposes the result as a pull request)
#   scripts/ci/tools.lock  the tools scripts/ci/deploy-checks.sh runs (scripts/ci/tools.in), with
#                          hashes
#
#   scripts/lock.sh --check    are the locks consistent with pyproject.toml? Offline, and never
#                              fails because something newer was released (scripts/lock_check.py)
#
# uv is used from PATH if present, otherwise installed (pinned) into a throwaway venv.
set -euo pipefail

UV_VERSION=0.13.9
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

upgrade=()
case "${1:-}" in
  --check) exec python3 scripts/lock_check.py ;;
  --upgrade) upgrade=(--upgrade) ;;
  "") ;;
  *) echo "usage: scripts/lock.sh [--upgrade | --check]" >&2; exit 2 ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if command -v uv >/dev/null 2>&1; then
  uv=uv
else
  python3 -m venv "$tmp/uv-venv"
  "$tmp/uv-venv/bin/pip" install --quiet "uv==$UV_VERSION"
  uv="$tmp/uv-venv/bin/uv"
fi

# The build backend goes in the locks too: building the project itself (pip install
# --no-build-isolation, or pip's isolated build under PIP_CONSTRAINT) uses the pinned setuptools.
python3 - "$tmp/build-requirements.in" <<'PY'
import sys, tomllib
with open("pyproject.toml", "rb") as f:
    requires = tomllib.load(f)["build-system"]["requires"]
with open(sys.argv[1], "w") as out:
    out.write("\n".join(requires) + "\n")
PY

# Timeouts keep a stuck index from hanging; uv prefers the pins already in the output file, so
# without --upgrade only what pyproject.toml no longer allows moves.
export UV_HTTP_TIMEOUT="${UV_HTTP_TIMEOUT:-60}"
compile() {   # compile OUTPUT EXTRA_ARGS...
  local out=$1; shift
  "$uv" pip compile pyproject.toml "$tmp/build-requirements.in" \
    --universal --python-version 3.11 --no-emit-find-links --quiet \
    --custom-compile-command "scripts/lock.sh" "${upgrade[@]}" "$@" --output-file "$out"
  # The temporary input's path would differ per run: name it by what it is.
  sed -i "s|$tmp/build-requirements.in|build-system.requires (pyproject.toml)|" "$out"
  echo "wrote $out ($(grep -cE '^[A-Za-z0-9_.-]+==' "$out") packages)"
}
compile requirements.lock --generate-hashes
# The dev lock takes the runtime lock's pins as given, so the two never disagree.
compile requirements-dev.lock --extra dev --constraint requirements.lock
# deploy-checks' own tools: installed with --require-hashes, which also refuses a missing dependency.
"$uv" pip compile scripts/ci/tools.in --universal --python-version 3.11 \
  --generate-hashes --no-emit-find-links --quiet --custom-compile-command "scripts/lock.sh" \
  "${upgrade[@]}" --output-file scripts/ci/tools.lock
echo "wrote scripts/ci/tools.lock ($(grep -cE '^[A-Za-z0-9_.-]+==' scripts/ci/tools.lock) packages)"
python3 scripts/lock_check.py
