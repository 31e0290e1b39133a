#!/usr/bin/env bash
# Regenerate requirements.lock from pyproject.toml: every runtime dependency plus the build
# backend (build-system.requires), pinned to one version each, with the sha256 of every
# distribution PyPI serves for it, resolved for Python 3.11+ on any platform.
#
#   scripts/lock.sh            rewrite requirements.lock
#   scripts/lock.sh --check    exit 1 if requirements.lock does not match pyproject.toml's ranges
#
# Install with:  pip install --require-hashes --no-deps -r requirements.lock
# uv is used from PATH if present, otherwise installed (pinned) into a throwaway venv.
set -euo pipefail

UV_VERSION=0.13.9
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: scripts/lock.sh [--check]" >&2; exit 2 ;;
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

# The build backend goes in the lock too, so that building the project itself
# (pip install --no-build-isolation) uses a pinned, hashed setuptools.
python3 - "$tmp/build-requirements.in" <<'PY'
import sys, tomllib
with open("pyproject.toml", "rb") as f:
    requires = tomllib.load(f)["build-system"]["requires"]
with open(sys.argv[1], "w") as out:
    out.write("\n".join(requires) + "\n")
PY

out=requirements.lock
[ "$check" = 1 ] && out="$tmp/requirements.lock"

# Timeouts keep a stuck index from hanging CI; SSL_CERT_FILE lets uv trust the system bundle.
export UV_HTTP_TIMEOUT="${UV_HTTP_TIMEOUT:-60}"
"$uv" pip compile pyproject.toml "$tmp/build-requirements.in" \
  --universal --python-version 3.11 --generate-hashes \
  --no-emit-find-links --quiet \
  --custom-compile-command "scripts/lock.sh" \
  --output-file "$out"
# The temporary input's path would differ per run: name it by what it is.
sed -i "s|$tmp/build-requirements.in|build-system.requires (pyproject.toml)|" "$out"

if [ "$check" = 1 ]; then
  # Same pins as the committed lock (hash lists may grow when a project uploads more wheels)?
  pins() { grep -E '^[A-Za-z0-9_.-]+==' "$1" | sed 's/ .*//' | sort; }
  if diff <(pins requirements.lock) <(pins "$out") >/dev/null; then
    echo "requirements.lock: up to date"
  else
    echo "requirements.lock: stale, run scripts/lock.sh" >&2
    diff <(pins requirements.lock) <(pins "$out") >&2 || true
    exit 1
  fi
else
  echo "wrote $out ($(grep -cE '^[A-Za-z0-9_.-]+==' "$out") packages)"
fi
