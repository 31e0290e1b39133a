#!/usr/bin/env bash
# The KEDA overlay's due-job query and the documented read-only role, run on a real PostgreSQL:
# a throwaway cluster (unix socket only, in a temp dir), a stand-in queue_pump.jobs with the
# Supabase kit's columns, rows of each kind (asymmetric counts, so a flipped comparison shows), and the query taken from the rendered
# ScaledObject, run as keda_reader with exactly the grants docs/DEPLOY.md gives.
#
#   bash scripts/ci/keda-query-pg.sh RENDERED_KEDA.yaml PYTHON_WITH_RUAMEL
set -euo pipefail
rendered=$1 py=$2
bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d | sort -V | tail -n1)
[ -x "$bin/initdb" ] || { echo "no PostgreSQL server binaries under /usr/lib/postgresql"; exit 1; }
d=$(mktemp -d /tmp/keda-pg.XXXXXX)
chown postgres "$d"
cleanup() { runuser -u postgres -- "$bin/pg_ctl" -D "$d/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$d"; }
trap cleanup EXIT
runuser -u postgres -- "$bin/initdb" -D "$d/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$bin/pg_ctl" -D "$d/data" -w -l "$d/log" \
  -o "-k $d -c listen_addresses='' -p 5432" start >/dev/null
psql_as() { psql -X -v ON_ERROR_STOP=1 -q -t -A -h "$d" -p 5432 -U "$1" -d postgres; }

psql_as postgres <<'SQL'
create schema queue_pump;
create table queue_pump.jobs (
  id bigserial primary key,
  organization_id text not null,
  queue text not null,
  status text not null check (status in ('queued', 'running', 'done', 'failed')),
  run_at timestamptz not null default now(),
  lease_expires_at timestamptz,
  payload jsonb
);
insert into queue_pump.jobs (organization_id, queue, status, run_at, lease_expires_at) values
  ('your-organization-id', 'agent', 'queued',  now() - interval '1 minute', null),                  -- due
  ('your-organization-id', 'agent', 'queued',  now() + interval '1 hour',   null),                  -- not yet
  ('your-organization-id', 'agent', 'queued',  now() + interval '2 hour',   null),                  -- not yet
  ('your-organization-id', 'agent', 'running', now() - interval '1 hour',   now() - interval '1 s'),-- lease expired: due
  ('your-organization-id', 'agent', 'running', now() - interval '1 hour',   now() - interval '1 h'),-- lease expired: due
  ('your-organization-id', 'agent', 'running', now() - interval '1 hour',   now() + interval '5 min'),
  ('your-organization-id', 'agent', 'done',    now() - interval '1 hour',   null),
  ('your-organization-id', 'agent', 'failed',  now() - interval '1 hour',   null),
  ('another-organization', 'agent', 'queued',  now() - interval '1 minute', null),
  ('your-organization-id', 'render', 'queued', now() - interval '1 minute', null);
alter table queue_pump.jobs enable row level security;
-- docs/DEPLOY.md's role, verbatim apart from the password (trust auth here)
create role keda_reader login;
grant usage on schema queue_pump to keda_reader;
grant select (organization_id, queue, status, run_at, lease_expires_at) on queue_pump.jobs to keda_reader;
create policy keda_count on queue_pump.jobs for select to keda_reader using (true);
SQL

query=$("$py" - "$rendered" <<'PY'
import sys
from ruamel.yaml import YAML
docs = [d for d in YAML(typ="safe").load_all(open(sys.argv[1])) if d]
(so,) = [d for d in docs if d["kind"] == "ScaledObject"]
(trig,) = so["spec"]["triggers"]
print(trig["metadata"]["query"])
PY
)
got=$(printf '%s;\n' "$query" | psql_as keda_reader)
echo "due jobs counted by keda_reader: $got (want 3: one queued and due, two with an expired lease)"
[ "$got" = 3 ]
# The role can count, but not read what the jobs carry.
if printf 'select payload from queue_pump.jobs;\n' | psql_as keda_reader >/dev/null 2>&1; then
  echo "keda_reader can read payload"; exit 1
fi
echo "keda_reader cannot read payload (column grants only)"
