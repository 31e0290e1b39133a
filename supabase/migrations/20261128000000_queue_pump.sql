-- queue-pump: a durable job queue for an always-on pump and the `ai-job-runner` Edge Function.
--
-- One table, queue_pump.jobs, and the functions that are its only way in:
--   enqueue      add a job (idempotent with a dedupe key)
--   claim        take one due job under a lease (FOR UPDATE SKIP LOCKED)
--   heartbeat    extend the lease, optionally saving progress (a checkpoint)
--   complete     finish a job as done
--   fail         give a failed attempt back with a backoff, or end it `failed`
--   requeue      give the job back on purpose with saved progress (a yield)
--   due_since    the jobs a call could claim now (the one definition of "due")
--   due_count    how many jobs could be claimed now (cheap: for autoscalers)
--   stats        counts per status and the age of the oldest due job
--   purge        delete finished jobs older than an interval, in bounded batches
-- complete, fail, requeue and heartbeat change nothing unless the caller still holds the lease,
-- so a worker that lost its lease (it was presumed dead and the job reclaimed) cannot overwrite
-- a newer attempt. Delivery is at least once: handlers must be idempotent.
--
-- Applies on a plain PostgreSQL 15+ with Supabase's roles anon, authenticated and service_role.

-- Those roles first, before anything is made: without them the grants below fail half way
-- (and applied without a transaction, e.g. `psql -f`, the schema would stay behind). The line
-- names the missing roles and how to create them. A project that applied this file already is
-- not touched: Supabase never applies a migration twice.
do $$
declare
  missing text;
begin
  select string_agg(r, ', ' order by r) into missing
    from unnest(array['anon', 'authenticated', 'service_role']) as r
   where not exists (select from pg_catalog.pg_roles where rolname = r);
  if missing is not null then
    raise exception using errcode = 'undefined_object', message =
      'queue_pump needs Supabase''s roles anon, authenticated and service_role; missing: '
      || missing || '. Create them first: create role anon nologin; create role authenticated'
      || ' nologin; create role service_role nologin bypassrls;';
  end if;
end $$;

create schema if not exists queue_pump;
revoke all on schema queue_pump from public;
grant usage on schema queue_pump to service_role;

create table queue_pump.jobs (
  id               bigint generated always as identity primary key,
  organization_id  text        not null check (length(organization_id) between 1 and 200),
  queue            text        not null default 'agent' check (length(queue) between 1 and 100),
  job_type         text        not null check (length(job_type) between 1 and 200),
  payload          jsonb       not null default '{}'::jsonb,
  status           text        not null default 'queued'
                               check (status in ('queued', 'running', 'done', 'failed')),
  attempts         integer     not null default 0 check (attempts >= 0),
  yields           integer     not null default 0 check (yields >= 0),
  max_attempts     integer     not null default 5 check (max_attempts between 1 and 1000),
  run_at           timestamptz not null default now(),
  locked_by        text,
  lease_expires_at timestamptz,
  dedupe_key       text        check (length(dedupe_key) between 1 and 500),
  progress         jsonb,
  result           jsonb,
  last_error       text,
  created_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now(),
  started_at       timestamptz,
  finished_at      timestamptz,
  -- A running job always has a holder and a lease end; the claim relies on it.
  constraint jobs_running_has_lease
    check (status <> 'running' or (locked_by is not null and lease_expires_at is not null))
);

comment on table queue_pump.jobs is
  'queue-pump jobs. Write through the queue_pump.* functions, not directly.';

-- The claim's two lookups read only these partial indexes, whose size is the number of due or
-- running jobs, never the number of finished ones: a claim costs the same with 1,000 or
-- 10,000,000 rows in the table.
create index jobs_due_idx on queue_pump.jobs (organization_id, queue, run_at, id)
  where status = 'queued';
create index jobs_lease_idx on queue_pump.jobs (organization_id, queue, lease_expires_at)
  where status = 'running';
-- Purge walks finished jobs by age.
create index jobs_finished_idx on queue_pump.jobs (finished_at)
  where status in ('done', 'failed');
-- stats counts per status with an index-only scan.
create index jobs_status_idx on queue_pump.jobs (organization_id, queue, status);
-- Dedupe is per organization and queue; a key is remembered until its job is purged.
create unique index jobs_dedupe_idx on queue_pump.jobs (organization_id, queue, dedupe_key)
  where dedupe_key is not null;

