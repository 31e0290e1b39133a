#!/usr/bin/env bash
# Install (or upgrade) queue-pump as a macOS LaunchAgent from this checkout, for the current user.
# Re-runnable: a second run upgrades the code and restarts the agent; the env file is kept.
#
#   scripts/install-launchd.sh               install or upgrade, then (re)start the agent
#   scripts/install-launchd.sh --rollback    switch back to the previous venv and restart
#   scripts/install-launchd.sh --uninstall   stop and remove the agent (keeps settings and logs)
#
# Where things go:
#   ~/Library/Application Support/queue-pump/venv            the pump (requirements.lock, hash-checked)
#   ~/Library/Application Support/queue-pump/queue-pump.env  settings incl. AGENT_TOKEN: created once,
#                                                            mode 600, from .env.example
#   ~/Library/LaunchAgents/org.queue-pump.agent.plist        from scripts/launchd/
#   ~/Library/Logs/queue-pump.log                            the pump's JSON log lines
#
# Upgrades build a new venv under venvs/ beside the running one, then switch the `venv` symlink
# (one rename); the previous venv stays, and `--rollback` switches back to it.
# Not run in this project's CI (no macOS there): the plist is parsed and this script shellchecked.
set -euo pipefail

LABEL=org.queue-pump.agent
SUPPORT="$HOME/Library/Application Support/queue-pump"
VENVS="$SUPPORT/venvs"
VENV="$SUPPORT/venv"              # a symlink to venvs/<version>-<time>; the plist runs venv/bin/queue-pump
ENV_FILE="$SUPPORT/queue-pump.env"
PLIST="$HOME/Library/LaunchAgents/$LABEL.plist"
LOG_DIR="$HOME/Library/Logs"
PYTHON=${PYTHON:-python3}
DOMAIN="gui/$(id -u)"

say() { echo "install-launchd: $*"; }
die() { echo "install-launchd: error: $*" >&2; exit 1; }

mode=install
for arg in "$@"; do
  case "$arg" in
    --uninstall) mode=uninstall ;;
    --rollback) mode=rollback ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) die "unknown argument '$arg' (usage: $0 [--uninstall | --rollback])" ;;
  esac
done

[ "$(uname -s)" = Darwin ] || die "this installs a macOS LaunchAgent; on Linux use scripts/install-systemd.sh"
[ "$(id -u)" != 0 ] || die "run as the user the pump should run as, not root (a LaunchAgent is per user)"
command -v launchctl >/dev/null 2>&1 || die "launchctl not found"

# relink TARGET LINK: point LINK at TARGET with one rename(2), so LINK is never missing.
relink() { ln -s "$1" "$2.tmp.$$" && "$PYTHON" -c 'import os, sys; os.replace(sys.argv[1], sys.argv[2])' "$2.tmp.$$" "$2"; }
stop_agent() {   # bootout waits for the pump to exit (SIGTERM, then SIGKILL after ExitTimeOut)
  if launchctl print "$DOMAIN/$LABEL" >/dev/null 2>&1; then
    launchctl bootout "$DOMAIN/$LABEL" || die "launchctl bootout $DOMAIN/$LABEL failed"
    say "stopped $LABEL"
  fi
}
start_agent() {
  launchctl bootstrap "$DOMAIN" "$PLIST" || die "launchctl bootstrap $DOMAIN $PLIST failed (see $LOG_DIR/queue-pump.log)"
  say "started $LABEL: launchctl print $DOMAIN/$LABEL; logs: tail -f '$LOG_DIR/queue-pump.log'"
}

if [ "$mode" = uninstall ]; then
  stop_agent
  rm -f "$PLIST"
  rm -rf "$VENV" "$VENV.previous" "$VENVS"
  say "removed the agent and its venvs; kept $ENV_FILE and $LOG_DIR/queue-pump.log (delete them by hand)"
  exit 0
fi

if [ "$mode" = rollback ]; then
  [ -x "$VENV.previous/bin/queue-pump" ] || die "no previous venv to roll back to ($VENV.previous)"
  cur=$(readlink "$VENV") prev=$(readlink "$VENV.previous")
  stop_agent
  relink "$prev" "$VENV"
  relink "$cur" "$VENV.previous"
  say "rolled back to $("$VENV/bin/queue-pump" --version) ($prev)"
  start_agent
  exit 0
fi

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -f "$src/pyproject.toml" ] || [ ! -f "$src/requirements.lock" ]; then
  die "run this from a queue-pump checkout ($src has no pyproject.toml/requirements.lock)"
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (install Python 3.11+, e.g. from python.org or Homebrew)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "queue-pump needs Python 3.11 or newer ($PYTHON is $("$PYTHON" -V 2>&1))"

mkdir -p "$SUPPORT" "$LOG_DIR" "$(dirname "$PLIST")"
chmod 700 "$SUPPORT"

# 1. A new venv beside the running one (never moved after creation: its scripts name its path);
# the running pump is untouched until the switch.
mkdir -p "$VENVS"
new="$VENVS/$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$src/pyproject.toml")-$(date +%Y%m%d%H%M%S)"
rm -rf "$new"
"$PYTHON" -m venv "$new"
"$new/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
  --require-hashes --no-deps --only-binary=:all: -r "$src/requirements.lock"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cp -R "$src/pyproject.toml" "$src/queue_pump" "$build/"
[ -f "$src/README.md" ] && cp "$src/README.md" "$build/"
"$new/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
  --no-deps --no-build-isolation --no-index "$build"
"$new/bin/queue-pump" --version >/dev/null || die "the new venv does not run; the installed one is unchanged"
say "built $("$new/bin/queue-pump" --version) in $new"

# 2. The env file: created once (mode 600: it holds AGENT_TOKEN), never overwritten.
if [ -e "$ENV_FILE" ]; then
  chmod 600 "$ENV_FILE"
  say "keeping existing $ENV_FILE"
else
  (umask 077; cp "$src/.env.example" "$ENV_FILE")
  say "created $ENV_FILE (mode 600): fill in SUPABASE_URL, AGENT_TOKEN, ORGANIZATION_ID, then run this again"
fi

# 3. The plist, with this user's home filled in.
tmp_plist=$(mktemp "$build/plist.XXXXXX")
sed "s|__HOME__|$HOME|g" "$src/scripts/launchd/$LABEL.plist" > "$tmp_plist"
plutil -lint "$tmp_plist" >/dev/null || die "the generated plist does not parse"

# 4. Switch: stop, venv.previous -> the running venv, venv -> the new one, start. Venvs older
# than those two are removed.
stop_agent
if [ -L "$VENV" ]; then relink "$(readlink "$VENV")" "$VENV.previous"; fi
relink "$new" "$VENV"
for d in "$VENVS"/*; do
  case "$d" in "$(readlink "$VENV")"|"$(readlink "$VENV.previous" 2>/dev/null)") ;; *) rm -rf "$d" ;; esac
done
install -m 0644 "$tmp_plist" "$PLIST"
if cmp -s "$ENV_FILE" "$src/.env.example"; then
  say "not starting: $ENV_FILE is still the example; fill it in and run this script again"
  exit 0
fi
if ! env -i PATH=/usr/bin:/bin "$VENV/bin/queue-pump" config --env-file "$ENV_FILE" >/dev/null; then
  say "not starting: fix $ENV_FILE (problems above), then run this script again"
  exit 0
fi
start_agent
