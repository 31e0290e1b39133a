-- queue-pump: see and steer (issue 22). Upgrades a deployed kit (20261128000000_queue_pump and
-- 20261206000000_hardening) in place: jobs already queued, running or finished keep working.
--
--   history    an append-only event history per job (queue_pump.job_events), written by the
--              functions themselves in the transaction that changes the job: enqueued, claimed,
--              progress, log, yielded, failed, lease_expired, cancel_requested, cancelled,
--              retried, completed. Bounded per job (200 events, 256 KiB; past that events are
--              dropped but those that end the job, and one `dropped` event says how many). Its
--              counters live on the job's row, so writing an event never reads the history, and
--              the claim never does. It goes with its job (a trigger on delete).
--   cancelled  a new status. A queued job cancelled ends at once; a running one gets
--              cancel_requested, which the runner sees at the handler's next heartbeat, by its
--              own poll, or at completion, and which ends the job `cancelled`, never retried
--              (also when its lease runs out).
--   heartbeat  heartbeat_at: the claim, each heartbeat. Hung jobs are running ones without a
--              heartbeat for a while, which lease expiry does not show.
--   operator   list (filters, newest first, keyset pages of at most 500), one job in full,
--              its history, cancel, retry one, retry failed jobs in bulk and hung jobs, purge of
--              ONE organization with a dry run, and a summary; every one scoped to one
--              organization: no function here reveals another's jobs or counts. The `jobs`
--              Edge Function serves them (docs/OPERATOR_API.md).
--
-- Applies on a plain PostgreSQL 15+ with Supabase's roles anon, authenticated and service_role.

-- columns and status --------------------------------------------------------------------------

-- Constant defaults: no table rewrite on a deployed kit.
alter table queue_pump.jobs
  add column heartbeat_at timestamptz,
  add column cancel_requested boolean not null default false,
  -- The history's bound, kept on the row: events written (the last seq), their bytes, and how
  -- many were dropped.
  add column history_events integer not null default 0,
  add column history_bytes integer not null default 0,
  add column history_dropped integer not null default 0;

alter table queue_pump.jobs drop constraint jobs_status_check;
-- NOT VALID: every row already there satisfies it (it only widens the old check); enforced on
-- every write from now on without a scan under this migration's lock.
alter table queue_pump.jobs add constraint jobs_status_check
  check (status in ('queued', 'running', 'done', 'failed', 'cancelled')) not valid;

-- indexes -------------------------------------------------------------------------------------

-- The list, newest first, page after page (keyset: the 1,000th page costs what the first does).
create index jobs_list_idx on queue_pump.jobs (organization_id, created_at, id);
-- Finished jobs by age, per organization: the operator's purge and the summary's last hour.
create index jobs_org_finished_idx on queue_pump.jobs (organization_id, finished_at)
  where status in ('done', 'failed', 'cancelled');
-- Failed jobs by when they failed: bulk retry and the newest failures. Sized by failures.
create index jobs_failed_idx on queue_pump.jobs (organization_id, finished_at, id)
  where status = 'failed';
-- The scheduled global purge walks every finished job by age, cancelled ones too.
create index jobs_finished_any_idx on queue_pump.jobs (finished_at)
  where status in ('done', 'failed', 'cancelled');
drop index queue_pump.jobs_finished_idx;
alter index queue_pump.jobs_finished_any_idx rename to jobs_finished_idx;

-- history -------------------------------------------------------------------------------------

create table queue_pump.job_events (
  job_id   bigint      not null,
  seq      integer     not null,
  at       timestamptz not null default clock_timestamp(),
  kind     text        not null,
  attempt  integer,
  worker   text,
  message  text,
  data     jsonb,
  primary key (job_id, seq)
);
comment on table queue_pump.job_events is
  'queue-pump job histories, written by the queue_pump.* functions; read with job_history.';
-- No foreign key: its check would read (and lock) the job's row on every event, in the claim
-- too. The events go with their job by this trigger instead, whoever deletes it.
alter table queue_pump.job_events enable row level security;
revoke all on queue_pump.job_events from public;
do $$
begin
  execute 'revoke all on table queue_pump.job_events from anon, authenticated, service_role';
exception when undefined_object then
  raise notice 'queue_pump: roles anon/authenticated/service_role not found (not Supabase?)';
end $$;

create function queue_pump.forget_history() returns trigger
language plpgsql
as $$
begin
  delete from queue_pump.job_events e where e.job_id in (select o.id from gone o);
  return null;
end;
$$;

create trigger jobs_forget_history after delete on queue_pump.jobs
  referencing old table as gone
  for each statement execute function queue_pump.forget_history();

-- The bound. Plain SQL constants, folded by the planner.
create function queue_pump.max_events() returns integer
language sql immutable parallel safe as $$ select 200 $$;
create function queue_pump.max_event_bytes() returns integer
language sql immutable parallel safe as $$ select 262144 $$;

-- One line of at most 2,000 characters.
create function queue_pump.clip_message(message text) returns text
language sql immutable parallel safe
as $$ select left(regexp_replace(clip_message.message, '\s+', ' ', 'g'), 2000) $$;

-- Data of at most 2 KiB of JSON; larger, a clipped text of it.
create function queue_pump.clip_data(data jsonb) returns jsonb
language sql immutable parallel safe
as $$
  select case when clip_data.data is null or octet_length(clip_data.data::text) <= 2048
              then clip_data.data
              else jsonb_build_object('clipped', left(clip_data.data::text, 1900)) end
$$;

-- Appends one event to a job's history, or counts it dropped. The caller holds the job's row
-- (it has just updated it). Runs as its caller: inside the functions below, the owner; called
-- directly by service_role, it has no right to the tables and fails.
create function queue_pump.add_event(
  job_id bigint,
  kind text,
  attempt integer default null,
  worker text default null,
  message text default null,
  data jsonb default null
) returns void
language plpgsql
as $$
declare
  m text := queue_pump.clip_message(add_event.message);
  d jsonb := queue_pump.clip_data(add_event.data);
  w text := left(add_event.worker, 200);
  cost integer := octet_length(add_event.kind) + coalesce(octet_length(w), 0)
                  + coalesce(octet_length(m), 0) + coalesce(octet_length(d::text), 0);
  ending boolean := add_event.kind in ('completed', 'cancelled')
                    or (add_event.kind = 'failed' and coalesce((add_event.data ->> 'final')::boolean, false));
  n integer;
  b integer;
  dropped integer;
