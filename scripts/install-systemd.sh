#!/usr/bin/env bash
# Install (or upgrade) queue-pump as a systemd service from this checkout. Idempotent: run it
# again after a `git pull` to upgrade; it never touches an existing env file's contents.
#
#   sudo scripts/install-systemd.sh              install, enable, start (if the env file is complete)
#   sudo scripts/install-systemd.sh --no-start   install and enable only
#
# What it does:
#   /opt/queue-pump/venv                    virtualenv: requirements.lock (hash-checked), then this project
#   /etc/systemd/system/queue-pump.service  from scripts/systemd/queue-pump.service
#   /etc/queue-pump/queue-pump.env          settings incl. AGENT_TOKEN: created once (mode 600,
#                                           root) from .env.example, never overwritten
# then daemon-reload, enable, and start (restart when already running, to pick up new code).
set -euo pipefail

PREFIX=/opt/queue-pump            # the unit's ExecStart names $PREFIX/venv/bin/queue-pump
ETC_DIR=/etc/queue-pump
ENV_FILE=$ETC_DIR/queue-pump.env
UNIT=queue-pump.service
UNIT_DST=/etc/systemd/system/$UNIT
PYTHON=${PYTHON:-python3}

say() { echo "install-systemd: $*"; }
die() { echo "install-systemd: error: $*" >&2; exit 1; }

start=1
for arg in "$@"; do
  case "$arg" in
    --no-start) start=0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown argument '$arg' (usage: $0 [--no-start])" ;;
  esac
done

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -f "$src/pyproject.toml" ] || [ ! -f "$src/requirements.lock" ]; then
  die "run this from a queue-pump checkout ($src has no pyproject.toml/requirements.lock)"
fi
[ "$(id -u)" = 0 ] || die "must run as root (sudo $0)"
command -v systemctl >/dev/null 2>&1 || die "systemctl not found: this installer needs systemd"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (Debian/Ubuntu: apt-get install python3 python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "queue-pump needs Python 3.11 or newer ($PYTHON is $("$PYTHON" -V 2>&1))"
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
  || die "the venv module is missing (Debian/Ubuntu: apt-get install python3-venv)"

umask 022
venv=$PREFIX/venv
lock_sum=$(sha256sum "$src/requirements.lock" | cut -d' ' -f1)

# 1. The virtualenv, rebuilt from scratch when the lock changed (so removed packages go too).
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements.lock.sha256" 2>/dev/null)" = "$lock_sum" ]; then
  say "venv $venv already matches requirements.lock"
else
  say "creating $venv from requirements.lock"
  rm -rf "$venv"
  mkdir -p "$PREFIX"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
    --require-hashes --no-deps --only-binary=:all: -r "$src/requirements.lock"
  echo "$lock_sum" > "$venv/.requirements.lock.sha256"
fi

# 2. The project itself, built from a clean copy of the sources (the checkout stays untouched,
# may be read-only) with the locked setuptools: nothing is downloaded here.
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cp "$src/pyproject.toml" "$build/"
cp -r "$src/queue_pump" "$build/"
[ -f "$src/README.md" ] && cp "$src/README.md" "$build/"
find "$build" -name __pycache__ -prune -exec rm -rf {} +
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
  --no-deps --no-build-isolation --no-index --force-reinstall "$build"
say "installed $("$venv/bin/queue-pump" --version)"

# 3. The env file: created once, never overwritten, root-only (it holds AGENT_TOKEN).
install -d -m 0755 "$ETC_DIR"
example=$build/env.example
if [ -f "$src/.env.example" ]; then
  cp "$src/.env.example" "$example"
else
  "$venv/bin/queue-pump" config --env-example > "$example"
fi
if [ -e "$ENV_FILE" ]; then
  say "keeping existing $ENV_FILE"
  if [ -n "$(find "$ENV_FILE" -perm /077)" ]; then
    chmod go-rwx "$ENV_FILE"
    say "tightened $ENV_FILE to mode 600 (it holds a secret)"
  fi
else
  tmp_env=$(mktemp "$ETC_DIR/.queue-pump.env.XXXXXX")
  cat "$example" > "$tmp_env"
  chmod 0600 "$tmp_env"
  mv "$tmp_env" "$ENV_FILE"
  say "created $ENV_FILE (mode 600) from the example: fill in SUPABASE_URL, AGENT_TOKEN, ORGANIZATION_ID"
fi

# 4. The unit.
if cmp -s "$src/scripts/systemd/$UNIT" "$UNIT_DST"; then
  say "$UNIT_DST is up to date"
else
  install -m 0644 "$src/scripts/systemd/$UNIT" "$UNIT_DST"
  say "installed $UNIT_DST"
fi
systemctl daemon-reload
systemctl enable --quiet "$UNIT"
say "enabled $UNIT"

# 5. Start, unless the settings are incomplete (the pump would exit 2, and stay down).
if [ "$start" = 0 ]; then
  say "not starting (--no-start); later: systemctl start $UNIT"
  exit 0
fi
# The example's placeholders pass validation but point nowhere: wait for real values.
if cmp -s "$ENV_FILE" "$example"; then
  say "not starting: $ENV_FILE is still the example; fill it in, then: systemctl start $UNIT"
  exit 0
fi
# Check the env file alone (env -i: the caller's environment must not fill gaps). Only the
# problems are shown, one per line and without values; the settings themselves are not printed.
if ! env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$venv/bin/queue-pump" config \
    --env-file "$ENV_FILE" >/dev/null; then
  say "not starting: fix $ENV_FILE (problems above), then: systemctl start $UNIT"
  exit 0
fi
# Type=notify: start/restart return once the pump has said READY=1 (or failed).
if systemctl is-active --quiet "$UNIT"; then
  systemctl restart "$UNIT" || die "$UNIT failed to restart: journalctl -u $UNIT -n 50"
  say "restarted $UNIT (new code and settings in use)"
else
  systemctl start "$UNIT" || die "$UNIT failed to start: journalctl -u $UNIT -n 50"
  say "started $UNIT"
fi
say "status: systemctl status $UNIT    logs: journalctl -u $UNIT -f"
