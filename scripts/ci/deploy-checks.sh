#!/usr/bin/env bash
# Deployment checks for queue-pump: every deployment artifact checked with the real tool, then
# run for real: the image under a Docker engine with Compose, the unit under a real systemd.
#
#   bash scripts/ci/deploy-checks.sh            everything (Debian 12, as root: installs what it needs)
#   bash scripts/ci/deploy-checks.sh --static   only the lint/validation checks (no engine, no containers)
#
# One "PASS|FAIL  <check>  <seconds>" line per check (the log of a failed check follows it),
# then "deploy-checks: N passed, M failed"; exit 1 if any check failed.
# Tools are pinned below. Caches (Docker data root, podman images, tools venv) stay on the
# machine so a second run skips the slow steps; nothing is left running.
# No secret is used: the runner token is random per run, kept in mode-600 files, never printed.
set -uo pipefail

# ---- pinned tools ---------------------------------------------------------------------------
# Debian 12 packages. If the archive has moved past a pin (a point release), the current
# version is installed with a WARN line rather than failing the run.
DEB_PINS=(
  "docker.io=20.10.24+dfsg1-1+deb12u1+b6"
  "mmdebstrap=1.3.5-7"
  "shellcheck=0.9.0-1"
  "podman=4.3.1+ds1-8+deb12u1+b3"
  "runc=1.1.5+ds1-1+deb12u1"
)
# Python tools: scripts/ci/tools.in, compiled by scripts/lock.sh into scripts/ci/tools.lock (what
# they pull in pinned too, with hashes).
# npm tools: each a package.json with a committed package-lock.json under scripts/ci/npm/, so the
# packages they pull in are pinned too (with their integrity hashes), installed by `npm ci`:
#   ps-syntax  a tree-sitter PowerShell grammar (pwsh is not installable here)
#   k8s        Kubernetes and KEDA JSON schemas (offline) and a YAML parser for the rendered objects
PG_PIN="postgresql-15=15.18-0+deb12u1"   # a real PostgreSQL for the KEDA query check
SUITE=bookworm
PUMP_GRACE_S=30            # QUEUE_PUMP_SHUTDOWN_GRACE_MS default
COMPOSE_STOP_GRACE_S=40    # stop_grace_period in docker-compose.queue-pump.yml
LONG_JOB_MS=4000           # a job in flight while stopping

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
STATIC_ONLY=0
case "${1:-}" in
  --static) STATIC_ONLY=1 ;;
  "") ;;
  *) echo "usage: bash scripts/ci/deploy-checks.sh [--static]" >&2; exit 2 ;;
esac

CACHE=${DEPLOY_CHECKS_CACHE:-/var/cache/queue-pump-deploy-checks}
TMP=$(mktemp -d /tmp/deploy-checks.XXXXXX)
STATE=$TMP/state
mkdir -p "$CACHE" "$STATE"
chmod 700 "$TMP"
TOOLS=$CACHE/tools-venv
DOCKER_SOCK=/run/queue-pump-ci-docker.sock
DOCKER_ROOT=/var/lib/queue-pump-ci-docker
export DOCKER_HOST=unix://$DOCKER_SOCK
export DOCKER_CONFIG=$TMP/docker-config          # the compose plugin link lives here, not in ~
export CONTAINERS_CONF=$TMP/containers.conf
export DOCKER_BUILDKIT=0                         # the classic builder: no buildx plugin needed
export COMPOSE_DOCKER_CLI_BUILD=0
PODMAN_IMAGE=localhost/queue-pump-ci-systemd:$SUITE
PODMAN_CTR=queue-pump-ci-systemd
COMPOSE_PROJECT=queue-pump-ci
ORG=ci-org