begin
  select j.history_events, j.history_bytes, j.history_dropped into n, b, dropped
    from queue_pump.jobs j where j.id = add_event.job_id;
  if not found then
    return;
  end if;
  if (n < queue_pump.max_events() and b + cost <= queue_pump.max_event_bytes())
     or (ending and n < queue_pump.max_events() + 20) then
    update queue_pump.jobs j set history_events = n + 1, history_bytes = b + cost
     where j.id = add_event.job_id;
    insert into queue_pump.job_events (job_id, seq, kind, attempt, worker, message, data)
    values (add_event.job_id, n + 1, add_event.kind, add_event.attempt, w, m, d);
    return;
  end if;
  -- Full: the first event dropped is said once; later ones only count.
  if dropped = 0 then
    update queue_pump.jobs j set history_events = n + 1, history_dropped = 1
     where j.id = add_event.job_id;
    insert into queue_pump.job_events (job_id, seq, kind, data)
    values (add_event.job_id, n + 1, 'dropped', jsonb_build_object('dropped', 1));
  else
    update queue_pump.jobs j set history_dropped = dropped + 1 where j.id = add_event.job_id;
    update queue_pump.job_events e set data = jsonb_build_object('dropped', dropped + 1)
     where e.job_id = add_event.job_id and e.kind = 'dropped';
  end if;
end;
$$;

-- JSON as the operator API writes it ---------------------------------------------------------

