#!/usr/bin/env bash
# Deploy queue-pump to Fly.io as a worker (no public service), from this checkout.
#
#   export SUPABASE_URL=https://<project>.supabase.co AGENT_TOKEN=... ORGANIZATION_ID=...
#   scripts/deploy-fly.sh [extra `flyctl deploy` flags]
#
# Environment:
#   SUPABASE_URL, AGENT_TOKEN, ORGANIZATION_ID   required; pushed as Fly secrets. When one is
#                                                missing and this is a terminal, it is asked
#                                                for without echo.
#   SUPABASE_ANON_KEY, QUEUE_PUMP_ALERT_WEBHOOK_URL   optional secrets, pushed when set
#   FLY_APP     app name (default: `app` in fly.toml); FLY_APP_NAME is accepted too (the runbook's
#               name); when both are set they must agree      FLY_ORG   org for a new app
#   FLY_API_TOKEN   a Fly token, if not logged in: a deploy token (`fly tokens create deploy -a APP`)
#               deploys an app that exists; creating the app needs a personal or org token
#   FLYCTL      the flyctl binary (default: flyctl, else fly)
#
# Secret values go to flyctl on standard input (`secrets import`), never on a command line
# (visible in ps) and never printed. They are staged and take effect with the deploy.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
config="$root/fly.toml"

die() { echo "deploy-fly: error: $*" >&2; exit 1; }
say() { echo "deploy-fly: $*"; }

# flyctl
if [ -n "${FLYCTL:-}" ]; then
  command -v "$FLYCTL" >/dev/null 2>&1 || die "FLYCTL=$FLYCTL is not an executable"
  fly=$FLYCTL
elif command -v flyctl >/dev/null 2>&1; then
  fly=flyctl
elif command -v fly >/dev/null 2>&1; then
  fly=fly
else
  die "flyctl not found on PATH; install it (https://fly.io/docs/flyctl/install/) or set FLYCTL"
fi
[ -f "$config" ] || die "$config not found"

# App name: FLY_APP (or FLY_APP_NAME, the runbook's name), else fly.toml's app = "...".
if [ -n "${FLY_APP:-}" ] && [ -n "${FLY_APP_NAME:-}" ] && [ "$FLY_APP" != "$FLY_APP_NAME" ]; then
  die "FLY_APP=$FLY_APP and FLY_APP_NAME=$FLY_APP_NAME disagree; set one of them"
fi
app=${FLY_APP:-${FLY_APP_NAME:-$(sed -n 's/^app *= *"\([^"]*\)".*/\1/p' "$config" | head -n1)}}
[ -n "$app" ] || die "no app name: set FLY_APP (or FLY_APP_NAME) or app = \"...\" in fly.toml"

# Secrets: required ones must be set (or typed in, hidden, on a terminal).
required=(SUPABASE_URL AGENT_TOKEN ORGANIZATION_ID)
optional=(SUPABASE_ANON_KEY QUEUE_PUMP_ALERT_WEBHOOK_URL)
missing=()
for name in "${required[@]}"; do
  if [ -z "${!name:-}" ] && [ -t 0 ] && [ -t 2 ]; then
    read -r -s -p "$name (input hidden): " value </dev/tty; echo >&2
    printf -v "$name" '%s' "$value"
    unset value
  fi
  [ -n "${!name:-}" ] || missing+=("$name")
done
[ "${#missing[@]}" = 0 ] || die "missing environment variable(s): ${missing[*]} (export them; they become Fly secrets, never written to a file)"
for name in "${required[@]}" "${optional[@]}"; do
  case "${!name:-}" in
    *$'\n'*|*$'\r'*) die "$name contains a line break" ;;
  esac
done
case "$SUPABASE_URL" in
  https://*) ;;
  *) die "SUPABASE_URL must start with https:// (the token would travel in clear)" ;;
esac

# A token in FLY_API_TOKEN may be an app-scoped deploy token, which cannot answer `auth whoami`:
# only without one is a login required up front.
if [ -z "${FLY_API_TOKEN:-}" ]; then
  "$fly" auth whoami >/dev/null 2>&1 || die "not logged in to Fly: run '$fly auth login' (or set FLY_API_TOKEN)"
fi

# 1. The app. `flyctl status --app` works with every token kind that can deploy the app (a
# deploy token cannot list apps); only Fly's "Could not find App" means missing, any other
# failure stops here instead of guessing.
if status_out=$("$fly" status --app "$app" 2>&1); then
  say "app $app exists"
elif printf '%s' "$status_out" | grep -Eqi 'could not (find|resolve) app'; then
  say "creating app $app"
  "$fly" apps create "$app" ${FLY_ORG:+--org "$FLY_ORG"} >/dev/null \
    || die "could not create app $app: creating needs a personal or org token (a deploy token only deploys an existing app); or the name is taken: set FLY_APP"
else
  die "flyctl status --app $app failed: $(printf '%s' "$status_out" | grep -v '^[[:space:]]*$' | tail -n1)"
fi

# 2. Secrets, staged (applied by the deploy below), from stdin.
names=()
{
  for name in "${required[@]}" "${optional[@]}"; do
    if [ -n "${!name:-}" ]; then
      printf '%s=%s\n' "$name" "${!name}"
    fi
  done
} | "$fly" secrets import --stage --app "$app" >/dev/null \
  || die "flyctl secrets import failed for app $app"
for name in "${required[@]}" "${optional[@]}"; do
  if [ -n "${!name:-}" ]; then names+=("$name"); fi
done
say "staged secrets: ${names[*]} (values not shown)"

# 3. Deploy: one Machine (scale out later with `fly scale count`), built by Fly's builder.
say "deploying $app"
"$fly" deploy --app "$app" --config "$config" --remote-only --ha=false "$@" \
  || die "flyctl deploy failed (see above)"

say "deployed. Watch it:"
say "  $fly logs --app $app"
say "  $fly status --app $app     $fly checks list --app $app"
say "  more pumps: $fly scale count 3 --app $app   (the runner claims each job atomically)"
