#!/usr/bin/env bash
# The KEDA overlay's due-job query and the documented read-only role, run on a real PostgreSQL:
# a throwaway cluster (unix socket only, in a temp dir), the Supabase kit's migration as written
# (supabase/migrations), rows of each kind (asymmetric counts, so a flipped comparison shows),
# and the query taken from the rendered ScaledObject, run as keda_reader with exactly the
# grants docs/DEPLOY.md gives.
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

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
psql_as postgres <<'SQL'
create role anon nologin; create role authenticated nologin; create role service_role nologin;
SQL
for m in "$root"/supabase/migrations/*.sql; do psql_as postgres < "$m" >/dev/null; done
psql_as postgres <<'SQL'
insert into queue_pump.jobs (organization_id, queue, job_type, status, attempts, max_attempts,
                             run_at, locked_by, lease_expires_at) values
  ('your-organization-id', 'agent', 't', 'queued',  0, 5, now() - interval '1 minute', null, null), -- due
  ('your-organization-id', 'agent', 't', 'queued',  0, 5, now() + interval '1 hour',   null, null), -- not yet
  ('your-organization-id', 'agent', 't', 'queued',  0, 5, now() + interval '2 hour',   null, null), -- not yet
  ('your-organization-id', 'agent', 't', 'running', 1, 5, now(), 'w', now() - interval '1 s'),  -- lease expired: due
  ('your-organization-id', 'agent', 't', 'running', 2, 5, now(), 'w', now() - interval '1 h'),  -- lease expired: due
  ('your-organization-id', 'agent', 't', 'running', 5, 5, now(), 'w', now() - interval '1 h'),  -- expired, last attempt
  ('your-organization-id', 'agent', 't', 'running', 1, 5, now(), 'w', now() + interval '5 min'),
  ('your-organization-id', 'agent', 't', 'done',    1, 5, now(), null, null),
  ('your-organization-id', 'agent', 't', 'failed',  5, 5, now(), null, null),
  ('another-organization', 'agent', 't', 'queued',  0, 5, now() - interval '1 minute', null, null),
  ('your-organization-id', 'render', 't', 'queued', 0, 5, now() - interval '1 minute', null, null);
-- docs/DEPLOY.md's role, verbatim apart from the password (trust auth here)
create role keda_reader login;
grant usage on schema queue_pump to keda_reader;
grant execute on function queue_pump.due_count(text, text) to keda_reader;
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
echo "due jobs counted by keda_reader: $got (want 3: one queued and due, two with an expired lease below max_attempts)"
[ "$got" = 3 ]
# The role can count, but not read the jobs nor take one.
for stmt in "select payload from queue_pump.jobs" "select * from queue_pump.claim('your-organization-id')"; do
  if printf '%s;\n' "$stmt" | psql_as keda_reader >/dev/null 2>&1; then
    echo "keda_reader could run: $stmt"; exit 1
  fi
done
echo "keda_reader can count due jobs and nothing else"