create function queue_pump.iso(at timestamptz) returns text
language sql stable parallel safe
as $$ select to_char(iso.at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

-- A job (docs/OPERATOR_API.md §3); `full` adds payload, progress and result.
create function queue_pump.job_json(j queue_pump.jobs, full boolean default false) returns jsonb
language sql stable parallel safe
as $$
  select jsonb_build_object(
    'id', j.id, 'queue', j.queue, 'type', j.job_type, 'status', j.status,
    'attempts', j.attempts, 'maxAttempts', j.max_attempts,
    'runAt', queue_pump.iso(j.run_at), 'createdAt', queue_pump.iso(j.created_at),
    'updatedAt', queue_pump.iso(j.updated_at), 'startedAt', queue_pump.iso(j.started_at),
    'finishedAt', queue_pump.iso(j.finished_at), 'heartbeatAt', queue_pump.iso(j.heartbeat_at),
    'leaseExpiresAt', queue_pump.iso(j.lease_expires_at), 'lockedBy', j.locked_by,
    'dedupeKey', j.dedupe_key, 'lastError', j.last_error, 'cancelRequested', j.cancel_requested)
  || case when job_json.full then jsonb_build_object('payload', j.payload, 'progress', j.progress,
                                            'result', j.result)
          else '{}'::jsonb end
$$;

create function queue_pump.event_json(e queue_pump.job_events) returns jsonb
language sql stable parallel safe
as $$
  select jsonb_build_object('seq', e.seq, 'at', queue_pump.iso(e.at), 'kind', e.kind,
                            'attempt', e.attempt, 'worker', e.worker, 'message', e.message,
                            'data', coalesce(e.data, '{}'::jsonb))
$$;

create function queue_pump.check_org(fn text, organization_id text) returns void
language plpgsql immutable
as $$
begin
  perform queue_pump.check_text(fn, 'organization_id', organization_id, 1, 200);
end;
$$;

-- enqueue ------------------------------------------------------------------------------------

-- enqueue_job, saying who added the job (`by`: sql, enqueue, operator) in its first event.
create function queue_pump.add_job(
  organization_id text,
  queue text,
  job_type text,
  payload jsonb default '{}'::jsonb,
  dedupe_key text default null,
  run_at timestamptz default null,
  max_attempts integer default 5,
  by text default 'sql'
) returns table (id bigint, created boolean)
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
#variable_conflict use_column
declare
  q text := coalesce(add_job.queue, 'agent');
  payload_text text := coalesce(add_job.payload, '{}'::jsonb)::text;
  who text := coalesce(add_job.by, 'sql');
  first_data jsonb := jsonb_build_object('by', who);
  cost integer := octet_length('enqueued') + octet_length(first_data::text);
  new_id bigint;
begin
  perform queue_pump.check_text('enqueue', 'organization_id', add_job.organization_id, 1, 200);
  perform queue_pump.check_text('enqueue', 'queue', q, 1, 100);
  perform queue_pump.check_text('enqueue', 'job_type', add_job.job_type, 1, 200);
  perform queue_pump.check_text('enqueue', 'by', who, 1, 40);
  if add_job.dedupe_key is not null then
    perform queue_pump.check_text('enqueue', 'dedupe_key', add_job.dedupe_key, 1, 500);
  end if;
  if octet_length(payload_text) > queue_pump.max_json_bytes() or payload_text ~ '[0-9.]{16}' then
    perform queue_pump.check_json('enqueue', 'payload', add_job.payload);
  end if;
  perform queue_pump.check_run_at('enqueue', add_job.run_at);
  if add_job.max_attempts is not null
     and (add_job.max_attempts < 1 or add_job.max_attempts > 1000) then
    raise exception 'queue_pump.enqueue: max_attempts must be between 1 and 1000, got %',
      add_job.max_attempts using errcode = '22023';
  end if;

  -- As enqueue_job (the hardening migration): a key freed by a purge between the insert and
  -- the look-up makes another round.
  for tries in 1..10 loop
    insert into queue_pump.jobs as j
      (organization_id, queue, job_type, payload, payload_bytes, dedupe_key, run_at,
       max_attempts, history_events, history_bytes)
    values (
      add_job.organization_id, q, add_job.job_type,
      coalesce(add_job.payload, '{}'::jsonb), octet_length(payload_text), add_job.dedupe_key,
      coalesce(add_job.run_at, now()), coalesce(add_job.max_attempts, 5), 1, cost
    )
    on conflict (organization_id, queue, dedupe_key) where dedupe_key is not null do nothing
    returning j.id into new_id;

    if new_id is not null then
      insert into queue_pump.job_events (job_id, seq, kind, data)
      values (new_id, 1, 'enqueued', first_data);
      return query select new_id, true;
      return;
    end if;
    return query
      select j.id, false from queue_pump.jobs j
       where j.organization_id = add_job.organization_id
         and j.queue = q
         and j.dedupe_key = add_job.dedupe_key;
    if found then
      return;
    end if;
  end loop;
  raise exception 'queue_pump.enqueue: dedupe_key % was taken and freed 10 times in a row',
    left(add_job.dedupe_key, 100) using errcode = '40001';
end;
$$;

create or replace function queue_pump.enqueue_job(
  organization_id text,
  queue text,
  job_type text,
  payload jsonb default '{}'::jsonb,
  dedupe_key text default null,
  run_at timestamptz default null,
  max_attempts integer default 5
) returns table (id bigint, created boolean)
language sql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
  select a.id, a.created from queue_pump.add_job(
    organization_id => enqueue_job.organization_id, queue => enqueue_job.queue,
    job_type => enqueue_job.job_type, payload => enqueue_job.payload,
    dedupe_key => enqueue_job.dedupe_key, run_at => enqueue_job.run_at,
    max_attempts => enqueue_job.max_attempts, by => 'sql') a;
$$;

-- claim --------------------------------------------------------------------------------------

create or replace function queue_pump.claim(
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
  max_bytes integer := queue_pump.max_json_bytes();
  claimed queue_pump.jobs;
  dead record;
  lost_worker text;
  lost_attempt integer;
  why text;
  n integer;
  b integer;
  cost integer;
  folded boolean;
begin
  -- The same words as heartbeat's.
  if claim.lease_seconds is null or claim.lease_seconds < 1 or claim.lease_seconds > 86400 then
    raise exception 'queue_pump.claim: lease_seconds must be between 1 and 86400, got %',
      coalesce(claim.lease_seconds::text, 'null') using errcode = '22023';
  end if;

  -- A running job whose lease ran out lost its worker. If that was its last attempt it ends
  -- failed here, and if an operator asked to cancel it, cancelled (at most 100 a call, so one
  -- claim stays short; the rest on later calls). Rare: the loop below is usually empty.
  for dead in
    select x.id, x.locked_by, x.attempts, x.cancel_requested from queue_pump.jobs x
     where x.organization_id = claim.organization_id and x.queue = q
       and x.status = 'running' and x.lease_expires_at < now()
       and (x.attempts >= x.max_attempts or x.cancel_requested)
     limit 100
     for update skip locked
  loop
    update queue_pump.jobs j
       set status = case when dead.cancel_requested then 'cancelled' else 'failed' end,
           finished_at = now(), updated_at = now(), locked_by = null, lease_expires_at = null,
           last_error = case when dead.cancel_requested then j.last_error
                             else 'lease expired on the last attempt (worker lost)' end
     where j.id = dead.id;
    perform queue_pump.add_event(dead.id, 'lease_expired', dead.attempts, dead.locked_by);
    if dead.cancel_requested then
      perform queue_pump.add_event(dead.id, 'cancelled', dead.attempts, dead.locked_by,
                                   'cancelled while running: an operator asked (the lease ran out)');
    else
      perform queue_pump.add_event(dead.id, 'failed', dead.attempts, dead.locked_by,
                                   'lease expired on the last attempt (worker lost)',
                                   jsonb_build_object('final', true));
    end if;
  end loop;

  -- A job too big to hand out (stored before the limit, or written around the functions) ends
  -- failed without being sent: one such payload took a runner's memory for every caller.
  for tries in 1..10 loop
    lost_worker := null;
    -- Picking: the rules of which job comes next, each a read of a partial index of live
    -- work. An expired lease first: that job has waited since its lease ran out. Then the
    -- oldest due queued job with an attempt left.
    select x.id, x.locked_by, x.attempts into job_id, lost_worker, lost_attempt
      from queue_pump.jobs x
     where x.organization_id = claim.organization_id and x.queue = q
       and x.status = 'running' and x.lease_expires_at < now()
       and x.attempts < x.max_attempts and not x.cancel_requested
     order by x.lease_expires_at
     limit 1
     for update skip locked;
    if job_id is null then
      select x.id, x.history_events, x.history_bytes into job_id, n, b from queue_pump.jobs x
       where x.organization_id = claim.organization_id and x.queue = q
         and x.status = 'queued' and x.run_at <= now()
         and x.attempts < x.max_attempts        -- never more runs than max_attempts
       order by x.run_at, x.created_at, x.id
       limit 1
       for update skip locked;
    end if;
    if job_id is null then
      return;
    end if;

    -- The `claimed` event's counters go into the claim's own update when it fits (the usual
    -- case), so that a claim writes its job's row once; the picking read them with the row.
    cost := octet_length('claimed') + octet_length(left(holder, 200));
    folded := lost_worker is null and n < queue_pump.max_events()
              and b + cost <= queue_pump.max_event_bytes();

    -- Starting: the lease, and the attempt counted.
    update queue_pump.jobs j
       set status = 'running',
           attempts = j.attempts + 1,
           locked_by = holder,
           lease_expires_at = now() + make_interval(secs => claim.lease_seconds),
           started_at = now(),
           heartbeat_at = now(),
           updated_at = now(),
           history_events = case when folded then j.history_events + 1 else j.history_events end,
           history_bytes = case when folded then j.history_bytes + cost else j.history_bytes end
     where j.id = job_id
       and coalesce(j.payload_bytes, octet_length(j.payload::text)) <= max_bytes
       and coalesce(octet_length(j.progress::text), 0) <= max_bytes
    returning j.* into claimed;
    if found then
      if lost_worker is not null then
        perform queue_pump.add_event(job_id, 'lease_expired', lost_attempt, lost_worker);
      end if;
      if folded then
        insert into queue_pump.job_events (job_id, seq, kind, attempt, worker)
        values (job_id, claimed.history_events, 'claimed', claimed.attempts, left(holder, 200));
      else
        perform queue_pump.add_event(job_id, 'claimed', claimed.attempts, holder);
      end if;
      return next claimed;
      return;
    end if;
    update queue_pump.jobs j
       set status = 'failed', finished_at = now(), updated_at = now(),
           locked_by = null, lease_expires_at = null,
           last_error = 'not run: its ' || coalesce('payload ' || queue_pump.json_problem(j.payload, false),
                                                    'progress ' || queue_pump.json_problem(j.progress, false))
     where j.id = job_id
    returning j.last_error into why;
    perform queue_pump.add_event(job_id, 'failed', null, null, why,
                                 jsonb_build_object('final', true));
    job_id := null;
  end loop;
end;
$$;

-- lease holders ------------------------------------------------------------------------------

-- A heartbeat that also says whether an operator asked to cancel the job: the lease's new end
-- and cancel_requested, or no row when the caller no longer holds the lease. Progress, when
-- given, is saved and recorded (a `progress` event, clipped to 2 KiB).
create function queue_pump.heartbeat_job(
  job_id bigint,
  worker text,
  lease_seconds integer default 600,
  progress jsonb default null
) returns table (lease_expires_at timestamptz, cancel_requested boolean)
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  until timestamptz;
  cancel boolean;
  attempt integer;
begin
  if heartbeat_job.lease_seconds is null or heartbeat_job.lease_seconds < 1
     or heartbeat_job.lease_seconds > 86400 then
    raise exception 'queue_pump.heartbeat: lease_seconds must be between 1 and 86400, got %',
      coalesce(heartbeat_job.lease_seconds::text, 'null') using errcode = '22023';
  end if;
  perform queue_pump.check_json('heartbeat', 'progress', heartbeat_job.progress);
  update queue_pump.jobs j
     set lease_expires_at = now() + make_interval(secs => heartbeat_job.lease_seconds),
         progress = coalesce(heartbeat_job.progress, j.progress),
         heartbeat_at = now(),
         updated_at = now()
   where j.id = heartbeat_job.job_id and j.status = 'running' and j.locked_by = heartbeat_job.worker
  returning j.lease_expires_at, j.cancel_requested, j.attempts into until, cancel, attempt;
  if not found then
    return;
  end if;
  if heartbeat_job.progress is not null then
    perform queue_pump.add_event(heartbeat_job.job_id, 'progress', attempt, heartbeat_job.worker,
                                 null, jsonb_build_object('progress', heartbeat_job.progress));
  end if;
  return query select until, cancel;
end;
$$;

create or replace function queue_pump.heartbeat(
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
  select h.lease_expires_at from queue_pump.heartbeat_job(
    heartbeat.job_id, heartbeat.worker, heartbeat.lease_seconds, heartbeat.progress) h;
$$;

-- Whether the caller's run should stop: true when an operator asked to cancel the job, false
-- when not, null when the caller no longer holds it. The runner polls this while a handler
-- runs (a read of one row by its key; no heartbeat: a stuck handler stays hung).
create function queue_pump.cancel_requested(job_id bigint, worker text) returns boolean
language sql
stable
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
  select j.cancel_requested from queue_pump.jobs j
   where j.id = cancel_requested.job_id and j.status = 'running'
     and j.locked_by = cancel_requested.worker;
$$;

-- A line of the handler's own (ctx.log), into the history; false when the caller no longer
-- holds the job. Bounded by the history's bound like every event.
create function queue_pump.job_log(
  job_id bigint,
  worker text,
  message text,
  data jsonb default null
) returns boolean
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  attempt integer;
begin
  select j.attempts into attempt from queue_pump.jobs j
   where j.id = job_log.job_id and j.status = 'running' and j.locked_by = job_log.worker
   for no key update;
  if not found then
    return false;
  end if;
  perform queue_pump.add_event(job_log.job_id, 'log', attempt, job_log.worker,
                               coalesce(job_log.message, ''), job_log.data);
  return true;
end;
$$;

-- Finishes a run that succeeded: 'done', or 'cancelled' when an operator asked to cancel it
-- meanwhile (its result is kept, the job is not retried); null when the caller no longer
-- holds the lease (nothing changed).
create function queue_pump.complete_job(
  job_id bigint,
  worker text,
  result jsonb default null
) returns text
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  outcome text;
  attempt integer;
  n integer;
  b integer;
  cancel boolean;
  cost integer := octet_length('completed') + octet_length(left(complete_job.worker, 200));
  folded boolean;
begin
  -- A result is stored, never handed to a handler: its size is checked, not its numbers.
  if octet_length(complete_job.result::text) > queue_pump.max_json_bytes() then
    perform queue_pump.check_json('complete', 'result', complete_job.result, false);
  end if;
  -- The row, locked, with its history's counters: the `completed` event's go into the one
  -- update below (as the claim's do), so that finishing a job writes its row once.
  select j.history_events, j.history_bytes, j.cancel_requested into n, b, cancel
    from queue_pump.jobs j
   where j.id = complete_job.job_id and j.status = 'running' and j.locked_by = complete_job.worker
   for update;
  if not found then
    return null;
  end if;
  -- An ending is kept past the bound, up to 20 events more (add_event's rule).
  folded := not cancel and n < queue_pump.max_events() + 20;
  update queue_pump.jobs j
     set status = case when j.cancel_requested then 'cancelled' else 'done' end,
         result = complete_job.result, finished_at = now(), updated_at = now(),
         locked_by = null, lease_expires_at = null,
         last_error = case when j.cancel_requested then j.last_error end,
         history_events = case when folded then n + 1 else j.history_events end,
         history_bytes = case when folded then b + cost else j.history_bytes end
   where j.id = complete_job.job_id
  returning j.status, j.attempts into outcome, attempt;
  if folded then
    insert into queue_pump.job_events (job_id, seq, kind, attempt, worker)
    values (complete_job.job_id, n + 1, 'completed', attempt, left(complete_job.worker, 200));
  elsif outcome = 'done' then
    perform queue_pump.add_event(complete_job.job_id, 'completed', attempt, complete_job.worker);
  else
    perform queue_pump.add_event(complete_job.job_id, 'cancelled', attempt, complete_job.worker,
                                 'cancelled while running: an operator asked (the run ended)');
  end if;
  return outcome;
end;
$$;

create or replace function queue_pump.complete(
  job_id bigint,
  worker text,
  result jsonb default null
) returns boolean
language sql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
  -- True when the job ended done (a cancelled one is not: the caller's run was stopped).
  select coalesce(queue_pump.complete_job(complete.job_id, complete.worker, complete.result) = 'done',
                  false);
$$;

-- Returns 'retry' (back to queued, due after the backoff), 'failed' (that was the last
-- attempt), 'cancelled' (an operator asked to cancel it: never retried), or null when the
-- caller no longer holds the lease (nothing changed).
create or replace function queue_pump.fail(
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
  attempt integer;
  due timestamptz;
  message text := left(coalesce(fail.error, 'failed'), 2000);
begin
  update queue_pump.jobs j
     set status = case when j.cancel_requested then 'cancelled'
                       when j.attempts >= j.max_attempts then 'failed' else 'queued' end,
         -- Default backoff: 10 s, 20 s, 40 s ... capped at 1 h.
         run_at = case when j.cancel_requested then j.run_at else now() + make_interval(
           secs => least(greatest(coalesce(fail.retry_in_seconds,
                                           10 * power(2, least(greatest(j.attempts - 1, 0), 20))), 0), 3600)) end,
         finished_at = case when j.cancel_requested or j.attempts >= j.max_attempts then now() end,
         last_error = message,
         locked_by = null, lease_expires_at = null, updated_at = now()
   where j.id = fail.job_id and j.status = 'running' and j.locked_by = fail.worker
  returning j.status, j.attempts, j.run_at into outcome, attempt, due;
  if outcome is null then
    return null;
  end if;
  if outcome = 'cancelled' then
    perform queue_pump.add_event(fail.job_id, 'cancelled', attempt, fail.worker,
                                 'cancelled while running: an operator asked (the run ended: ' || message || ')');
    return 'cancelled';
  end if;
  perform queue_pump.add_event(fail.job_id, 'failed', attempt, fail.worker, message,
    case when outcome = 'failed' then jsonb_build_object('final', true)
         else jsonb_build_object('retryAt', queue_pump.iso(due)) end);
  return case when outcome = 'failed' then 'failed' else 'retry' end;
end;
$$;

-- A yield (the hardening migration's rules), recorded; 'cancelled' when an operator asked to
-- cancel the job meanwhile.
create or replace function queue_pump.requeue(
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
  attempt integer;
  due timestamptz;
  why text;
begin
  if requeue.max_free_yields is null or requeue.max_free_yields < 0
     or requeue.max_free_yields > 1000000 then
    raise exception 'queue_pump.requeue: max_free_yields must be between 0 and 1000000, got %',
      coalesce(requeue.max_free_yields::text, 'null') using errcode = '22023';
  end if;
  perform queue_pump.check_json('requeue', 'progress', requeue.progress);
  update queue_pump.jobs j
     set status = case when j.cancel_requested then 'cancelled'
                       when j.yields >= requeue.max_free_yields and j.attempts >= j.max_attempts
                       then 'failed' else 'queued' end,
         attempts = case when j.yields < requeue.max_free_yields and not j.cancel_requested
                         then greatest(j.attempts - 1, 0) else j.attempts end,
         yields = j.yields + 1,
         progress = coalesce(requeue.progress, j.progress),
         run_at = now() + make_interval(
           secs => least(greatest(coalesce(requeue.run_in_seconds, 0), 0), 86400)),
         finished_at = case when j.cancel_requested
                             or (j.yields >= requeue.max_free_yields and j.attempts >= j.max_attempts)
                            then now() end,
         last_error = case when not j.cancel_requested and j.yields >= requeue.max_free_yields
                           then 'yielded more than ' || requeue.max_free_yields || ' times'
                           else j.last_error end,
         locked_by = null, lease_expires_at = null, updated_at = now()
   where j.id = requeue.job_id and j.status = 'running' and j.locked_by = requeue.worker
  returning j.status, j.attempts, j.run_at, j.last_error into outcome, attempt, due, why;
  if outcome is null then
    return null;
  elsif outcome = 'cancelled' then
    perform queue_pump.add_event(requeue.job_id, 'cancelled', attempt, requeue.worker,
                                 'cancelled while running: an operator asked (the run yielded)');
    return 'cancelled';
  elsif outcome = 'failed' then
    perform queue_pump.add_event(requeue.job_id, 'failed', attempt, requeue.worker, why,
                                 jsonb_build_object('final', true));
    return 'failed';
  end if;
  perform queue_pump.add_event(requeue.job_id, 'yielded', attempt, requeue.worker, null,
                               jsonb_build_object('runAt', queue_pump.iso(due)));
  return 'yielded';
end;
$$;

-- observation ---------------------------------------------------------------------------------

-- A running job with a cancel request is not due again when its lease runs out: the claim
-- ends it cancelled.
create or replace function queue_pump.due_since(
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
     and x.attempts < x.max_attempts and not x.cancel_requested;
$$;

-- the operator's side (docs/OPERATOR_API.md) ------------------------------------------------

-- One page of the organization's jobs, newest first (created_at, then id); filters are
-- optional. `after_created`/`after_id`: the last job of the previous page. Returns at most
-- `max_rows` (1-501: the API asks one more than a page to know whether another follows).
create function queue_pump.list_jobs(
  organization_id text,
  statuses text[] default null,
  job_type text default null,
  queue text default null,
  since timestamptz default null,
  until timestamptz default null,
  after_created timestamptz default null,
  after_id bigint default null,
  max_rows integer default 51
) returns setof jsonb
language plpgsql
stable
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  clauses text := 'j.organization_id = $1';
begin
  perform queue_pump.check_org('list_jobs', list_jobs.organization_id);
  if list_jobs.max_rows is null or list_jobs.max_rows < 1 or list_jobs.max_rows > 501 then
    raise exception 'queue_pump.list_jobs: max_rows must be between 1 and 501, got %',
      coalesce(list_jobs.max_rows::text, 'null') using errcode = '22023';
  end if;
  if list_jobs.statuses is not null then
    if cardinality(list_jobs.statuses) = 0 or not list_jobs.statuses <@
       array['queued', 'running', 'done', 'failed', 'cancelled'] then
      raise exception 'queue_pump.list_jobs: statuses must be some of queued, running, done, failed, cancelled'
        using errcode = '22023';
    end if;
    clauses := clauses || ' and j.status = any($2)';
  end if;
  if (list_jobs.after_created is null) <> (list_jobs.after_id is null) then
    raise exception 'queue_pump.list_jobs: after_created and after_id go together'
      using errcode = '22023';
  end if;
  -- Only the filters given are in the query, so each shape gets the plan that fits it.
  if list_jobs.job_type is not null then clauses := clauses || ' and j.job_type = $3'; end if;
  if list_jobs.queue is not null then clauses := clauses || ' and j.queue = $4'; end if;
  if list_jobs.since is not null then clauses := clauses || ' and j.created_at >= $5'; end if;
  if list_jobs.until is not null then clauses := clauses || ' and j.created_at < $6'; end if;
  if list_jobs.after_created is not null then
    clauses := clauses || ' and j.created_at <= $7 and (j.created_at < $7 or j.id < $8)';
  end if;
  return query execute
    'select queue_pump.job_json(j) from queue_pump.jobs j where ' || clauses
    || ' order by j.created_at desc, j.id desc limit $9'
    using list_jobs.organization_id, list_jobs.statuses, list_jobs.job_type, list_jobs.queue,
          list_jobs.since, list_jobs.until, list_jobs.after_created, list_jobs.after_id,
          list_jobs.max_rows;
end;
$$;

-- One job in full, with its history (at most 500 events, oldest first); null when the
-- organization has no such job.
create function queue_pump.job_detail(organization_id text, job_id bigint) returns jsonb
language sql
stable
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
  select queue_pump.job_json(j, true) || jsonb_build_object('history', coalesce((
           select jsonb_agg(queue_pump.event_json(e) order by e.seq)
             from (select * from queue_pump.job_events e
                    where e.job_id = j.id order by e.seq limit 500) e), '[]'::jsonb))
    from queue_pump.jobs j
   where j.id = job_detail.job_id and j.organization_id = job_detail.organization_id;
$$;

-- A job's events after `after`, oldest first: {"events": [...], "job": {"id", "status"}}; null
-- when the organization has no such job.
create function queue_pump.job_history(
  organization_id text,
  job_id bigint,
  after integer default 0,
  max_rows integer default 500
) returns jsonb
language plpgsql
stable
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  found_status text;
begin
  if job_history.max_rows is null or job_history.max_rows < 1 or job_history.max_rows > 500 then
    raise exception 'queue_pump.job_history: max_rows must be between 1 and 500, got %',
      coalesce(job_history.max_rows::text, 'null') using errcode = '22023';
  end if;
  select j.status into found_status from queue_pump.jobs j
   where j.id = job_history.job_id and j.organization_id = job_history.organization_id;
  if not found then
    return null;
  end if;
  return jsonb_build_object(
    'events', coalesce((select jsonb_agg(queue_pump.event_json(e) order by e.seq)
                          from (select * from queue_pump.job_events e
                                 where e.job_id = job_history.job_id
                                   and e.seq > coalesce(job_history.after, 0)
                                 order by e.seq limit job_history.max_rows) e), '[]'::jsonb),
    'job', jsonb_build_object('id', job_history.job_id, 'status', found_status));
end;
$$;

-- Cancels one job held by the caller's row lock. 'cancelled' (it was queued: ended now),
-- 'requested' (running: the runner stops it), 'unchanged' (already cancelled, or already
-- asked), or the job's status when cancelling does not apply (done, failed).
create function queue_pump.cancel_one(j queue_pump.jobs, by text) returns text
language plpgsql
as $$
begin
  if j.status = 'queued' then
    update queue_pump.jobs x
       set status = 'cancelled', finished_at = now(), updated_at = now()
     where x.id = j.id;
    perform queue_pump.add_event(j.id, 'cancelled', null, null,
                                 'cancelled while queued (by ' || cancel_one.by || ')');
    return 'cancelled';
  elsif j.status = 'running' then
    if j.cancel_requested then
      return 'unchanged';
    end if;
    update queue_pump.jobs x set cancel_requested = true, updated_at = now() where x.id = j.id;
    perform queue_pump.add_event(j.id, 'cancel_requested', j.attempts, j.locked_by, null,
                                 jsonb_build_object('by', cancel_one.by));
    return 'requested';
  elsif j.status = 'cancelled' then
    return 'unchanged';
  end if;
  return j.status;
end;
$$;

-- Cancel one job of the organization (docs/OPERATOR_API.md §7): the outcome as cancel_one
-- gives it and the job as it is now, or no row when the organization has no such job.
create function queue_pump.cancel(
  organization_id text,
  job_id bigint,
  by text default 'operator'
) returns table (outcome text, job jsonb)
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  j queue_pump.jobs;
  answer text;
begin
  perform queue_pump.check_text('cancel', 'by', cancel.by, 1, 40);
  select * into j from queue_pump.jobs x
   where x.id = cancel.job_id and x.organization_id = cancel.organization_id
   for update;
  if not found then
    return;
  end if;
  answer := queue_pump.cancel_one(j, cancel.by);
  return query select answer, queue_pump.job_json(x) from queue_pump.jobs x where x.id = j.id;
end;
$$;

-- Back to queued, due now, attempts 0, its error and cancel request cleared, a `retried` event.
create function queue_pump.retry_one(job_id bigint, data jsonb) returns void
language plpgsql
as $$
begin
  update queue_pump.jobs x
     set status = 'queued', attempts = 0, run_at = now(), updated_at = now(),
         started_at = null, finished_at = null, heartbeat_at = null, locked_by = null,
         lease_expires_at = null, last_error = null, cancel_requested = false, result = null
   where x.id = retry_one.job_id;
  perform queue_pump.add_event(retry_one.job_id, 'retried', null, null, null, retry_one.data);
end;
$$;

-- Retry one failed or cancelled job: 'retried' and the job, the job's status (and the job)
-- when retrying does not apply, or no row when the organization has no such job.
create function queue_pump.retry(
  organization_id text,
  job_id bigint,
  by text default 'operator'
) returns table (outcome text, job jsonb)
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  j queue_pump.jobs;
  answer text := 'retried';
begin
  perform queue_pump.check_text('retry', 'by', retry.by, 1, 40);
  select * into j from queue_pump.jobs x
   where x.id = retry.job_id and x.organization_id = retry.organization_id
   for update;
  if not found then
    return;
  end if;
  if j.status in ('failed', 'cancelled') then
    perform queue_pump.retry_one(j.id, jsonb_build_object('by', retry.by, 'bulk', false));
  else
    answer := j.status;
  end if;
  return query select answer, queue_pump.job_json(x) from queue_pump.jobs x where x.id = j.id;
end;
$$;

-- Retry every failed job of the organization matching the filters (all optional; since
-- inclusive and until exclusive, on when it failed), at most max_rows a call, oldest failure
-- first. A dry run counts what the same call would retry now.
create function queue_pump.retry_failed(
  organization_id text,
  job_type text default null,
  queue text default null,
  since timestamptz default null,
  until timestamptz default null,
  dry_run boolean default false,
  by text default 'operator',
  max_rows integer default 10000
) returns table (matched integer, retried integer, more boolean)
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  ids bigint[];
  n integer;
begin
  perform queue_pump.check_org('retry_failed', retry_failed.organization_id);
  perform queue_pump.check_text('retry_failed', 'by', retry_failed.by, 1, 40);
  if retry_failed.max_rows is null or retry_failed.max_rows < 1 or retry_failed.max_rows > 10000 then
    raise exception 'queue_pump.retry_failed: max_rows must be between 1 and 10000, got %',
      coalesce(retry_failed.max_rows::text, 'null') using errcode = '22023';
  end if;
  select array_agg(x.id order by x.finished_at, x.id) into ids from (
    select f.id, f.finished_at from queue_pump.jobs f
     where f.organization_id = retry_failed.organization_id and f.status = 'failed'
       and (retry_failed.job_type is null or f.job_type = retry_failed.job_type)
       and (retry_failed.queue is null or f.queue = retry_failed.queue)
       and (retry_failed.since is null or f.finished_at >= retry_failed.since)
       and (retry_failed.until is null or f.finished_at < retry_failed.until)
     order by f.finished_at, f.id
     limit retry_failed.max_rows + 1
     for update) x;
  n := coalesce(cardinality(ids), 0);
  matched := least(n, retry_failed.max_rows);
  more := n > retry_failed.max_rows;
  retried := 0;
  if not retry_failed.dry_run then
    for i in 1..matched loop
      perform queue_pump.retry_one(ids[i], jsonb_build_object('by', retry_failed.by, 'bulk', true));
    end loop;
    retried := matched;
  end if;
  return next;
end;
$$;

-- Running jobs of the organization with no heartbeat (the claim counts as the first) for
-- older_than_seconds, oldest heartbeat first, at most 500.
create function queue_pump.hung(
  organization_id text,
  older_than_seconds double precision default 300,
  queue text default null
) returns setof jsonb
language plpgsql
stable
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
begin
  perform queue_pump.check_org('hung', hung.organization_id);
  if hung.older_than_seconds is null or hung.older_than_seconds < 1
     or hung.older_than_seconds > 86400 then
    raise exception 'queue_pump.hung: older_than_seconds must be between 1 and 86400, got %',
      coalesce(hung.older_than_seconds::text, 'null') using errcode = '22023';
  end if;
  return query
    select queue_pump.job_json(j) from queue_pump.jobs j
     where j.organization_id = hung.organization_id and j.status = 'running'
       and (hung.queue is null or j.queue = hung.queue)
       and coalesce(j.heartbeat_at, j.started_at)
           < now() - make_interval(secs => hung.older_than_seconds)
     order by coalesce(j.heartbeat_at, j.started_at), j.id
     limit 500;
end;
$$;

-- Cancel the organization's hung jobs (as hung() finds them), at most 10,000 a call.
create function queue_pump.cancel_hung(
  organization_id text,
  older_than_seconds double precision default 300,
  queue text default null,
  dry_run boolean default false,
  by text default 'operator'
) returns table (matched integer, cancelled integer)
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  j queue_pump.jobs;
begin
  perform queue_pump.check_org('cancel_hung', cancel_hung.organization_id);
  perform queue_pump.check_text('cancel_hung', 'by', cancel_hung.by, 1, 40);
  if cancel_hung.older_than_seconds is null or cancel_hung.older_than_seconds < 1
     or cancel_hung.older_than_seconds > 86400 then
    raise exception 'queue_pump.cancel_hung: older_than_seconds must be between 1 and 86400, got %',
      coalesce(cancel_hung.older_than_seconds::text, 'null') using errcode = '22023';
  end if;
  matched := 0;
  cancelled := 0;
  for j in
    select * from queue_pump.jobs x
     where x.organization_id = cancel_hung.organization_id and x.status = 'running'
       and (cancel_hung.queue is null or x.queue = cancel_hung.queue)
       and coalesce(x.heartbeat_at, x.started_at)
           < now() - make_interval(secs => cancel_hung.older_than_seconds)
     order by coalesce(x.heartbeat_at, x.started_at), x.id
     limit 10000
     for update
  loop
    matched := matched + 1;
    if not cancel_hung.dry_run and queue_pump.cancel_one(j, cancel_hung.by) in ('cancelled', 'requested') then
      cancelled := cancelled + 1;
    end if;
  end loop;
  return next;
end;
$$;

-- Delete ONE organization's finished jobs (done, failed, cancelled) that finished more than
-- older_than ago, with their histories; at most max_rows a call, oldest first. A dry run counts
-- what the same call would delete now. (queue_pump.purge is the scheduled clean-up of every
-- organization; this is the operator's.)
create function queue_pump.purge_organization(
  organization_id text,
  older_than interval,
  dry_run boolean default false,
  max_rows integer default 10000
) returns table (matched integer, deleted integer, more boolean)
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  ids bigint[];
  n integer;
begin
  perform queue_pump.check_org('purge_organization', purge_organization.organization_id);
  if purge_organization.older_than is null or purge_organization.older_than < interval '0'
     or purge_organization.older_than > interval '36500 days' then
    raise exception 'queue_pump.purge_organization: older_than must be between 0 and 36500 days, got %',
      coalesce(purge_organization.older_than::text, 'null') using errcode = '22023';
  end if;
  if purge_organization.max_rows is null or purge_organization.max_rows < 1
     or purge_organization.max_rows > 10000 then
    raise exception 'queue_pump.purge_organization: max_rows must be between 1 and 10000, got %',
      coalesce(purge_organization.max_rows::text, 'null') using errcode = '22023';
  end if;
  select array_agg(x.id) into ids from (
    select f.id from queue_pump.jobs f
     where f.organization_id = purge_organization.organization_id
       and f.status in ('done', 'failed', 'cancelled')
       and f.finished_at < now() - purge_organization.older_than
     order by f.finished_at
     limit purge_organization.max_rows + 1
     for update skip locked) x;
  n := coalesce(cardinality(ids), 0);
  matched := least(n, purge_organization.max_rows);
  more := n > purge_organization.max_rows;
  deleted := 0;
  if not purge_organization.dry_run and matched > 0 then
    delete from queue_pump.jobs j where j.id = any(ids[1:matched]);
    get diagnostics deleted = row_count;
  end if;
  return next;
end;
$$;

-- The summary (docs/OPERATOR_API.md §9) of one organization, of one queue when given: counts
-- per queue and status (an index-only scan of jobs_status_idx), due jobs and the oldest's age
-- (due_since: the partial indexes of live work), done and failed per minute over the last hour
-- (finished jobs of that hour only), the 10 newest failures.
create function queue_pump.summary(organization_id text, queue text default null) returns jsonb
language plpgsql
stable
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  first_minute timestamptz := date_trunc('minute', now()) - interval '60 minutes';
  per_queue jsonb;
  total jsonb;
  minutes jsonb;
  failures jsonb;
begin
  perform queue_pump.check_org('summary', summary.organization_id);
  with counts as (
    select j.queue as q,
           count(*) filter (where j.status = 'queued') as queued,
           count(*) filter (where j.status = 'running') as running,
           count(*) filter (where j.status = 'done') as done,
           count(*) filter (where j.status = 'failed') as failed,
           count(*) filter (where j.status = 'cancelled') as cancelled
      from queue_pump.jobs j
     where j.organization_id = summary.organization_id
       and (summary.queue is null or j.queue = summary.queue)
     group by j.queue
    union all
    -- A queue asked for by name is shown, with zeros when it has no job.
    select summary.queue, 0, 0, 0, 0, 0 where summary.queue is not null
  ), queues as (
    select c.q, sum(c.queued) as queued, sum(c.running) as running, sum(c.done) as done,
           sum(c.failed) as failed, sum(c.cancelled) as cancelled
      from counts c group by c.q
  ), shown as (
    select qs.*, d.due, d.since
      from queues qs
      cross join lateral (
        select count(*) as due, min(s.since) as since
          from queue_pump.due_since(summary.organization_id, qs.q) s
         where qs.queued > 0 or qs.running > 0) d
  )
  select coalesce(jsonb_agg(jsonb_build_object(
           'queue', r.q, 'queued', r.queued, 'running', r.running, 'done', r.done,
           'failed', r.failed, 'cancelled', r.cancelled, 'due', r.due,
           'oldestDueAgeSeconds', round(extract(epoch from now() - r.since)::numeric, 3))
           order by r.q), '[]'::jsonb),
         jsonb_build_object(
           'queued', coalesce(sum(r.queued), 0), 'running', coalesce(sum(r.running), 0),
           'done', coalesce(sum(r.done), 0), 'failed', coalesce(sum(r.failed), 0),
           'cancelled', coalesce(sum(r.cancelled), 0), 'due', coalesce(sum(r.due), 0),
           'oldestDueAgeSeconds', round(extract(epoch from now() - min(r.since))::numeric, 3))
    into per_queue, total
    from shown r;

  select jsonb_agg(jsonb_build_object(
           'minute', to_char(m.minute at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
           'done', coalesce(f.done, 0), 'failed', coalesce(f.failed, 0)) order by m.minute)
    into minutes
    from generate_series(first_minute, first_minute + interval '60 minutes',
                         interval '1 minute') m(minute)
    left join (
      select date_trunc('minute', j.finished_at) as minute,
             count(*) filter (where j.status = 'done') as done,
             count(*) filter (where j.status = 'failed') as failed
        from queue_pump.jobs j
       where j.organization_id = summary.organization_id
         and j.status in ('done', 'failed', 'cancelled')
         and j.finished_at >= first_minute
         and (summary.queue is null or j.queue = summary.queue)
       group by 1) f on f.minute = m.minute;

  select coalesce(jsonb_agg(jsonb_build_object(
           'id', x.id, 'queue', x.queue, 'type', x.job_type,
           'finishedAt', queue_pump.iso(x.finished_at), 'error', left(coalesce(x.last_error, ''), 500))
           order by x.finished_at desc, x.id desc), '[]'::jsonb)
    into failures
    from (select j.id, j.queue, j.job_type, j.finished_at, j.last_error from queue_pump.jobs j
           where j.organization_id = summary.organization_id and j.status = 'failed'
             and (summary.queue is null or j.queue = summary.queue)
           order by j.finished_at desc, j.id desc limit 10) x;

  return jsonb_build_object('queues', per_queue, 'total', total, 'perMinute', minutes,
                            'recentFailures', failures);
end;
$$;

-- housekeeping -------------------------------------------------------------------------------

-- The scheduled clean-up of EVERY organization (pg_cron, once an hour): finished jobs,
-- cancelled ones too, with their histories. An operator purges one organization with
-- purge_organization (the `jobs` function's POST /jobs/purge).
create or replace function queue_pump.purge(
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
  if purge.older_than is null or purge.older_than < interval '0'
     or purge.older_than > interval '100 years' then
    raise exception 'queue_pump.purge: older_than must be between 0 and 100 years, got %',
      coalesce(purge.older_than::text, 'null') using errcode = '22023';
  end if;
  if purge.max_rows is null or purge.max_rows < 1 or purge.max_rows > 1000000 then
    raise exception 'queue_pump.purge: max_rows must be between 1 and 1000000, got %',
      coalesce(purge.max_rows::text, 'null') using errcode = '22023';
  end if;
  delete from queue_pump.jobs j
   where j.id in (select x.id from queue_pump.jobs x
                   where x.status in ('done', 'failed', 'cancelled')
                     and x.finished_at < now() - purge.older_than
                   order by x.finished_at
                   limit purge.max_rows
                   for update skip locked);
  get diagnostics deleted = row_count;
  return deleted;
end;
$$;

-- Only the service role may call these (PUBLIC is kept out of new functions by the first
-- migration's default privileges; the grants are repeated for the new ones). The helpers that
-- write (add_event, cancel_one, retry_one) run as their caller and hold no right of their
-- own: called by service_role directly they fail on the tables.
revoke all on all functions in schema queue_pump from public;
do $$
begin
  execute 'revoke all on all functions in schema queue_pump from anon, authenticated';
  execute 'grant execute on all functions in schema queue_pump to service_role';
exception when undefined_object then
  raise notice 'queue_pump: roles anon/authenticated/service_role not found (not Supabase?)';
end $$;