exec 3>&1                      # fd 3: lines a check wants shown even when it passes
note() { echo "      $*" >&3; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

PASSED=0
FAILED=0
FAILED_NAMES=()
T_START=$(now)

# check NAME FUNCTION: run FUNCTION in a subshell with `set -e`, its output to a log shown
# only on failure; state for later checks goes through files in $STATE.
check() {
  local name=$1 fn=$2 log t0 rc
  log=$TMP/log.$((PASSED + FAILED + 1))
  t0=$(now)
  (set -e; "$fn") >"$log" 2>&1
  rc=$?
  if [ "$rc" = 0 ]; then
    PASSED=$((PASSED + 1))
    printf 'PASS  %-52s %6ss\n' "$name" "$(secs "$t0" "$(now)")"
  else
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$name")
    printf 'FAIL  %-52s %6ss\n' "$name" "$(secs "$t0" "$(now)")"
    tail -n 40 "$log" | sed 's/^/    | /'
  fi
  return 0
}
ok() { [ -e "$STATE/$1" ]; }
need() { for s in "$@"; do ok "$s" || { echo "skipped: an earlier check ($s) failed"; return 1; }; done; }

docker() { /usr/bin/docker "$@"; }   # Debian's CLI, matched to Debian's engine
# The runbook's compose command, plus the CI override and a project name of its own.
DC=(/usr/bin/docker compose -p "$COMPOSE_PROJECT" -f docker-compose.queue-pump.yml
    -f scripts/ci/compose.ci.yml)
dc() { "${DC[@]}" "$@"; }
# The shipped file unchanged (bridge network, its healthcheck and restart policy), plus a
# test-only file that only adds the reference runner as a second service.
# Only the env file is the test's (and, for the added runner service, its image and data
# directory); the pump's image is the file's default, queue-pump:<version>.
SHIPPED=(env WORKER_ENV_FILE="$TMP/shipped.env" RUNNER_IMAGE=queue-pump:ci RUNNER_DATA="$TMP/runner-data"
         /usr/bin/docker compose -p queue-pump-shipped -f docker-compose.queue-pump.yml
         -f scripts/ci/compose.shipped.yml)
VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n1)
pexec() { podman exec "$PODMAN_CTR" "$@"; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
jobs_py() { AGENT_TOKEN=$TOKEN ORGANIZATION_ID=$ORG "$PY" scripts/ci/jobs.py "$RUNNER_URL" "$@"; }

cleanup() {
  local pid
  if [ -e "$STATE/compose-up" ]; then
    timeout 90 "${DC[@]}" down --timeout 45 >/dev/null 2>&1 || true
  fi
  if [ -e "$STATE/shipped-up" ]; then
    timeout 120 "${SHIPPED[@]}" down --timeout 45 >/dev/null 2>&1 || true
  fi
  if [ -e "$STATE/podman-run" ]; then
    timeout 60 podman rm -f -t 45 "$PODMAN_CTR" >/dev/null 2>&1 || true
  fi
  for f in logs.pid events.pid shipped-logs.pid shipped-events.pid check-runner.pid runner.pid dockerd.pid; do
    [ -f "$STATE/$f" ] || continue
    pid=$(cat "$STATE/$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- setup -------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {   # apt_install PKG=VER...: installs what is not already at the pinned version
  local spec pkg want=() plain=()
  for spec in "$@"; do
    pkg=${spec%%=*}
    [ "$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null)" = "${spec#*=}" ] && continue
    want+=("$spec"); plain+=("$pkg")
  done
  [ "${#want[@]}" = 0 ] && return 0
  if [ "$APT_UPDATED" = 0 ]; then timeout 300 apt-get update -qq; APT_UPDATED=1; fi
  if ! DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${want[@]}"; then
    note "WARN: pinned version(s) not in the archive any more, installing current: ${plain[*]}"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${plain[@]}"
  fi
}

setup_tools() {
  [ "$(id -u)" = 0 ] || { echo "run as root (apt-get, dockerd, podman)"; exit 1; }
  local debs=("shellcheck=0.9.0-1")
  [ "$STATIC_ONLY" = 1 ] || debs=("${DEB_PINS[@]}")
  apt_install "${debs[@]}"
  command -v systemd-analyze >/dev/null || DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq systemd
  local sum
  sum=$(sha256sum < scripts/ci/tools.lock)
  if [ "$(cat "$TOOLS/.pins" 2>/dev/null)" != "$sum" ]; then
    rm -rf "$TOOLS"
    python3 -m venv "$TOOLS"
    timeout 600 "$TOOLS/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
      --only-binary=:all: -r scripts/ci/tools.lock
    echo "$sum" > "$TOOLS/.pins"
  fi
  mkdir -p "$DOCKER_CONFIG/cli-plugins"
  echo '{}' > "$DOCKER_CONFIG/config.json"     # podman reads DOCKER_CONFIG too
  ln -sf "$TOOLS/bin/docker-compose" "$DOCKER_CONFIG/cli-plugins/docker-compose"
  note "shellcheck $(shellcheck --version | sed -n 's/^version: //p'), $("$TOOLS/bin/hadolint" --version)," \
    "compose $("$TOOLS/bin/docker-compose" version --short), $("$TOOLS/bin/uv" --version)," \
    "systemd $(systemd-analyze --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p')"
  touch "$STATE/tools"
}

# The pump itself on the host (reference runner, jobs helper): the project's .venv when it is
# there, else a venv built from the lock.
setup_host_venv() {
  if [ -x "$ROOT/.venv/bin/queue-pump" ] && "$ROOT/.venv/bin/queue-pump" runner --help >/dev/null 2>&1; then
    echo "$ROOT/.venv" > "$STATE/venv"
  else
    local v=$TMP/venv src=$TMP/src
    python3 -m venv "$v"
    timeout 600 "$v/bin/pip" install --quiet --require-hashes --no-deps --only-binary=:all: -r requirements.lock
    mkdir -p "$src"; cp -r pyproject.toml queue_pump "$src/"; [ -f README.md ] && cp README.md "$src/"
    "$v/bin/pip" install --quiet --no-deps --no-build-isolation --no-index "$src"
    timeout 300 "$v/bin/pip" install --quiet -c requirements-dev.lock pytest     # for tests/deploy
    echo "$v" > "$STATE/venv"
  fi
  note "pump for the host side: $(cat "$STATE/venv")/bin/queue-pump"
  touch "$STATE/host-venv"
}

# ---- static checks ---------------------------------------------------------------------------
# Consistent with pyproject.toml, never "the newest": an upstream release cannot fail this
# (the scheduled re-lock workflow proposes those). Then the lock as deployments use it: every file
# by its hash, wheels only, and the installed distributions' own metadata walked from pyproject.
check_lock() {
  need tools
  scripts/lock.sh --check
  local v=$TMP/lock-venv
  python3 -m venv "$v"
  timeout 600 "$v/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
    --no-deps --only-binary=:all: -r requirements.lock
  "$v/bin/python" scripts/lock_check.py --installed --lock requirements.lock
  "$v/bin/pip" check --disable-pip-version-check
}

check_compose_config() {
  need tools
  local env=$TMP/empty.env
  : > "$env"
  WORKER_ENV_FILE=$env docker_compose_cli config -q
  # The properties that matter, read from Compose's own normalised model (values not printed).
  WORKER_ENV_FILE=$env docker_compose_cli config --format json > "$TMP/compose.json"
  WORKER_ENV_FILE=$env docker_compose_cli config --no-interpolate --format json > "$TMP/compose-raw.json"
  python3 - "$TMP/compose.json" "$PUMP_GRACE_S" "$ROOT" "$TMP/compose-raw.json" <<'PY'
import json, re, sys, tomllib
version = tomllib.load(open("pyproject.toml", "rb"))["project"]["version"]
cfg = json.load(open(sys.argv[1]))
grace = int(sys.argv[2])
svc = cfg["services"]["queue-pump"]
def seconds(v):
    if isinstance(v, (int, float)):
        return v / 1e9 if v > 1e6 else v    # Compose may give nanoseconds
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", v)
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)
problems = []
def want(cond, what):
    if not cond:
        problems.append(what)
want(svc.get("image") == f"queue-pump:{version}", f"image defaults to queue-pump:{version} (pyproject.toml's version)")
want(svc.get("build", {}).get("context", "").rstrip("/") == sys.argv[3], "build context .")
want(svc.get("restart") == "unless-stopped", "restart: unless-stopped")
want(svc.get("read_only") is True, "read_only: true")
want("ALL" in svc.get("cap_drop", []), "cap_drop: [ALL]")
want(any(o.replace("=", ":") == "no-new-privileges:true" for o in svc.get("security_opt", [])),
     "security_opt no-new-privileges")
want(not svc.get("ports"), "no published ports")
want(svc.get("stop_signal") == "SIGTERM", "stop_signal: SIGTERM")
want(seconds(svc.get("stop_grace_period", 0)) > grace, f"stop_grace_period > {grace}s")
hc = svc.get("healthcheck", {})
want(hc.get("test", [])[1:] == ["queue-pump", "healthcheck"], "healthcheck runs queue-pump healthcheck")
# A bad configuration (exit 2) restart-loops slowly and says so; a good one execs the pump (PID 1).
ep = svc.get("entrypoint") or []
script = (ep[2] if len(ep) > 2 else "").replace("$$", "$")   # config re-escapes a literal $
want(ep[:2] == ["/bin/sh", "-c"] and script.startswith("queue-pump config >/dev/null")
     and "Next try in 60 s." in script and 'exec queue-pump "$@"' in script,
     "entrypoint: queue-pump config, a 60 s pause on exit 2, exec the pump")
want(svc.get("command") == ["run"], "command: [run] (an entrypoint clears the image's CMD)")
log = svc.get("logging", {})
want(log.get("driver") == "json-file" and {"max-size", "max-file"} <= set(log.get("options", {})),
     "json-file logging with max-size/max-file")
raw = json.load(open(sys.argv[4]))["services"]["queue-pump"]   # before interpolation
want(raw.get("image") == "${WORKER_IMAGE:-queue-pump:${WORKER_TAG:-%s}}" % version,
     "image: ${WORKER_IMAGE:-queue-pump:${WORKER_TAG:-%s}}" % version)
want([e["path"].rsplit("/", 1)[-1] for e in raw.get("env_file", [])] == ["${WORKER_ENV_FILE:-.env}"],
     "env_file: ${WORKER_ENV_FILE:-.env}")
if problems:
    sys.exit("compose file lacks: " + "; ".join(problems))
print("compose properties ok")
PY
  # A missing env file must be an error (the runbook says: create .env first).
  if WORKER_ENV_FILE=$TMP/does-not-exist.env docker_compose_cli config -q 2>/dev/null; then
    echo "a missing env file was accepted"; exit 1
  fi
}
# Static checks need no engine: the compose binary validates on its own.
docker_compose_cli() { "$TOOLS/bin/docker-compose" -f docker-compose.queue-pump.yml "$@"; }

check_hadolint() {
  need tools
  "$TOOLS/bin/hadolint" --failure-threshold warning Dockerfile
}

check_shellcheck() {
  need tools
  shellcheck scripts/*.sh scripts/ci/*.sh bench/*.sh
}

# systemd-analyze verify exits 0 on unknown keys and bad values: any output is a failure.
# ExecStart must exist for verify, so a copy points it at a stub; the installed unit itself is
# verified again inside the systemd container below.
check_unit_verify() {
  need tools
  local d=$TMP/unit out
  mkdir -p "$d"
  printf '#!/bin/sh\nexit 0\n' > "$d/queue-pump"; chmod +x "$d/queue-pump"
  sed "s|^ExecStart=/opt/queue-pump/venv/bin/queue-pump|ExecStart=$d/queue-pump|" \
    scripts/systemd/queue-pump.service > "$d/queue-pump.service"
  grep -q "^ExecStart=$d/queue-pump run" "$d/queue-pump.service"
  out=$(systemd-analyze verify "$d/queue-pump.service" 2>&1)
  [ -z "$out" ] || { echo "$out"; exit 1; }
}

check_unit_security() {
  need tools
  local out exposure
  out=$(systemd-analyze security --offline=true --threshold=30 scripts/systemd/queue-pump.service 2>&1)
  exposure=$(echo "$out" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
  echo "$out" | grep -E '✗|Overall'
  note "systemd-analyze security --offline=true: exposure $exposure (threshold 3.0)"
  awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 3.0) }'
}

check_unit_keys() {
  local u=scripts/systemd/queue-pump.service k
  for k in 'Type=notify' 'NotifyAccess=main' 'WatchdogSec=' 'Restart=always' 'KillSignal=SIGTERM' \
           'EnvironmentFile=/etc/queue-pump/queue-pump.env' 'DynamicUser=yes' \
           'ExecStart=/opt/queue-pump/venv/bin/queue-pump'; do
    grep -q "^$k" "$u" || { echo "missing $k"; exit 1; }
  done
  local stop
  stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' "$u")
  if [ -z "$stop" ] || [ "$stop" -le "$PUMP_GRACE_S" ]; then
    echo "TimeoutStopSec must exceed the pump's ${PUMP_GRACE_S}s grace"; exit 1
  fi
}

# pwsh is not installable here: parse the .ps1 with the tree-sitter PowerShell grammar.
check_ps1_syntax() {
  need tools
  local d=$CACHE/npm/ps-syntax
  npm_dir "$d" scripts/ci/npm/ps-syntax
  NODE_PATH=$d/node_modules node scripts/ci/ps-syntax.cjs scripts/*.ps1
}

# ---- Kubernetes: kustomize renders, every object validated offline ---------------------------
npm_dir() {   # npm_dir DIR SRC: DIR/node_modules holds exactly what SRC/package-lock.json pins
  local d=$1 src=$2 sum
  command -v node >/dev/null || DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq nodejs npm
  sum=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum)
  if [ "$(cat "$d/.pins" 2>/dev/null)" != "$sum" ]; then
    rm -rf "$d"; mkdir -p "$d"
    cp "$src/package.json" "$src/package-lock.json" "$d/"
    # ci: installs the lock as written and fails if it does not match package.json
    (cd "$d" && timeout 300 npm ci --silent --no-audit --no-fund --ignore-scripts)
    echo "$sum" > "$d/.pins"
  fi
}

check_kubernetes() {
  need tools
  local d=$CACHE/npm/k8s k=$TMP/k8s
  npm_dir "$d" scripts/ci/npm/k8s
  mkdir -p "$k"
  # The issue's command, from the checkout as it is: no generated or secret files needed.
  "$TOOLS/bin/kubectl" kustomize deploy/kubernetes > "$k/base.yaml"
  "$TOOLS/bin/kubectl" kustomize deploy/kubernetes/keda > "$k/keda.yaml"
  NODE_PATH=$d/node_modules node scripts/ci/k8s-validate.mjs "$k/base.yaml" "$k/keda.yaml"
  # The validator must be able to fail: a wrong type and an unknown kind are rejected.
  sed 's/minReplicaCount: 1/minReplicaCount: "one"/' "$k/keda.yaml" > "$k/bad-type.yaml"
  sed 's/^kind: PodDisruptionBudget/kind: PodDisruptionBudgetX/' "$k/base.yaml" > "$k/bad-kind.yaml"
  for f in bad-type bad-kind; do
    if NODE_PATH=$d/node_modules node scripts/ci/k8s-validate.mjs "$k/$f.yaml" >/dev/null; then
      echo "the validator accepted $f.yaml"; exit 1
    fi
  done
  "$TOOLS/bin/python" scripts/ci/k8s-properties.py "$k/base.yaml" "$k/keda.yaml" "$PUMP_GRACE_S"
  note "kubectl $("$TOOLS/bin/kubectl" version --client 2>/dev/null | sed -n 's/^Client Version: //p')" \
    "(kustomize $("$TOOLS/bin/kubectl" version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p'));" \
    "schemas: $(node -p 'Object.entries(require(process.argv[1]).dependencies).map(e => e.join("@")).join(" ")' "$d/package.json")"
}

# The ScaledObject's query and the documented keda_reader grants on a real PostgreSQL.
check_keda_query() {
  need tools
  [ -x /usr/lib/postgresql/15/bin/initdb ] || apt_install "$PG_PIN"
  "$TOOLS/bin/kubectl" kustomize deploy/kubernetes/keda > "$TMP/keda-rendered.yaml"
  local out
  out=$(bash scripts/ci/keda-query-pg.sh "$TMP/keda-rendered.yaml" "$TOOLS/bin/python")
  echo "$out"
  note "PostgreSQL $(psql --version | awk '{print $3}'): $(echo "$out" | head -n1)"
}

# ---- GitHub: workflows and dependabot ---------------------------------------------------------
check_github() {
  need tools
  # actionlint also runs shellcheck (on PATH) over every `run:` script.
  "$TOOLS/bin/actionlint" -no-color
  "$TOOLS/bin/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml
  "$TOOLS/bin/check-jsonschema" --builtin-schema vendor.dependabot .github/dependabot.yml
  note "$("$TOOLS/bin/actionlint" --version | head -n1); check-jsonschema $("$TOOLS/bin/check-jsonschema" --version | awk '{print $NF}')"
}

# The release job's steps, here: sdist + wheel, then the wheel installed with pipx into a
# place of its own, and its command run.
check_wheel() {
  need tools
  local w=$TMP/wheel want got
  mkdir -p "$w"
  cp -r pyproject.toml README.md queue_pump "$w/"
  find "$w" -name __pycache__ -prune -exec rm -rf {} +
  timeout 300 "$TOOLS/bin/python" -m build --outdir "$w/dist" "$w" > "$w/build.log" 2>&1 \
    || { tail -n 20 "$w/build.log"; exit 1; }
  ls "$w/dist"/queue_pump-*.tar.gz "$w/dist"/queue_pump-*-py3-none-any.whl
  PIPX_HOME=$w/pipx PIPX_BIN_DIR=$w/bin PIPX_MAN_DIR=$w/man timeout 300 "$TOOLS/bin/pipx" install "$w/dist"/queue_pump-*.whl
  want="queue-pump $(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
  got=$(env -i PATH=/usr/bin:/bin "$w/bin/queue-pump" --version)
  [ "$got" = "$want" ] || { echo "pipx-installed wheel says '$got', want '$want'"; exit 1; }
  note "sdist + wheel built; pipx install of the wheel: $got"
}

# ---- launchd: cannot run here (no macOS); the plist is parsed, the script shellchecked ----------
check_launchd() {
  python3 scripts/ci/launchd-plist.py scripts/launchd/*.plist
}

check_pytest_deploy() {
  need host-venv
  "$PY" -m pytest -q -p no:cacheprovider tests/deploy
}

# ---- Docker: engine, image, compose ------------------------------------------------------------
check_docker_engine() {
  need tools
  if ! docker version >/dev/null 2>&1; then
    mkdir -p "$DOCKER_ROOT"
    setsid dockerd -H "$DOCKER_HOST" --data-root "$DOCKER_ROOT" --pidfile "$TMP/dockerd.pidfile" \
      --iptables=false --ip6tables=false --bridge=none >"$TMP/dockerd.log" 2>&1 < /dev/null &
    echo $! > "$STATE/dockerd.pid"
    for _ in $(seq 1 60); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
    docker version >/dev/null 2>&1 || { tail -20 "$TMP/dockerd.log"; exit 1; }
  fi
  note "Docker engine $(docker version -f '{{.Server.Version}}') on $DOCKER_HOST"
  touch "$STATE/docker"
}

# No registry is reachable: python:3.12-slim is a local stand-in (Debian 12's Python 3.11 plus
# the machine's CA bundle), built once and kept in the engine's data root.
check_base_image() {
  need docker
  if docker image inspect python:3.12-slim >/dev/null 2>&1; then
    note "python:3.12-slim already present (cached)"
  else
    local b=$TMP/base
    mkdir -p "$b/shim"
    timeout 900 mmdebstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      "$SUITE" "$b/base.tar" /etc/apt/sources.list.d/debian.sources
    docker import "$b/base.tar" localhost/base:"$SUITE"
    cp /etc/ssl/certs/ca-certificates.crt "$b/shim/"
    cat > "$b/shim/Dockerfile" <<EOF
FROM localhost/base:$SUITE
LABEL org.queue-pump.ci-stand-in="python:3.12-slim stand-in: Debian $SUITE python3"
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt LANG=C.UTF-8
RUN ln -s /usr/bin/python3 /usr/local/bin/python
EOF
    timeout 300 docker build -q --network host -t python:3.12-slim "$b/shim"
    note "built the python:3.12-slim stand-in"
  fi
  touch "$STATE/base"
}

check_image_build() {
  need base
  local t0 t1 size
  t0=$(now)
  timeout 900 docker build --network host -t queue-pump:ci .
  t1=$(now)
  size=$(docker image inspect -f '{{.Size}}' queue-pump:ci)
  note "docker build: $(secs "$t0" "$t1")s; image queue-pump:ci $((size / 1000000)) MB" \
    "(base python:3.12-slim $(($(docker image inspect -f '{{.Size}}' python:3.12-slim) / 1000000)) MB)"
  touch "$STATE/image"
}

check_image_properties() {
  need image
  docker image inspect queue-pump:ci > "$TMP/image.json"
  python3 - "$TMP/image.json" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))[0]["Config"]
env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
problems = []
def want(cond, what):
    if not cond:
        problems.append(what)
want(cfg.get("User") not in (None, "", "0", "root", "0:0"), "a non-root USER")
want(cfg.get("Entrypoint") == ["queue-pump"], "exec-form ENTRYPOINT [\"queue-pump\"]")
want((cfg.get("Healthcheck") or {}).get("Test") == ["CMD", "queue-pump", "healthcheck"],
     "HEALTHCHECK CMD [\"queue-pump\", \"healthcheck\"]")
want(env.get("QUEUE_PUMP_HEALTH_HOST") == "0.0.0.0", "ENV QUEUE_PUMP_HEALTH_HOST=0.0.0.0")
for secret in ("SUPABASE_URL", "AGENT_TOKEN", "ORGANIZATION_ID", "SUPABASE_ANON_KEY"):
    want(secret not in env, f"no {secret} baked into the image")
want(cfg.get("StopSignal") in (None, "SIGTERM"), "STOPSIGNAL SIGTERM")
if problems:
    sys.exit("image lacks: " + "; ".join(problems))
PY
  # Inside: runs as non-root, no compiler or build backend, no .env anywhere, no pip cache.
  docker run --rm --network none --entrypoint /opt/queue-pump/bin/python queue-pump:ci -c '
import os, shutil, importlib.util, sys
assert os.getuid() != 0, "runs as root"
tools = [t for t in ("gcc", "cc", "make", "git", "curl") if shutil.which(t)]
assert not tools, f"build/network tools in the image: {tools}"
assert importlib.util.find_spec("setuptools") is None, "setuptools left in the venv"
envs = [os.path.join(d, f) for top in ("/opt", "/root", "/home", "/etc", "/tmp")
        for d, _, fs in os.walk(top) for f in fs if f == ".env" or f.startswith(".env.")]
assert not envs, f".env files in the image: {envs}"
assert not os.path.exists("/root/.cache/pip"), "pip cache in the image"
print("inside the image: uid", os.getuid(), "python", sys.version.split()[0])
'
  docker run --rm --network none queue-pump:ci --version
}

check_compose_up() {
  need image host-venv runner
  local port t0 t1
  port=$(free_port)
  umask 077
  cat > "$TMP/compose.env" <<EOF
SUPABASE_URL=$RUNNER_URL
AGENT_TOKEN=$TOKEN
ORGANIZATION_ID=$ORG
QUEUE_PUMP_HEALTH_HOST=127.0.0.1
QUEUE_PUMP_HEALTH_PORT=$port
QUEUE_PUMP_IDLE_SLEEP_MS=1000
QUEUE_PUMP_WORKER_ID=compose-ci
EOF
  export WORKER_ENV_FILE=$TMP/compose.env WORKER_IMAGE=queue-pump:ci
  jobs_py enqueue 20
  touch "$STATE/compose-up"
  t0=$(now)
  # The runbook's command (plus the CI override and --wait): builds from the cache, starts,
  # and returns once the container's healthcheck (queue-pump healthcheck) passes.
  timeout 300 "${DC[@]}" up -d --build --wait
  t1=$(now)
  # The runbook's `logs -f`, kept running to read the pump's last words after `down`.
  setsid "${DC[@]}" logs -f --no-color >"$STATE/compose-logs.txt" 2>&1 < /dev/null &
  echo $! > "$STATE/logs.pid"
  docker inspect -f '{{.State.Health.Status}}' "$(dc ps -q queue-pump)" | grep -qx healthy
  jobs_py wait --done 20 --timeout 60
  note "compose up -d --build --wait: $(secs "$t0" "$t1")s to healthy; 20 jobs drained $(secs "$t1" "$(now)")s later"
  dc exec -T queue-pump queue-pump status
  touch "$STATE/compose-running"
}

check_compose_down() {
  need compose-running
  local cid t0 t1 code
  cid=$(dc ps -q queue-pump)
  jobs_py enqueue 1 --duration-ms "$LONG_JOB_MS"
  jobs_py wait --done 20 --running 1 --timeout 30     # the long job is in flight now
  setsid timeout 120 docker events --filter "container=$cid" --filter event=die \
    --format '{{.Actor.Attributes.exitCode}}' >"$TMP/die.txt" 2>&1 < /dev/null &
  echo $! > "$STATE/events.pid"
  sleep 0.3
  t0=$(now)
  timeout 120 "${DC[@]}" down
  t1=$(now)
  rm -f "$STATE/compose-up"
  for _ in $(seq 1 20); do [ -s "$TMP/die.txt" ] && break; sleep 0.1; done
  code=$(head -n1 "$TMP/die.txt")
  kill "$(cat "$STATE/events.pid")" "$(cat "$STATE/logs.pid")" 2>/dev/null || true
  note "compose down with a ${LONG_JOB_MS} ms job in flight: $(secs "$t0" "$t1")s, container exit code $code"
  [ "$code" = 0 ] || { echo "container exit code $code (137 = SIGKILL after the grace)"; exit 1; }
  awk -v d="$(secs "$t0" "$t1")" -v g="$COMPOSE_STOP_GRACE_S" 'BEGIN { exit !(d < g - 10) }' \
    || { echo "down took too long"; exit 1; }
  jobs_py wait --done 21 --timeout 5                     # finished, not cut or requeued
  grep -q '"event": "pump_stopped"' "$STATE/compose-logs.txt"
  grep '"event": "pump_stopped"' "$STATE/compose-logs.txt" | grep -q '"exit_code": 0'
  docker image prune -f >/dev/null     # builder-stage leftovers: keep the data root bounded
}

# ---- the shipped compose file, unchanged ------------------------------------------------------
shipped_env() {   # the test's env file and the runner's data directory
  umask 077
  cat > "$TMP/shipped.env" <<EOF
SUPABASE_URL=http://runner:8000
QUEUE_PUMP_ALLOW_INSECURE_HTTP=1
AGENT_TOKEN=$TOKEN
ORGANIZATION_ID=$ORG
QUEUE_PUMP_IDLE_SLEEP_MS=1000
QUEUE_PUMP_WORKER_ID=compose-shipped-ci
EOF
  mkdir -p "$TMP/runner-data"
  chown 10001:10001 "$TMP/runner-data"      # the image's user writes the jobs database
}
shipped_jobs() {  # shipped_jobs ARGS...: jobs.py against the runner container, by its bridge IP
  local ip
  ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' \
    "$("${SHIPPED[@]}" ps -q runner)")
  AGENT_TOKEN=$TOKEN ORGANIZATION_ID=$ORG "$PY" scripts/ci/jobs.py "http://$ip:8000" "$@"
}

check_compose_shipped_up() {
  need image host-venv
  local t0 t1 cid
  shipped_env
  # No --build: building needs the host network on this engine. The image built above gets the
  # tag the file builds by default, queue-pump:<version>, as `up --build` would name it.
  docker tag queue-pump:ci "queue-pump:$VERSION"
  touch "$STATE/shipped-up"
  t0=$(now)
  timeout 180 "${SHIPPED[@]}" up -d --wait
  t1=$(now)
  cid=$("${SHIPPED[@]}" ps -q queue-pump)
  setsid "${SHIPPED[@]}" logs -f --no-color queue-pump >"$STATE/shipped-logs.txt" 2>&1 < /dev/null &
  echo $! > "$STATE/shipped-logs.pid"
  # What the shipped file sets is what runs: a bridge network, its restart policy and healthcheck.
  docker inspect -f '{{.HostConfig.NetworkMode}} {{.HostConfig.RestartPolicy.Name}} {{.Config.Healthcheck.Interval}} {{.Config.Healthcheck.StartPeriod}} {{.State.Health.Status}}' "$cid" | tee "$TMP/shipped-inspect.txt"
  [ "$(cat "$TMP/shipped-inspect.txt")" = "queue-pump-shipped_default unless-stopped 30s 20s healthy" ]
  [ "$(docker network inspect -f '{{.Driver}}' queue-pump-shipped_default)" = bridge ]
  shipped_jobs enqueue 20
  shipped_jobs wait --done 20 --timeout 60
  note "shipped compose file (bridge, its own healthcheck): up -d --wait $(secs "$t0" "$t1")s to healthy;" \
    "20 jobs drained $(secs "$t1" "$(now)")s later"
  touch "$STATE/shipped-running"
}

# The pump container's image and the version its last pump_started line names.
shipped_running() {
  local cid
  cid=$("${SHIPPED[@]}" ps -q queue-pump)
  for _ in $(seq 1 50); do
    docker logs "$cid" 2>&1 | grep -q '"event": "pump_started"' && break; sleep 0.2
  done
  echo "$(docker inspect -f '{{.Config.Image}}' "$cid") $(docker logs "$cid" 2>&1 \
    | grep '"event": "pump_started"' | tail -n1 | sed -n 's/.*"version": "\([^"]*\)".*/\1/p')"
}

# Upgrade and rollback as docs/DEPLOY.md says, with the shipped file: a next version is built as
# queue-pump:<next> (here with `docker build`: the file's own build needs a bridge with NAT),
# `WORKER_TAG=<next> up -d --no-build` runs it, plain `up -d --no-build` goes back.
check_compose_shipped_upgrade() {
  need shipped-running
  local v1=$VERSION.post1 d=$TMP/next done0
  mkdir -p "$d"
  tar -C "$ROOT" --exclude=./.venv --exclude=./.git --exclude=__pycache__ -cf - . | tar -C "$d" -xf -
  sed -i "s/^version = .*/version = \"$v1\"/" "$d/pyproject.toml"
  sed -i "s/^__version__ = .*/__version__ = \"$v1\"/" "$d/queue_pump/__init__.py"
  timeout 600 docker build -q --network host -t "queue-pump:$v1" "$d"
  env WORKER_TAG="$v1" timeout 120 "${SHIPPED[@]}" up -d --no-build
  [ "$(shipped_running)" = "queue-pump:$v1 $v1" ] || { echo "after upgrade: $(shipped_running)"; exit 1; }
  done0=$(shipped_jobs stats | sed -n 's/.* done=\([0-9]*\).*/\1/p')
  shipped_jobs enqueue 1
  shipped_jobs wait --done $((done0 + 1)) --timeout 30
  timeout 120 "${SHIPPED[@]}" up -d --no-build --wait
  [ "$(shipped_running)" = "queue-pump:$VERSION $VERSION" ] || { echo "after rollback: $(shipped_running)"; exit 1; }
  docker images --format '{{.Repository}}:{{.Tag}}' queue-pump | sort
  note "compose upgrade: WORKER_TAG=$v1 up -d --no-build ran $v1 and drained a job;" \
    "rollback: up -d --no-build back on queue-pump:$VERSION (healthy)"
}

check_compose_shipped_down() {
  need shipped-running
  local cid t0 t1 code port
  cid=$("${SHIPPED[@]}" ps -q queue-pump)
  # This container's log (the upgrade check replaced the one `logs -f` began with).
  kill "$(cat "$STATE/shipped-logs.pid")" 2>/dev/null || true
  setsid docker logs -f "$cid" >"$STATE/shipped-logs.txt" 2>&1 < /dev/null &
  echo $! > "$STATE/shipped-logs.pid"
  local done0
  done0=$(shipped_jobs stats | sed -n 's/.* done=\([0-9]*\).*/\1/p')
  shipped_jobs enqueue 1 --duration-ms "$LONG_JOB_MS"
  shipped_jobs wait --done "$done0" --running 1 --timeout 30    # the long job is in flight
  setsid timeout 120 docker events --filter "container=$cid" --filter event=die \
    --format '{{.Actor.Attributes.exitCode}}' >"$TMP/shipped-die.txt" 2>&1 < /dev/null &
  echo $! > "$STATE/shipped-events.pid"
  sleep 0.3
  t0=$(now)
  timeout 120 "${SHIPPED[@]}" down
  t1=$(now)
  rm -f "$STATE/shipped-up"
  for _ in $(seq 1 20); do [ -s "$TMP/shipped-die.txt" ] && break; sleep 0.1; done
  code=$(head -n1 "$TMP/shipped-die.txt")
  kill "$(cat "$STATE/shipped-events.pid")" "$(cat "$STATE/shipped-logs.pid")" 2>/dev/null || true
  note "shipped compose file: down with a ${LONG_JOB_MS} ms job in flight: $(secs "$t0" "$t1")s, pump exit code $code"
  [ "$code" = 0 ] || { echo "container exit code $code (137 = SIGKILL after the grace)"; exit 1; }
  # -a: `docker logs -f` output here can carry bytes grep takes for binary
  grep -a '"event": "pump_stopped"' "$STATE/shipped-logs.txt" | grep -q '"exit_code": 0'
  # The job finished, not cut or requeued: read the runner's database with a runner on the host.
  port=$(free_port)
  AGENT_TOKEN=$TOKEN ORGANIZATION_ID=$ORG setsid "$QP" runner --host 127.0.0.1 --port "$port" \
    --db "$TMP/runner-data/jobs.sqlite3" >"$TMP/check-runner.log" 2>&1 < /dev/null &
  echo $! > "$STATE/check-runner.pid"
  for _ in $(seq 1 50); do AGENT_TOKEN=$TOKEN ORGANIZATION_ID=$ORG "$PY" scripts/ci/jobs.py "http://127.0.0.1:$port" stats >/dev/null 2>&1 && break; sleep 0.2; done
  AGENT_TOKEN=$TOKEN ORGANIZATION_ID=$ORG "$PY" scripts/ci/jobs.py "http://127.0.0.1:$port" wait \
    --done $((done0 + 1)) --timeout 5
  AGENT_TOKEN=$TOKEN ORGANIZATION_ID=$ORG "$PY" scripts/ci/jobs.py "http://127.0.0.1:$port" stats \
    | grep -q 'queued=0 running=0 .* failed=0'
  kill "$(cat "$STATE/check-runner.pid")" 2>/dev/null || true
  docker rmi "queue-pump:$VERSION.post1" >/dev/null 2>&1 || true
}

# ---- the reference runner on the host's loopback ------------------------------------------------
check_runner() {
  need host-venv
  local port
  port=$(free_port)
  AGENT_TOKEN=$TOKEN ORGANIZATION_ID=$ORG setsid "$QP" runner --host 127.0.0.1 --port "$port" \
    --db "$TMP/runner.sqlite3" >"$TMP/runner.log" 2>&1 < /dev/null &
  echo $! > "$STATE/runner.pid"
  echo "http://127.0.0.1:$port" > "$STATE/runner.url"
  RUNNER_URL=http://127.0.0.1:$port
  for _ in $(seq 1 50); do jobs_py stats >/dev/null 2>&1 && break; sleep 0.2; done
  jobs_py stats
  touch "$STATE/runner"
}

# ---- systemd in a podman container -----------------------------------------------------------------
check_podman() {
  need tools
  local h nproc
  h=$(ulimit -Hu); [ "$h" = unlimited ] && h=32768; nproc=$(( h < 32768 ? h : 32768 ))
  cat > "$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
EOF
  if podman image exists "$PODMAN_IMAGE"; then
    note "$PODMAN_IMAGE already present (cached)"
  else
    timeout 900 mmdebstrap --variant=minbase \
      --include=systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      "$SUITE" "$TMP/systemd.tar" /etc/apt/sources.list.d/debian.sources
    podman import --change 'CMD ["/sbin/init"]' "$TMP/systemd.tar" "$PODMAN_IMAGE"
    rm -f "$TMP/systemd.tar"
  fi
  podman rm -f "$PODMAN_CTR" >/dev/null 2>&1 || true
  touch "$STATE/podman-run"
  # Host network: the pump reaches the runner on 127.0.0.1. The checkout is mounted read-only;
  # the CA bundle is the machine's (registries are reached through a TLS-inspecting proxy).
  podman run -d --name "$PODMAN_CTR" --systemd=always --cap-add SYS_ADMIN --network host \
    -v "$ROOT:/src:ro" -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    "$PODMAN_IMAGE" /sbin/init
  local state=""
  for _ in $(seq 1 60); do
    state=$(pexec systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 0.5
  done
  note "systemd $(pexec systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p') in podman: $state"
  case "$state" in running|degraded) ;; *) exit 1 ;; esac
  touch "$STATE/systemd"
}

