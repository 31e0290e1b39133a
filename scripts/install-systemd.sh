#!/usr/bin/env bash
# Install (or upgrade) queue-pump as a systemd service from this checkout. Idempotent: run it
# again after a `git pull` to upgrade; it never touches an existing env file's contents.
#
#   sudo scripts/install-systemd.sh              install or upgrade, enable, start (if the env file is complete)
#   sudo scripts/install-systemd.sh --no-start   install and enable only
#   sudo scripts/install-systemd.sh --rollback   switch back to the previous venv and restart
#   (removal: scripts/uninstall-systemd.sh)
#
# What it does:
#   /opt/queue-pump/venvs/VERSION-HASH      one virtualenv per version of this checkout (HASH: of the
#                                           lock and the sources): requirements.lock (hash-checked),
#                                           then this project. Built beside the running one; a failed
#                                           build leaves the service as it was.
#   /opt/queue-pump/venv                    symlink to the venv in use, switched with one rename(2);
#   /opt/queue-pump/venv.previous           symlink to the one before (for --rollback); older
#                                           venvs are removed
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
rollback=0
for arg in "$@"; do
  case "$arg" in
    --no-start) start=0 ;;
    --rollback) rollback=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die "unknown argument '$arg' (usage: $0 [--no-start | --rollback])" ;;
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
venvs=$PREFIX/venvs

# relink TARGET LINK: LINK -> TARGET in one rename(2); the unit never sees LINK missing.
relink() { ln -sfn "$1" "$LINK_TMP" && mv -T "$LINK_TMP" "$2"; }
LINK_TMP=$PREFIX/.link.$$
restart_if_active() {
  if systemctl is-active --quiet "$UNIT"; then systemctl restart "$UNIT"; fi
}

if [ "$rollback" = 1 ]; then
  if [ ! -L "$venv.previous" ] || [ ! -x "$venv.previous/bin/queue-pump" ]; then
    die "no previous venv to roll back to ($venv.previous)"
  fi
  cur=$(readlink "$venv") prev=$(readlink "$venv.previous")
  relink "$prev" "$venv"
  relink "$cur" "$venv.previous"
  say "rolled back to $("$venv/bin/queue-pump" --version) ($prev); $cur kept as $venv.previous"
  restart_if_active || die "$UNIT failed to restart: journalctl -u $UNIT -n 50"
  exit 0
fi

mkdir -p "$venvs"
# An install before venvs/ existed left a real directory at $venv: it becomes venvs/legacy so it
# can be rolled back to. A venv's scripts name their own path, so those are pointed at the new one.
if [ -d "$venv" ] && [ ! -L "$venv" ]; then
  rm -rf "$venvs/legacy"
  mv "$venv" "$venvs/legacy"
  find "$venvs/legacy/bin" -maxdepth 1 -type f -exec sed -i "1s|^#!$venv/bin/|#!$venvs/legacy/bin/|" {} +
  relink "$venvs/legacy" "$venv"
  say "moved the venv of an earlier install to $venvs/legacy"
fi

# 1. The venv for this checkout: VERSION-HASH of the lock and the sources, so an unchanged
# checkout reuses the venv in use, and a changed one gets a new venv beside the running one.
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$src/pyproject.toml" | head -n1)
src_sum=$(cd "$src" && find pyproject.toml requirements.lock queue_pump -type f ! -path '*/__pycache__/*' \
  ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
new=$venvs/$version-$src_sum
build_failed() { rm -rf "$new"; die "$1; the service still runs the venv it had"; }
if [ -f "$new/.complete" ]; then
  say "venv $new already matches this checkout"
else
  say "building $new (requirements.lock, then this project)"
  rm -rf "$new"
  "$PYTHON" -m venv "$new"
  "$new/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
    --require-hashes --no-deps --only-binary=:all: -r "$src/requirements.lock" \
    || build_failed "installing requirements.lock into $new failed"
  # The project itself, built from a clean copy of the sources (the checkout stays untouched,
  # may be read-only) with the locked setuptools: nothing is downloaded here.
  pkg=$(mktemp -d)
  cp "$src/pyproject.toml" "$pkg/"
  cp -r "$src/queue_pump" "$pkg/"
  [ -f "$src/README.md" ] && cp "$src/README.md" "$pkg/"
  find "$pkg" -name __pycache__ -prune -exec rm -rf {} +
  "$new/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
    --no-deps --no-build-isolation --no-index "$pkg" \
    || build_failed "installing queue-pump into $new failed"
  rm -rf "$pkg"
  "$new/bin/queue-pump" --version >/dev/null || build_failed "$new does not run (queue-pump --version failed)"
  touch "$new/.complete"
fi
say "version: $("$new/bin/queue-pump" --version)"

# 2. Switch: venv.previous -> what ran so far, venv -> the new one (each one rename). On exit,
# whatever happened, only the venvs those two name are kept.
switched=0
prev_before=$(readlink "$venv.previous" 2>/dev/null || true)
if [ "$(readlink "$venv" 2>/dev/null)" != "$new" ]; then
  if [ -L "$venv" ]; then relink "$(readlink "$venv")" "$venv.previous"; fi
  relink "$new" "$venv"
  switched=1
  say "switched $venv -> $new"
fi
prune_venvs() {
  local d keep1 keep2
  keep1=$(readlink "$venv" 2>/dev/null || true) keep2=$(readlink "$venv.previous" 2>/dev/null || true)
  for d in "$venvs"/*; do
    [ -e "$d" ] || continue
    case "$d" in "$keep1"|"$keep2") ;; *) rm -rf "$d"; say "removed old $d" ;; esac
  done
}
# Back to the venv that ran before this install (and its .previous), after a failed restart.
switch_back() {
  relink "$(readlink "$venv.previous")" "$venv"
  if [ -n "$prev_before" ] && [ -e "$prev_before" ]; then relink "$prev_before" "$venv.previous"; fi
}

build=$(mktemp -d)
trap 'prune_venvs; rm -rf "$build" "$LINK_TMP"' EXIT

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
  if ! systemctl restart "$UNIT"; then
    if [ "$switched" = 1 ] && [ -L "$venv.previous" ]; then
      switch_back
      systemctl restart "$UNIT" || true
      die "$UNIT failed to restart on the new venv; switched back to $(readlink "$venv"): journalctl -u $UNIT -n 50"
    fi
    die "$UNIT failed to restart: journalctl -u $UNIT -n 50"
  fi
  say "restarted $UNIT (new code and settings in use)"
else
  systemctl start "$UNIT" || die "$UNIT failed to start: journalctl -u $UNIT -n 50"
  say "started $UNIT"
fi
say "status: systemctl status $UNIT    logs: journalctl -u $UNIT -f"
