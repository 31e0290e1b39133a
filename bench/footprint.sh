#!/usr/bin/env bash
# Memory footprint of one pump, for the Kubernetes requests/limits (deploy/kubernetes/base):
# the real pump (default transport, health endpoint on) against the reference runner on
# loopback; VmRSS read from /proc/<pid>/status.
#
#   bash bench/footprint.sh [PY]       PY: a python with queue-pump installed (default .venv)
#
# Prints: idle RSS after IDLE_S seconds, then the highest VmRSS sampled (every 0.2 s) and the
# kernel's high-water mark (VmHWM), and the pump's CPU seconds (utime+stime), while CONCURRENCY loops drain JOBS jobs of JOB_MS each.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
QP=${PY%/python}/queue-pump
IDLE_S=${IDLE_S:-10} JOBS=${JOBS:-2000} JOB_MS=${JOB_MS:-20} CONCURRENCY=${CONCURRENCY:-8}
tmp=$(mktemp -d)
AGENT_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
export AGENT_TOKEN ORGANIZATION_ID=footprint
pids=()
cleanup() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$QP" runner --port "$port" --db "$tmp/jobs.sqlite3" >"$tmp/runner.log" 2>&1 &
pids+=($!)
url=http://127.0.0.1:$port
for _ in $(seq 1 50); do python3 scripts/ci/jobs.py "$url" stats >/dev/null 2>&1 && break; sleep 0.2; done
SUPABASE_URL=$url QUEUE_PUMP_CONCURRENCY=$CONCURRENCY QUEUE_PUMP_IDLE_SLEEP_MS=1000 \
  QUEUE_PUMP_HEALTH_PORT=0 "$QP" run >"$tmp/pump.log" 2>&1 &
pump=$!
pids+=("$pump")
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$pump/stat"; }
kb() { sed -n "s/^$1:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$pump/status"; }
sleep "$IDLE_S"
echo "idle after ${IDLE_S}s: VmRSS $(kb VmRSS) kB, CPU so far $(cpu_s) s"
c0=$(cpu_s)
python3 scripts/ci/jobs.py "$url" enqueue "$JOBS" --duration-ms "$JOB_MS" >/dev/null
peak=0
t0=$SECONDS
while :; do
  r=$(kb VmRSS); [ "$r" -gt "$peak" ] && peak=$r
  python3 scripts/ci/jobs.py "$url" stats | grep -q " done=$JOBS " && break
  [ $((SECONDS - t0)) -lt 300 ] || { echo "jobs did not drain in 300 s" >&2; exit 1; }
  sleep 0.2
done
echo "load: $JOBS jobs x ${JOB_MS} ms, concurrency $CONCURRENCY, drained in $((SECONDS - t0)) s:" \
  "peak VmRSS sampled $peak kB, VmHWM $(kb VmHWM) kB, CPU $(awk -v a="$c0" -v b="$(cpu_s)" 'BEGIN { printf "%.2f", b - a }') s"