-- Row-level security on with no policy: nobody but the table's owner (and roles that bypass
-- RLS) reads a row, even if a grant slips in later. The functions below run as the owner.
alter table queue_pump.jobs enable row level security;
revoke all on queue_pump.jobs from public;
do $$
begin
  -- Supabase grants on new tables to these roles by default privileges; take it back.
  execute 'revoke all on table queue_pump.jobs from anon, authenticated, service_role';
exception when undefined_object then
  raise notice 'queue_pump: roles anon/authenticated/service_role not found (not Supabase?)';
end $$;

-- enqueue ------------------------------------------------------------------------------------

-- The same as enqueue, and also says whether the job was created (false: the dedupe key was
-- known and the existing job's id is returned). The enqueue Edge Function answers 201 or 200
-- from it.
create function queue_pump.enqueue_job(
  organization_id text,
  queue text,
  job_type text,
  payload jsonb default '{}'::jsonb,
  dedupe_key text default null,
  run_at timestamptz default null,
  max_attempts integer default 5
) returns table (id bigint, created boolean)
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
#variable_conflict use_column
declare
  new_id bigint;
begin
  insert into queue_pump.jobs as j
    (organization_id, queue, job_type, payload, dedupe_key, run_at, max_attempts)
  values (
    enqueue_job.organization_id,
    coalesce(enqueue_job.queue, 'agent'),
    enqueue_job.job_type,
    coalesce(enqueue_job.payload, '{}'::jsonb),
    enqueue_job.dedupe_key,
    coalesce(enqueue_job.run_at, now()),
    coalesce(enqueue_job.max_attempts, 5)
  )
  on conflict (organization_id, queue, dedupe_key) where dedupe_key is not null do nothing
  returning j.id into new_id;

  if new_id is not null then
    return query select new_id, true;
    return;
  end if;
  -- The key is known. ON CONFLICT waited for a concurrent insert of the same key to commit,
  -- and this statement's snapshot is newer than that commit, so the row is visible.
  return query
    select j.id, false from queue_pump.jobs j
    where j.organization_id = enqueue_job.organization_id
      and j.queue = coalesce(enqueue_job.queue, 'agent')
      and j.dedupe_key = enqueue_job.dedupe_key;
end;
$$;

create function queue_pump.enqueue(
  organization_id text,
  queue text,
  job_type text,
  payload jsonb default '{}'::jsonb,
  dedupe_key text default null,
  run_at timestamptz default null,
  max_attempts integer default 5
) returns bigint
language sql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
  select e.id from queue_pump.enqueue_job(
    organization_id => enqueue.organization_id,
    queue => enqueue.queue,
    job_type => enqueue.job_type,
    payload => enqueue.payload,
    dedupe_key => enqueue.dedupe_key,
    run_at => enqueue.run_at,
    max_attempts => enqueue.max_attempts
  ) e;
$$;

-- claim --------------------------------------------------------------------------------------

create function queue_pump.claim(
  organization_id text,
  queue text default 'agent',
  worker text default null,
  lease_seconds integer default 600
) returns setof queue_pump.jobs
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  job_id bigint;
  -- The holder is the lease: without a worker name each claim gets its own, returned in
  -- locked_by, so two callers can never complete each other's jobs.
  holder text := coalesce(claim.worker, gen_random_uuid()::text);
  q text := coalesce(claim.queue, 'agent');
  claimed queue_pump.jobs;
begin
  if claim.lease_seconds is null or claim.lease_seconds < 1 or claim.lease_seconds > 86400 then
    raise exception 'queue_pump.claim: lease_seconds must be between 1 and 86400, got %',
      claim.lease_seconds using errcode = '22023';
  end if;

  -- A running job whose lease ran out lost its worker. If that was its last attempt it ends
  -- failed here (at most 100 a call, so one claim stays short; the rest on later calls).
  update queue_pump.jobs j
     set status = 'failed', finished_at = now(), updated_at = now(),
         locked_by = null, lease_expires_at = null,
         last_error = 'lease expired on the last attempt (worker lost)'
    from (select x.id from queue_pump.jobs x
           where x.organization_id = claim.organization_id and x.queue = q
             and x.status = 'running' and x.lease_expires_at < now()
             and x.attempts >= x.max_attempts
           limit 100
           for update skip locked) dead
   where j.id = dead.id;

  -- Expired leases first: those jobs have waited since their lease ran out.
  select x.id into job_id from queue_pump.jobs x
   where x.organization_id = claim.organization_id and x.queue = q
     and x.status = 'running' and x.lease_expires_at < now()
     and x.attempts < x.max_attempts          -- never more runs than max_attempts
   order by x.lease_expires_at
   limit 1
   for update skip locked;

  if job_id is null then
    select x.id into job_id from queue_pump.jobs x
     where x.organization_id = claim.organization_id and x.queue = q
       and x.status = 'queued' and x.run_at <= now()
     order by x.run_at, x.id
     limit 1
     for update skip locked;
  end if;

  if job_id is null then
    return;
  end if;

  update queue_pump.jobs j
     set status = 'running',
         attempts = j.attempts + 1,
         locked_by = holder,
         lease_expires_at = now() + make_interval(secs => claim.lease_seconds),
         started_at = now(),
         updated_at = now()
   where j.id = job_id
  returning j.* into claimed;
  return next claimed;
end;
$$;

-- lease holders ------------------------------------------------------------------------------

create function queue_pump.heartbeat(
  job_id bigint,
  worker text,
  lease_seconds integer default 600,
  progress jsonb default null
) returns timestamptz
language sql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
  update queue_pump.jobs j
     set lease_expires_at = now() + make_interval(secs => greatest(1, least(heartbeat.lease_seconds, 86400))),
         progress = coalesce(heartbeat.progress, j.progress),
         updated_at = now()
   where j.id = heartbeat.job_id and j.status = 'running' and j.locked_by = heartbeat.worker
  returning j.lease_expires_at;
$$;

create function queue_pump.complete(
  job_id bigint,
  worker text,
  result jsonb default null
) returns boolean
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
begin
  update queue_pump.jobs j
     set status = 'done', result = complete.result, finished_at = now(), updated_at = now(),
         locked_by = null, lease_expires_at = null, last_error = null
   where j.id = complete.job_id and j.status = 'running' and j.locked_by = complete.worker;
  return found;
end;
$$;

-- Returns 'retry' (back to queued, due after the backoff), 'failed' (that was the last
-- attempt), or null when the caller no longer holds the lease (nothing changed).
create function queue_pump.fail(
  job_id bigint,
  worker text,
  error text default null,
  retry_in_seconds double precision default null
) returns text
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  outcome text;
begin
  update queue_pump.jobs j
     set status = case when j.attempts >= j.max_attempts then 'failed' else 'queued' end,
         -- Default backoff: 10 s, 20 s, 40 s ... capped at 1 h.
         run_at = now() + make_interval(secs => least(greatest(coalesce(
           fail.retry_in_seconds, 10 * power(2, least(greatest(j.attempts - 1, 0), 20))), 0), 3600)),
         finished_at = case when j.attempts >= j.max_attempts then now() end,
         last_error = left(coalesce(fail.error, 'failed'), 2000),
         locked_by = null, lease_expires_at = null, updated_at = now()
   where j.id = fail.job_id and j.status = 'running' and j.locked_by = fail.worker
  returning case when j.status = 'failed' then 'failed' else 'retry' end into outcome;
  return outcome;
end;
$$;

-- A yield: the job goes back to queued with its progress saved, due again after run_in_seconds
-- (0 to 86400). Stopping early on purpose is not a failure, so the attempt is given back, for
-- up to max_free_yields yields of one job; past that each yield counts as a failed attempt, so
-- a handler that yields forever still ends `failed` after max_attempts.
-- Returns 'yielded', 'failed' (a counted yield on the last attempt), or null when the caller no
-- longer holds the lease (nothing changed).
create function queue_pump.requeue(
  job_id bigint,
  worker text,
  progress jsonb default null,
  run_in_seconds double precision default 0,
  max_free_yields integer default 100
) returns text
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  outcome text;
begin
  update queue_pump.jobs j
     set status = case when j.yields >= requeue.max_free_yields and j.attempts >= j.max_attempts
                       then 'failed' else 'queued' end,
         attempts = case when j.yields < requeue.max_free_yields
                         then greatest(j.attempts - 1, 0) else j.attempts end,
         yields = j.yields + 1,
         progress = coalesce(requeue.progress, j.progress),
         run_at = now() + make_interval(
           secs => least(greatest(coalesce(requeue.run_in_seconds, 0), 0), 86400)),
         finished_at = case when j.yields >= requeue.max_free_yields
                             and j.attempts >= j.max_attempts then now() end,
         last_error = case when j.yields >= requeue.max_free_yields
                           then 'yielded more than ' || requeue.max_free_yields || ' times'
                           else j.last_error end,
         locked_by = null, lease_expires_at = null, updated_at = now()
   where j.id = requeue.job_id and j.status = 'running' and j.locked_by = requeue.worker
  returning case when j.status = 'failed' then 'failed' else 'yielded' end into outcome;
  return outcome;
end;
$$;

-- observation and housekeeping ---------------------------------------------------------------

-- The jobs a call could claim now, each with the time since which it has waited: queued and
-- due (since run_at), or running with an expired lease below max_attempts (since the lease
-- ran out). The one definition of "due", read by stats and due_count; it reads only the
-- partial indexes of queued and running jobs, so it stays cheap at any table size.
create function queue_pump.due_since(
  organization_id text,
  queue text default 'agent'
) returns table (since timestamptz)
language sql
stable
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
  select x.run_at from queue_pump.jobs x
   where x.organization_id = due_since.organization_id and x.queue = due_since.queue
     and x.status = 'queued' and x.run_at <= now()
  union all
  select x.lease_expires_at from queue_pump.jobs x
   where x.organization_id = due_since.organization_id and x.queue = due_since.queue
     and x.status = 'running' and x.lease_expires_at < now()
     and x.attempts < x.max_attempts;
$$;

-- How many jobs a call could claim now: what an autoscaler (KEDA's postgresql trigger) polls.
create function queue_pump.due_count(
  organization_id text,
  queue text default 'agent'
) returns bigint
language sql
stable
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
  select count(*) from queue_pump.due_since(due_count.organization_id, due_count.queue);
$$;

create function queue_pump.stats(
  organization_id text,
  queue text default 'agent'
) returns table (
  queued bigint,
  running bigint,
  done bigint,
  failed bigint,
  due bigint,
  oldest_due_age_seconds double precision
)
language sql
stable
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
  with counts as (
    select
      count(*) filter (where j.status = 'queued') as queued,
      count(*) filter (where j.status = 'running') as running,
      count(*) filter (where j.status = 'done') as done,
      count(*) filter (where j.status = 'failed') as failed
    from queue_pump.jobs j
    where j.organization_id = stats.organization_id and j.queue = stats.queue
  ), due as (
    select count(*) as due, min(d.since) as since
      from queue_pump.due_since(stats.organization_id, stats.queue) d
  )
  select c.queued, c.running, c.done, c.failed, d.due,
         coalesce(extract(epoch from now() - d.since)::double precision, 0)
    from counts c, due d;
$$;

-- Deletes done and failed jobs that finished more than older_than ago, at most max_rows per
-- call (a short transaction, even on a large backlog); returns how many it deleted. Call it
-- until it returns less than max_rows, e.g. from pg_cron once an hour.
create function queue_pump.purge(
  older_than interval default interval '7 days',
  max_rows integer default 10000
) returns integer
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  deleted integer;
begin
  delete from queue_pump.jobs j
   where j.id in (select x.id from queue_pump.jobs x
                   where x.status in ('done', 'failed')
                     and x.finished_at < now() - purge.older_than
                   order by x.finished_at
                   limit greatest(purge.max_rows, 0)
                   for update skip locked);
  get diagnostics deleted = row_count;
  return deleted;
end;
$$;

-- Only the service role (the Edge Functions' and the server's database user) may call these.
revoke all on all functions in schema queue_pump from public;
-- Functions added to the schema later start with no EXECUTE for PUBLIC either.
alter default privileges in schema queue_pump revoke execute on functions from public;
do $$
begin
  execute 'revoke all on all functions in schema queue_pump from anon, authenticated';
  execute 'grant execute on all functions in schema queue_pump to service_role';
exception when undefined_object then
  raise notice 'queue_pump: roles anon/authenticated/service_role not found (not Supabase?)';
end $$;
