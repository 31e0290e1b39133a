#!/usr/bin/env bash
# Remove queue-pump's systemd service, as installed by scripts/install-systemd.sh.
#
#   sudo scripts/uninstall-systemd.sh           stop, disable, remove the unit and /opt/queue-pump;
#                                               keeps /etc/queue-pump/queue-pump.env (your settings)
#   sudo scripts/uninstall-systemd.sh --purge   the same, and the env file too
#
# The stop is the unit's own: SIGTERM, calls in flight get the pump's grace (30 s) to finish.
set -euo pipefail

PREFIX=/opt/queue-pump
ETC_DIR=/etc/queue-pump
UNIT=queue-pump.service
UNIT_DST=/etc/systemd/system/$UNIT

say() { echo "uninstall-systemd: $*"; }
die() { echo "uninstall-systemd: error: $*" >&2; exit 1; }

purge=0
for arg in "$@"; do
  case "$arg" in
    --purge) purge=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) die "unknown argument '$arg' (usage: $0 [--purge])" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "must run as root (sudo $0)"
command -v systemctl >/dev/null 2>&1 || die "systemctl not found: nothing to uninstall from"

if systemctl is-active --quiet "$UNIT"; then
  systemctl stop "$UNIT" || die "systemctl stop $UNIT failed: journalctl -u $UNIT -n 50"
  say "stopped $UNIT"
fi
if systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then
  systemctl disable --quiet "$UNIT"
  say "disabled $UNIT"
fi
if [ -e "$UNIT_DST" ] || [ -d "$UNIT_DST.d" ]; then
  rm -rf "$UNIT_DST" "$UNIT_DST.d"
  say "removed $UNIT_DST"
fi
systemctl daemon-reload
systemctl reset-failed "$UNIT" 2>/dev/null || true
if [ -e "$PREFIX" ]; then
  rm -rf "$PREFIX"
  say "removed $PREFIX"
fi
if [ "$purge" = 1 ]; then
  rm -rf "$ETC_DIR"
  say "removed $ETC_DIR (settings and token)"
elif [ -e "$ETC_DIR" ]; then
  say "kept $ETC_DIR/queue-pump.env (settings and token); --purge removes it"
fi
say "queue-pump is uninstalled"