install_in_ctr() { podman exec -e PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$PODMAN_CTR" bash /src/scripts/install-systemd.sh; }

check_install_fresh() {
  need systemd
  local out
  out=$(install_in_ctr)
  echo "$out"
  # A first install writes the example env file (root, 600) and does not start a pump that
  # would call the example's placeholder URL.
  [ "$(pexec stat -c '%a %U' /etc/queue-pump/queue-pump.env)" = "600 root" ]
  echo "$out" | grep -q "still the example"
  [ "$(pexec systemctl is-enabled queue-pump)" = enabled ]
  if pexec systemctl is-active --quiet queue-pump; then echo "started with the example settings"; exit 1; fi
  touch "$STATE/installed"
}

check_install_start() {
  need installed runner
  local port before after
  port=$(free_port)
  umask 077
  cat > "$TMP/systemd.env" <<EOF
SUPABASE_URL=$RUNNER_URL
AGENT_TOKEN=$TOKEN
ORGANIZATION_ID=$ORG
QUEUE_PUMP_HEALTH_PORT=$port
QUEUE_PUMP_IDLE_SLEEP_MS=1000
QUEUE_PUMP_WORKER_ID=systemd-ci
EOF
  podman exec -i "$PODMAN_CTR" sh -c 'cat > /etc/queue-pump/queue-pump.env' < "$TMP/systemd.env"
  before=$(pexec sha256sum /etc/queue-pump/queue-pump.env)
  install_in_ctr | tee "$TMP/install2.txt"
  grep -q "keeping existing /etc/queue-pump/queue-pump.env" "$TMP/install2.txt"
  after=$(pexec sha256sum /etc/queue-pump/queue-pump.env)
  [ "$before" = "$after" ] || { echo "the installer changed an existing env file"; exit 1; }
  [ "$(pexec systemctl is-active queue-pump)" = active ]
  pexec systemctl show -p Type,NotifyAccess,WatchdogUSec,NRestarts,StatusText,MainPID,User queue-pump
  [ "$(pexec systemctl show -p NRestarts --value queue-pump)" = 0 ]
  note "after install: $(pexec systemctl show -p ActiveState,SubState,NRestarts,WatchdogUSec queue-pump | paste -sd' ')"
  touch "$STATE/unit-running"
}

check_installed_unit() {
  need unit-running
  local out
  out=$(pexec systemd-analyze verify /etc/systemd/system/queue-pump.service 2>&1)
  [ -z "$out" ] || { echo "$out"; exit 1; }
  out=$(pexec systemd-analyze security queue-pump.service 2>&1)
  note "live: $(echo "$out" | grep -o 'Overall exposure level.*')"
  # Who the pump runs as: a dynamic user, no capabilities.
  # shellcheck disable=SC2016  # expanded by the container's shell
  pexec sh -c 'pid=$(systemctl show -p MainPID --value queue-pump); grep -E "^(Uid|CapEff|NoNewPrivs)" /proc/$pid/status'
  # shellcheck disable=SC2016
  if pexec sh -c 'pid=$(systemctl show -p MainPID --value queue-pump); grep -q "^Uid:[[:space:]]*0[[:space:]]" /proc/$pid/status'; then
    echo "the pump runs as root"; exit 1
  fi
}

check_systemd_drain() {
  need unit-running
  local done0 t0
  done0=$(jobs_py stats | sed -n 's/.* done=\([0-9]*\).*/\1/p')
  jobs_py enqueue 20
  t0=$(now)
  jobs_py wait --done $((done0 + 20)) --timeout 60
  note "20 jobs drained by the systemd-run pump in $(secs "$t0" "$(now)")s"
  pexec journalctl -u queue-pump --no-pager -n 5 -o cat
}

check_systemd_stop() {
  need unit-running
  local done0 t0 t1
  done0=$(jobs_py stats | sed -n 's/.* done=\([0-9]*\).*/\1/p')
  jobs_py enqueue 1 --duration-ms "$LONG_JOB_MS"
  jobs_py wait --done "$done0" --running 1 --timeout 30
  t0=$(now)
  timeout 120 podman exec "$PODMAN_CTR" systemctl stop queue-pump
  t1=$(now)
  pexec systemctl show -p Result,ExecMainCode,ExecMainStatus queue-pump
  [ "$(pexec systemctl show -p Result --value queue-pump)" = success ]
  [ "$(pexec systemctl show -p ExecMainStatus --value queue-pump)" = 0 ]
  jobs_py wait --done $((done0 + 1)) --timeout 5      # the job in flight finished
  pexec journalctl -u queue-pump --no-pager -o cat | grep '"event": "pump_stopped"' | tail -n1 | grep -q '"exit_code": 0'
  note "systemctl stop with a ${LONG_JOB_MS} ms job in flight: $(secs "$t0" "$t1")s, Result=success, status 0"
}

# A short watchdog for this check only (drop-in): the pump's pings keep it alive; a frozen
# pump (SIGSTOP) is killed and restarted by systemd.
check_systemd_watchdog() {
  need unit-running
  local pid0 pid1 n=""
  pexec mkdir -p /etc/systemd/system/queue-pump.service.d
  printf '[Service]\nWatchdogSec=2s\nTimeoutAbortSec=2s\n' \
    | podman exec -i "$PODMAN_CTR" sh -c 'cat > /etc/systemd/system/queue-pump.service.d/ci-watchdog.conf'
  pexec systemctl daemon-reload
  pexec systemctl restart queue-pump
  sleep 5
  [ "$(pexec systemctl is-active queue-pump)" = active ]
  [ "$(pexec systemctl show -p NRestarts --value queue-pump)" = 0 ] || { echo "restarted despite pings"; exit 1; }
  pid0=$(pexec systemctl show -p MainPID --value queue-pump)
  pexec systemctl kill --kill-who=main --signal=SIGSTOP queue-pump
  for _ in $(seq 1 60); do
    n=$(pexec systemctl show -p NRestarts --value queue-pump)
    [ "$n" -ge 1 ] && [ "$(pexec systemctl is-active queue-pump)" = active ] && break
    sleep 0.5
  done
  pid1=$(pexec systemctl show -p MainPID --value queue-pump)
  note "watchdog: alive 5s on pings (WatchdogSec=2s); frozen pump restarted: NRestarts=$n, pid $pid0 -> $pid1"
  if [ "$n" -lt 1 ] || [ "$pid1" = "$pid0" ] || [ "$pid1" = 0 ]; then
    echo "the frozen pump was not restarted by the watchdog"; exit 1
  fi
  pexec rm -f /etc/systemd/system/queue-pump.service.d/ci-watchdog.conf
  pexec systemctl daemon-reload
}

check_install_again() {
  need installed unit-running
  local before after
  before=$(pexec sha256sum /etc/queue-pump/queue-pump.env)
  install_in_ctr | tee "$TMP/install3.txt"
  grep -q "already matches this checkout" "$TMP/install3.txt"
  if grep -q "switched" "$TMP/install3.txt"; then echo "an unchanged checkout switched venvs"; exit 1; fi
  after=$(pexec sha256sum /etc/queue-pump/queue-pump.env)
  [ "$before" = "$after" ]
  [ "$(pexec systemctl is-active queue-pump)" = active ]
}

# The version the pump announced last (its pump_started log line).
started_version() {
  pexec journalctl -u queue-pump --no-pager -o cat | grep '"event": "pump_started"' | tail -n1 \
    | sed -n 's/.*"version": "\([^"]*\)".*/\1/p'
}
# A next version of this checkout, inside the container: the sources with the version bumped.
next_checkout() {   # next_checkout DIR VERSION
  pexec sh -c "rm -rf $1 && mkdir -p $1 \
    && tar -C /src --exclude=./.venv --exclude=./.git --exclude=__pycache__ -cf - . | tar -C $1 -xf - \
    && sed -i 's/^version = .*/version = \"$2\"/' $1/pyproject.toml \
    && sed -i 's/^__version__ = .*/__version__ = \"$2\"/' $1/queue_pump/__init__.py"
}

# Upgrade: the new venv is built beside the running one, the symlink switches, the service
# restarts on the new code, the old venv stays; a broken upgrade leaves the service untouched;
# --rollback goes back. Timed: the upgrade's restart, measured by systemd's own start timestamps.
check_systemd_upgrade() {
  need unit-running
  local v0 v1 pid0 pid1 old new out done0
  v0=$(pexec /opt/queue-pump/venv/bin/queue-pump --version | awk '{print $2}')
  old=$(pexec readlink /opt/queue-pump/venv)
  pid0=$(pexec systemctl show -p MainPID --value queue-pump)
  v1=$v0.post1
  next_checkout /tmp/src-next "$v1"
  pexec env PIP_CERT=/etc/ssl/certs/ca-certificates.crt bash /tmp/src-next/scripts/install-systemd.sh | tee "$TMP/upgrade.txt"
  grep -q "switched /opt/queue-pump/venv" "$TMP/upgrade.txt"
  new=$(pexec readlink /opt/queue-pump/venv)
  [ "$new" != "$old" ] && [ "$(pexec readlink /opt/queue-pump/venv.previous)" = "$old" ]
  pexec test -x "$old/bin/queue-pump"                      # the old venv is kept
  pid1=$(pexec systemctl show -p MainPID --value queue-pump)
  [ "$(pexec systemctl is-active queue-pump)" = active ] && [ "$pid1" != "$pid0" ]
  [ "$(started_version)" = "$v1" ] || { echo "running $(started_version), want $v1"; exit 1; }
  done0=$(jobs_py stats | sed -n 's/.* done=\([0-9]*\).*/\1/p')
  jobs_py enqueue 1
  jobs_py wait --done $((done0 + 1)) --timeout 30          # the new version drains
  note "upgrade $v0 -> $v1: new venv $new built beside $old, switched, restarted (pid $pid0 -> $pid1)"

  # A broken next version (its code does not import): the install stops, nothing changes.
  next_checkout /tmp/src-broken "$v1.post2"
  pexec sh -c 'echo "this is not python" >> /tmp/src-broken/queue_pump/cli/commands.py'
  if out=$(pexec env PIP_CERT=/etc/ssl/certs/ca-certificates.crt bash /tmp/src-broken/scripts/install-systemd.sh 2>&1); then
    echo "$out"; echo "a broken version installed"; exit 1
  fi
  echo "$out" | tail -n 2
  [ "$(pexec readlink /opt/queue-pump/venv)" = "$new" ]
  [ "$(pexec systemctl show -p MainPID --value queue-pump)" = "$pid1" ]
  note "broken upgrade refused: $(echo "$out" | tail -n1 | cut -c1-110)"

  # Rollback: back to the old venv, restarted, the new one kept as .previous.
  pexec bash /src/scripts/install-systemd.sh --rollback | tee "$TMP/rollback.txt"
  [ "$(pexec readlink /opt/queue-pump/venv)" = "$old" ]
  [ "$(pexec readlink /opt/queue-pump/venv.previous)" = "$new" ]
  [ "$(pexec systemctl is-active queue-pump)" = active ]
  [ "$(started_version)" = "$v0" ] || { echo "running $(started_version) after rollback, want $v0"; exit 1; }
  note "rollback: back on $v0 ($old); NRestarts=$(pexec systemctl show -p NRestarts --value queue-pump)"

  # A next version that installs and answers --version but cannot start (its run path imports a
  # module that does not exist): the restart fails, the installer switches back and says so.
  next_checkout /tmp/src-nostart "$v0.post3"
  pexec sh -c 'echo "import queue_pump_ci_missing_module" >> /tmp/src-nostart/queue_pump/app.py'
  if out=$(pexec env PIP_CERT=/etc/ssl/certs/ca-certificates.crt bash /tmp/src-nostart/scripts/install-systemd.sh 2>&1); then
    echo "$out"; echo "a version that cannot start was left in service"; exit 1
  fi
  echo "$out" | tail -n 3
  echo "$out" | grep -q "failed to restart on the new venv; switched back to $old"
  [ "$(pexec readlink /opt/queue-pump/venv)" = "$old" ]
  [ "$(pexec readlink /opt/queue-pump/venv.previous)" = "$new" ]
  if pexec sh -c 'ls -d /opt/queue-pump/venvs/*post3*' 2>/dev/null; then echo "the failed venv was kept"; exit 1; fi
  [ "$(pexec systemctl is-active queue-pump)" = active ]
  [ "$(started_version)" = "$v0" ]
  note "a version that cannot start: restart failed, switched back to $v0 and restarted it"
}

# An install made before venvs/ existed (a real directory at /opt/queue-pump/venv, built as that
# installer did) is upgraded in place: kept as venvs/legacy, its scripts repointed, and
# --rollback runs it.
check_systemd_legacy() {
  need systemd runner
  pexec sh -c 'rm -rf /opt/queue-pump && mkdir -p /opt/queue-pump && python3 -m venv /opt/queue-pump/venv \
    && PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/queue-pump/venv/bin/pip install --quiet \
       --require-hashes --no-deps --only-binary=:all: -r /src/requirements.lock \
    && rm -rf /tmp/legacy-src && mkdir /tmp/legacy-src && cp -r /src/pyproject.toml /src/README.md /src/queue_pump /tmp/legacy-src/ \
    && /opt/queue-pump/venv/bin/pip install --quiet --no-deps --no-build-isolation --no-index /tmp/legacy-src'
  podman exec -i "$PODMAN_CTR" sh -c 'mkdir -p /etc/queue-pump && umask 077 && cat > /etc/queue-pump/queue-pump.env' < "$TMP/systemd.env"
  install_in_ctr | tee "$TMP/legacy.txt"
  grep -q "moved the venv of an earlier install to /opt/queue-pump/venvs/legacy" "$TMP/legacy.txt"
  [ "$(pexec readlink /opt/queue-pump/venv.previous)" = /opt/queue-pump/venvs/legacy ]
  pexec head -n1 /opt/queue-pump/venvs/legacy/bin/queue-pump | tee "$TMP/legacy-shebang.txt"
  grep -q '^#!/opt/queue-pump/venvs/legacy/bin/python' "$TMP/legacy-shebang.txt"   # python or python3
  [ "$(pexec systemctl is-active queue-pump)" = active ]
  pexec bash /src/scripts/install-systemd.sh --rollback
  [ "$(pexec systemctl is-active queue-pump)" = active ]
  # shellcheck disable=SC2016  # expanded by the container's shell
  pexec sh -c 'tr "\0" " " < /proc/$(systemctl show -p MainPID --value queue-pump)/cmdline' | tee "$TMP/legacy-cmd.txt"
  grep -q '^/opt/queue-pump/venvs/legacy/bin/python' "$TMP/legacy-cmd.txt"
  note "old-layout install upgraded: its venv kept as venvs/legacy; --rollback runs it ($(cut -c1-60 "$TMP/legacy-cmd.txt"))"
}

check_systemd_uninstall() {
  need installed
  pexec bash /src/scripts/uninstall-systemd.sh | tee "$TMP/uninstall.txt"
  if pexec systemctl cat queue-pump >/dev/null 2>&1; then echo "the unit is still known"; exit 1; fi
  if pexec test -e /opt/queue-pump; then echo "/opt/queue-pump is left"; exit 1; fi
  pexec test -f /etc/queue-pump/queue-pump.env                # settings kept without --purge
  pexec bash /src/scripts/uninstall-systemd.sh --purge
  if pexec test -e /etc/queue-pump; then echo "/etc/queue-pump is left after --purge"; exit 1; fi
  note "uninstall: unit, venvs removed; env file kept, then removed with --purge"
}

# ---- run -------------------------------------------------------------------------------------
echo "deploy-checks: $ROOT ($([ "$STATIC_ONLY" = 1 ] && echo static only || echo full))"
TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
check "tools (pinned; apt + PyPI)" setup_tools
check "host venv with the pump" setup_host_venv
PY=$(cat "$STATE/venv" 2>/dev/null || echo /nonexistent)/bin/python
QP=${PY%/python}/queue-pump

check "requirements.lock matches pyproject.toml" check_lock
check "compose: docker compose config -q + properties" check_compose_config
check "Dockerfile: hadolint --failure-threshold warning" check_hadolint
check "shell scripts: shellcheck" check_shellcheck
check "unit: systemd-analyze verify (no output)" check_unit_verify
check "unit: systemd-analyze security --offline (<= 3.0)" check_unit_security
check "unit: notify, watchdog, restart, stop timeout" check_unit_keys
check "fly.toml + deploy-fly.sh: pytest tests/deploy" check_pytest_deploy
check "deploy-fly.ps1: PowerShell grammar parse" check_ps1_syntax
check "kubernetes: kustomize renders, schemas validate" check_kubernetes
check "kubernetes: KEDA query + role on real PostgreSQL" check_keda_query
check "github: actionlint + workflow/dependabot schemas" check_github
check "package: sdist + wheel, pipx install, --version" check_wheel
check "launchd: plist parses, keys (plistlib)" check_launchd

if [ "$STATIC_ONLY" = 0 ]; then
  check "reference runner on 127.0.0.1" check_runner
  RUNNER_URL=$(cat "$STATE/runner.url" 2>/dev/null || echo http://127.0.0.1:9)
  check "docker: engine" check_docker_engine
  check "docker: python:3.12-slim stand-in" check_base_image
  check "docker: build the image" check_image_build
  check "docker: image is non-root, exec-form, no secrets/tools" check_image_properties
  check "compose: up -d --build --wait, jobs drain" check_compose_up
  check "compose: down with a job in flight exits 0" check_compose_down
  check "compose as shipped: bridge, own healthcheck, drain" check_compose_shipped_up
  check "compose as shipped: upgrade by tag, rollback" check_compose_shipped_upgrade
  check "compose as shipped: down with a job in flight" check_compose_shipped_down
  check "systemd: podman container with systemd as PID 1" check_podman
  check "systemd: first install writes env file, no start" check_install_fresh
  check "systemd: install with settings starts (notify)" check_install_start
  check "systemd: installed unit verify + live security" check_installed_unit
  check "systemd: jobs drain" check_systemd_drain
  check "systemd: stop with a job in flight is clean" check_systemd_stop
  check "systemd: watchdog keeps alive / restarts frozen" check_systemd_watchdog
  check "systemd: installer again is idempotent" check_install_again
  check "systemd: upgrade, broken refused, rollback" check_systemd_upgrade
  check "systemd: uninstall (keeps settings), --purge" check_systemd_uninstall
  check "systemd: upgrade of an old-layout install" check_systemd_legacy
fi

echo "deploy-checks: total $(secs "$T_START" "$(now)")s"
[ "$FAILED" = 0 ] || echo "deploy-checks: failed: ${FAILED_NAMES[*]}"
echo "deploy-checks: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
