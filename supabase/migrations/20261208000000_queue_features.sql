-- queue-pump: what queue users ask for most (issue 24). Upgrades a deployed kit in place: jobs
-- already queued, running or finished keep working, keep their ids, and run as before (priority
-- 0, no key, no dependency).
--
--   priority          an integer from -1000 to 1000, default 0; a HIGHER number runs first (as
--                     in pg-boss; BullMQ and Oban count the other way). Strict: a lower priority
--                     waits while a higher one is due (no aging).
--   concurrency_key   a job may name a key (a customer, an upstream API); a limit per
--                     (organization, queue, key) caps how many such jobs run at once, across
--                     every pump and function: set_concurrency_limit (a null key: the default
--                     for every key of the queue)
--   rate limits       at most max_starts starts per interval per key, in a sliding window:
--                     set_rate_limit
--   after             a job may wait for other jobs (after bigint[]): due once all are done;
--                     when one ends failed or cancelled it ends the same way with the reason,
--                     unless it was enqueued with after_failure => 'run'
--   parent_id         the job that enqueued it (a handler's ctx.enqueue); job_tree shows a job
--                     and its descendants
--   enqueue_many      up to 1,000 jobs in one transaction; a bad element refuses the batch,
--                     naming its index and field
--
-- How the claim stays cheap (it reads only partial indexes of live work, never history):
--   * priority: the due index is ordered (priority desc, run_at, created_at, id). The claim
--     walks the priorities present from the highest down, one index probe each, and in each
--     takes the oldest due job: jobs scheduled for later at a high priority are never read one
--     by one.
--   * keys: a job whose key is full (or whose rate window is full) is PARKED when a claim meets
--     it: parked jobs leave the due index, so later claims do not meet them again. When a job
--     of the key stops running (done, failed, retried, yielded, cancelled, its lease given up
--     on the last attempt, deleted) a trigger unparks the best parked job of that key; when a
--     rate window reopens the next claim unparks up to max_starts of them. The number running
--     is never kept as a counter that could drift: it is counted, from an index of running
--     keyed jobs, under a transaction-scoped advisory lock per key, so it is right whatever
--     ended a job (a killed function, a cancel, a direct update).
--
-- Applies on a plain PostgreSQL 15+ with Supabase's roles anon, authenticated and service_role.

-- columns ------------------------------------------------------------------------------------

alter table queue_pump.jobs
  add column priority        integer not null default 0,
  add column concurrency_key text,
  add column "after"         bigint[],
  add column after_failure   text    not null default 'end',
  add column parent_id       bigint,
  -- How many of the jobs in `after` are not done yet: due only at 0.
  add column waiting_for     integer not null default 0,
  -- Held back by its key's concurrency or rate limit (see above).
  add column parked          boolean not null default false,
  -- Some job waits for this one: only then do its endings look for dependents.
  add column has_dependents  boolean not null default false;

-- NOT VALID: the existing rows hold the defaults; enforced on every write from now on.
alter table queue_pump.jobs
  add constraint jobs_priority_range check (priority between -1000 and 1000) not valid,
  add constraint jobs_concurrency_key_length
    check (length(concurrency_key) between 1 and 200) not valid,
  add constraint jobs_after_failure_known check (after_failure in ('end', 'run')) not valid,
  add constraint jobs_waiting_for_count check (waiting_for >= 0) not valid;

comment on column queue_pump.jobs.priority is
  'Higher runs first (-1000..1000, default 0), as in pg-boss; the opposite of BullMQ and Oban.';

-- indexes ------------------------------------------------------------------------------------

-- The due index, now in claim order. It holds only queued jobs that wait for nothing.
create index jobs_ready_idx on queue_pump.jobs
  (organization_id, queue, priority desc, run_at, created_at, id)
  where status = 'queued' and waiting_for = 0 and not parked;
drop index queue_pump.jobs_due_idx;
alter index queue_pump.jobs_ready_idx rename to jobs_due_idx;
-- Running jobs of a key (counted under the key's lock: at most its limit of them) and its
-- queued ones (parked in one statement when the key is full).
create index jobs_key_idx on queue_pump.jobs (organization_id, queue, concurrency_key, status, run_at)
  where concurrency_key is not null and status in ('queued', 'running');
-- Parked jobs of a key, best first: what a freed slot unparks.
create index jobs_parked_idx on queue_pump.jobs
  (organization_id, queue, concurrency_key, priority desc, run_at, created_at, id)
  where status = 'queued' and parked;
-- Jobs still waiting for others: found from the job that ends (`after @> array[id]`).
create index jobs_waiting_idx on queue_pump.jobs using gin ("after")
  where status = 'queued' and waiting_for > 0;
-- Children of a job, for job_tree.
create index jobs_parent_idx on queue_pump.jobs (parent_id) where parent_id is not null;

-- limits -------------------------------------------------------------------------------------

-- A concurrency_key of '' holds the queue's default for every key (set with a null key).
create table queue_pump.concurrency_limits (
  organization_id text    not null,
  queue           text    not null,
  concurrency_key text    not null,
  max_running     integer not null check (max_running between 1 and 100000),
  primary key (organization_id, queue, concurrency_key)
);

create table queue_pump.rate_limits (
  organization_id text     not null,
  queue           text     not null,
  concurrency_key text     not null,
  max_starts      integer  not null check (max_starts between 1 and 1000),
  per             interval not null check (per >= interval '1 millisecond' and per <= interval '1 day'),
  primary key (organization_id, queue, concurrency_key)
);

-- Per key: the starts inside the current rate window (a sliding log, at most max_starts of
-- them), and when a window that turned jobs away reopens. Written under the key's lock.
create table queue_pump.key_state (
  organization_id text          not null,
  queue           text          not null,
  concurrency_key text          not null,
  starts          timestamptz[] not null default '{}',
  reopen_at       timestamptz,
  primary key (organization_id, queue, concurrency_key)
);
create index key_state_reopen_idx on queue_pump.key_state (organization_id, queue, reopen_at)
  where reopen_at is not null;

alter table queue_pump.concurrency_limits enable row level security;
alter table queue_pump.rate_limits enable row level security;
alter table queue_pump.key_state enable row level security;
revoke all on queue_pump.concurrency_limits, queue_pump.rate_limits, queue_pump.key_state
  from public;
do $$
begin
  execute 'revoke all on table queue_pump.concurrency_limits, queue_pump.rate_limits,'
          ' queue_pump.key_state from anon, authenticated, service_role';
exception when undefined_object then
  raise notice 'queue_pump: roles anon/authenticated/service_role not found (not Supabase?)';
end $$;

-- helpers (run as their caller: inside the functions below, the owner) ----------------------

-- The transaction-scoped advisory lock of one key. A collision of two keys' hashes only makes
-- them wait for each other a moment; it never lets a limit be passed.
create function queue_pump.key_lock(organization_id text, queue text, concurrency_key text)
returns bigint
language sql
immutable
parallel safe
as $$
  select hashtextextended(length(organization_id) || ':' || organization_id || length(queue)
                          || ':' || queue || concurrency_key, 4242)
$$;

-- Parks the due, ready jobs of a key (at most 1,000 a call; a later claim parks the rest).
create function queue_pump.park(organization_id text, queue text, concurrency_key text)
returns void
language sql
as $$
  update queue_pump.jobs j set parked = true
   where j.id in (select x.id from queue_pump.jobs x
                   where x.organization_id = park.organization_id and x.queue = park.queue
                     and x.concurrency_key = park.concurrency_key and x.status = 'queued'
                     and x.run_at <= now() and x.waiting_for = 0 and not x.parked
                   limit 1000
                   for update skip locked);
$$;

-- Unparks the best how_many parked jobs of a key (a null key: of every key of the queue).
create function queue_pump.unpark(organization_id text, queue text, concurrency_key text,
                                  how_many integer)
returns void
language plpgsql
as $$
begin
  if unpark.concurrency_key is null then
    update queue_pump.jobs j set parked = false
     where j.organization_id = unpark.organization_id and j.queue = unpark.queue
       and j.status = 'queued' and j.parked;
    return;
  end if;
  update queue_pump.jobs j set parked = false
   where j.id in (select x.id from queue_pump.jobs x
                   where x.organization_id = unpark.organization_id and x.queue = unpark.queue
                     and x.concurrency_key = unpark.concurrency_key
                     and x.status = 'queued' and x.parked
                   order by x.priority desc, x.run_at, x.created_at, x.id
                   limit unpark.how_many
                   for update skip locked);
end;
$$;

-- The starts of a rate window still inside it at `at`: the window is (at - per, at], so a
-- start exactly `per` ago has left it. Oldest first.
create function queue_pump.rate_window(starts timestamptz[], per interval, at timestamptz)
returns timestamptz[]
language sql
immutable
parallel safe
as $$
  select array(select t from unnest(starts) t where t > at - per order by t)
$$;

-- May a job of this key start now? 'free' (the key has no limit: no lock taken), 'go' (it
-- may: the key's lock is held and a rate window start recorded), 'busy' (may_wait false and
-- another transaction holds the key's lock), 'full' or 'rate' (it may not: the key's due jobs
-- were parked). A claim waits for a key's lock only while it holds no other key's lock, so
-- two claims never wait for each other.
create function queue_pump.admit(organization_id text, queue text, concurrency_key text,
                                 may_wait boolean)
returns text
language plpgsql
as $$
declare
  max_running integer;
  max_starts integer;
  per interval;
  running integer;
  recent timestamptz[];
  -- The clock once the key's lock is held, not the transaction's start: a claim that waited
  -- for the lock would otherwise record a start up to that wait too early, and the window
  -- would let that much more through (seen: 15 starts in a second under a limit of 10).
  at_now timestamptz;
begin
  select l.max_running into max_running from queue_pump.concurrency_limits l
   where l.organization_id = admit.organization_id and l.queue = admit.queue
     and l.concurrency_key in (admit.concurrency_key, '')
   order by l.concurrency_key = '' limit 1;
  select r.max_starts, r.per into max_starts, per from queue_pump.rate_limits r
   where r.organization_id = admit.organization_id and r.queue = admit.queue
     and r.concurrency_key in (admit.concurrency_key, '')
   order by r.concurrency_key = '' limit 1;
  if max_running is null and max_starts is null then
    return 'free';
  end if;

  if admit.may_wait then
    perform pg_advisory_xact_lock(queue_pump.key_lock(admit.organization_id, admit.queue,
                                                      admit.concurrency_key));
  elsif not pg_try_advisory_xact_lock(queue_pump.key_lock(admit.organization_id, admit.queue,
                                                          admit.concurrency_key)) then
    return 'busy';
  end if;

  if max_running is not null then
    select count(*) into running
      from (select 1 from queue_pump.jobs x
             where x.organization_id = admit.organization_id and x.queue = admit.queue
               and x.concurrency_key = admit.concurrency_key and x.status = 'running'
             limit max_running) r;
    if running >= max_running then
      perform queue_pump.park(admit.organization_id, admit.queue, admit.concurrency_key);
      return 'full';
    end if;
  end if;

  if max_starts is not null then
    insert into queue_pump.key_state as s (organization_id, queue, concurrency_key)
    values (admit.organization_id, admit.queue, admit.concurrency_key)
    on conflict on constraint key_state_pkey do nothing;
    at_now := clock_timestamp();
    select queue_pump.rate_window(s.starts, per, at_now)
      into recent
      from queue_pump.key_state s
     where s.organization_id = admit.organization_id and s.queue = admit.queue
       and s.concurrency_key = admit.concurrency_key;
    if cardinality(recent) >= max_starts then
      update queue_pump.key_state s
         set starts = recent,
             reopen_at = recent[cardinality(recent) - max_starts + 1] + per
       where s.organization_id = admit.organization_id and s.queue = admit.queue
         and s.concurrency_key = admit.concurrency_key;
      perform queue_pump.park(admit.organization_id, admit.queue, admit.concurrency_key);
      return 'rate';
    end if;
    update queue_pump.key_state s
       set starts = recent || at_now
     where s.organization_id = admit.organization_id and s.queue = admit.queue
       and s.concurrency_key = admit.concurrency_key;
  end if;
  return 'go';
end;
$$;

-- triggers -----------------------------------------------------------------------------------

-- A job of a limited key stopped running, however that happened: its slot is free, so the
-- best parked job of the key goes back to the due index. Under the key's lock, so that a claim
-- parking the key at this moment either sees this job stopped or is seen by this unpark.
create function queue_pump.key_freed() returns trigger
language plpgsql
as $$
begin
  if exists (select 1 from queue_pump.concurrency_limits l
              where l.organization_id = old.organization_id and l.queue = old.queue
                and l.concurrency_key in (old.concurrency_key, '')) then
    perform pg_advisory_xact_lock(queue_pump.key_lock(old.organization_id, old.queue,
                                                      old.concurrency_key));
    perform queue_pump.unpark(old.organization_id, old.queue, old.concurrency_key, 1);
  end if;
  return null;
end;
$$;

create trigger jobs_key_freed after update of status on queue_pump.jobs
  for each row when (old.status = 'running' and new.status <> 'running'
                     and old.concurrency_key is not null)
  execute function queue_pump.key_freed();
create trigger jobs_key_freed_by_delete after delete on queue_pump.jobs
  for each row when (old.status = 'running' and old.concurrency_key is not null)
  execute function queue_pump.key_freed();

-- A job some others wait for ended. Done: each waits for one job fewer. Failed or cancelled:
-- the ones enqueued with after_failure 'run' count it as over; the others, and whatever waits
-- for them in turn, end the same way with the reason (all at once, so a long chain costs one
-- statement, not one nested trigger per link).
create function queue_pump.after_ended() returns trigger
language plpgsql
as $$
declare
  why text;
  ended_ids bigint[];
begin
  if new.status = 'done' then
    update queue_pump.jobs d set waiting_for = d.waiting_for - 1, updated_at = now()
     where d."after" @> array[new.id] and d.status = 'queued' and d.waiting_for > 0;
    return null;
  end if;
  update queue_pump.jobs d set waiting_for = d.waiting_for - 1, updated_at = now()
   where d."after" @> array[new.id] and d.status = 'queued' and d.waiting_for > 0
     and d.after_failure = 'run';
  -- The jobs ended below run this trigger too (one level down); the chain is already theirs.
  if pg_trigger_depth() > 1 then
    return null;
  end if;
  why := left(format('not run: job %s, which it waits for (directly or not), ended %s: %s',
                     new.id, new.status, coalesce(new.last_error, 'no reason given')), 2000);
  with recursive victims(id) as (
    select d.id from queue_pump.jobs d
     where d."after" @> array[new.id] and d.status = 'queued' and d.waiting_for > 0
       and d.after_failure = 'end'
    union
    select d.id from victims v
      join queue_pump.jobs d on d."after" @> array[v.id]
     where d.status = 'queued' and d.waiting_for > 0 and d.after_failure = 'end'
  ), ended as (
    update queue_pump.jobs d
       set status = new.status, finished_at = now(), updated_at = now(), waiting_for = 0,
           last_error = why
      from victims v
     where d.id = v.id
    returning d.id
  )
  select array_agg(e.id) into ended_ids from ended e;
  -- Their histories say so (the steer migration's events).
  for i in 1 .. coalesce(cardinality(ended_ids), 0) loop
    perform queue_pump.add_event(ended_ids[i], new.status, null, null, why,
                                 jsonb_build_object('final', true, 'after', new.id));
  end loop;
  return null;
end;
$$;

create trigger jobs_after_ended after update of status on queue_pump.jobs
  for each row when (new.has_dependents and old.status is distinct from new.status
                     and new.status in ('done', 'failed', 'cancelled'))
  execute function queue_pump.after_ended();

-- A job back in the queue (a retry, a yield, a redrive of a failed or cancelled one) is not
-- parked, and one that was over waits again for those of its `after` jobs not done by now.
create function queue_pump.into_queue() returns trigger
language plpgsql
as $$
begin
  new.parked := false;
  if old.status not in ('queued', 'running') and new."after" is not null then
    new.waiting_for := (select count(*) from queue_pump.jobs p
                         where p.id = any(new."after") and p.status <> 'done');
  end if;
  return new;
end;
$$;

create trigger jobs_into_queue before update of status on queue_pump.jobs
  for each row when (new.status = 'queued' and old.status <> 'queued')
  execute function queue_pump.into_queue();

-- enqueue ------------------------------------------------------------------------------------

-- Every argument of a new job checked, naming it: `fn` names the way in (with the element's
-- index for enqueue_many), so the one message says where and what.
create function queue_pump.check_new_job(
  fn text, organization_id text, queue text, job_type text, payload jsonb, dedupe_key text,
  run_at timestamptz, max_attempts integer, priority integer, concurrency_key text,
  "after" bigint[], after_failure text, parent_id bigint
) returns void
language plpgsql
stable
as $$
declare
  payload_text text := coalesce(check_new_job.payload, '{}'::jsonb)::text;
begin
  perform queue_pump.check_text(fn, 'organization_id', check_new_job.organization_id, 1, 200);
  perform queue_pump.check_text(fn, 'queue', check_new_job.queue, 1, 100);
  perform queue_pump.check_text(fn, 'job_type', check_new_job.job_type, 1, 200);
  if check_new_job.dedupe_key is not null then
    perform queue_pump.check_text(fn, 'dedupe_key', check_new_job.dedupe_key, 1, 500);
  end if;
  if octet_length(payload_text) > queue_pump.max_json_bytes() or payload_text ~ '[0-9.]{16}' then
    perform queue_pump.check_json(fn, 'payload', check_new_job.payload);
  end if;
  perform queue_pump.check_run_at(fn, check_new_job.run_at);
  if check_new_job.max_attempts is not null
     and (check_new_job.max_attempts < 1 or check_new_job.max_attempts > 1000) then
    raise exception 'queue_pump.%: max_attempts must be between 1 and 1000, got %', fn,
      check_new_job.max_attempts using errcode = '22023';
  end if;
  if check_new_job.priority is not null
     and (check_new_job.priority < -1000 or check_new_job.priority > 1000) then
    raise exception 'queue_pump.%: priority must be between -1000 and 1000 (higher runs first), got %',
      fn, check_new_job.priority using errcode = '22023';
  end if;
  if check_new_job.concurrency_key is not null then
    perform queue_pump.check_text(fn, 'concurrency_key', check_new_job.concurrency_key, 1, 200);
  end if;
  if check_new_job."after" is not null and (cardinality(check_new_job."after") > 1000
       or array_position(check_new_job."after", null) is not null) then
    raise exception 'queue_pump.%: after must be at most 1000 job ids, none null', fn
      using errcode = '22023';
  end if;
  if check_new_job.after_failure is not null and check_new_job.after_failure not in ('end', 'run') then
    raise exception 'queue_pump.%: after_failure must be ''end'' or ''run'', got %', fn,
      left(check_new_job.after_failure, 50) using errcode = '22023';
  end if;
end;
$$;

-- Inserts a checked job: its parent and the jobs it waits for must be jobs of the same
-- organization (any queue) that exist now, so every edge points to an older job and no cycle
-- can be made. The jobs it waits for are locked while it is inserted, so that one ending at
-- this moment is either seen ended here or finds this job waiting.
create function queue_pump.insert_job(
  fn text, organization_id text, queue text, job_type text, payload jsonb, dedupe_key text,
  run_at timestamptz, max_attempts integer, priority integer, concurrency_key text,
  "after" bigint[], after_failure text, parent_id bigint, by text
) returns table (id bigint, created boolean)
language plpgsql
as $$
#variable_conflict use_column
declare
  deps bigint[];
  found_deps bigint[];
  waiting integer := 0;
  ended queue_pump.jobs;
  mode text := coalesce(insert_job.after_failure, 'end');
  -- The first event of its history (the steer migration): who added it.
  first_data jsonb := jsonb_build_object('by', coalesce(insert_job.by, 'sql'));
  cost integer := octet_length('enqueued') + octet_length(first_data::text);
  why text;
  new_id bigint;
begin
  if insert_job.parent_id is not null and not exists (
       select 1 from queue_pump.jobs p
        where p.id = insert_job.parent_id and p.organization_id = insert_job.organization_id) then
    raise exception 'queue_pump.%: parent_id % is not a job of this organization', fn,
      insert_job.parent_id using errcode = '22023';
  end if;
  if insert_job."after" is not null and cardinality(insert_job."after") > 0 then
    deps := array(select distinct u from unnest(insert_job."after") u order by u);
    -- In id order, so that two enqueues naming the same jobs never wait for each other.
    with locked as (
      select p.id from queue_pump.jobs p
       where p.id = any(deps) and p.organization_id = insert_job.organization_id
       order by p.id
       for update
    )
    update queue_pump.jobs p set has_dependents = true
      from locked l where p.id = l.id and not p.has_dependents;
    select array_agg(p.id order by p.id),
           count(*) filter (where p.status <> 'done')
      into found_deps, waiting
      from queue_pump.jobs p
     where p.id = any(deps) and p.organization_id = insert_job.organization_id;
    if found_deps is distinct from deps then
      raise exception 'queue_pump.%: after names % which is not a job of this organization', fn,
        (select min(u) from unnest(deps) u where u <> all(coalesce(found_deps, '{}')))
        using errcode = '22023';
    end if;
    if mode = 'end' then
      select p.* into ended from queue_pump.jobs p
       where p.id = any(deps) and p.status in ('failed', 'cancelled')
       order by p.id limit 1;
      why := left(format('not run: job %s, which it waits for (directly or not), ended %s: %s',
                         ended.id, ended.status, coalesce(ended.last_error, 'no reason given')), 2000);
    end if;
  else
    deps := null;
  end if;

  for tries in 1..10 loop
    insert into queue_pump.jobs as j
      (organization_id, queue, job_type, payload, payload_bytes, dedupe_key, run_at,
       max_attempts, priority, concurrency_key, "after", after_failure, parent_id, waiting_for,
       status, finished_at, last_error, history_events, history_bytes)
    values (
      insert_job.organization_id, insert_job.queue, insert_job.job_type,
      coalesce(insert_job.payload, '{}'::jsonb),
      octet_length(coalesce(insert_job.payload, '{}'::jsonb)::text),
      insert_job.dedupe_key,
      coalesce(insert_job.run_at, now()),
      coalesce(insert_job.max_attempts, 5),
      coalesce(insert_job.priority, 0),
      insert_job.concurrency_key,
      deps,
      mode,
      insert_job.parent_id,
      case when ended.id is null then coalesce(waiting, 0) else 0 end,
      coalesce(ended.status, 'queued'),
      case when ended.id is not null then now() end,
      why,
      1, cost
    )
    on conflict (organization_id, queue, dedupe_key) where dedupe_key is not null do nothing
    returning j.id into new_id;

    if new_id is not null then
      insert into queue_pump.job_events (job_id, seq, kind, data)
      values (new_id, 1, 'enqueued', first_data);
      if ended.id is not null then
        perform queue_pump.add_event(new_id, ended.status, null, null, why,
                                     jsonb_build_object('final', true, 'after', ended.id));
      end if;
      return query select new_id, true;
      return;
    end if;
    -- ON CONFLICT waited for a concurrent insert of the key to commit, and this statement's
    -- snapshot is newer than that commit, so the holder is visible unless it was deleted.
    return query
      select j.id, false from queue_pump.jobs j
       where j.organization_id = insert_job.organization_id
         and j.queue = insert_job.queue
         and j.dedupe_key = insert_job.dedupe_key;
    if found then
      return;
    end if;
  end loop;
  raise exception 'queue_pump.%: dedupe_key % was taken and freed 10 times in a row', fn,
    left(insert_job.dedupe_key, 100) using errcode = '40001';
end;
$$;

-- New arguments cannot be added by `create or replace` (that would make a second function and
-- every call by name ambiguous): the three ways in are replaced, with the same names and the
-- new arguments last.
drop function queue_pump.enqueue(text, text, text, jsonb, text, timestamptz, integer);
drop function queue_pump.enqueue_job(text, text, text, jsonb, text, timestamptz, integer);
drop function queue_pump.add_job(text, text, text, jsonb, text, timestamptz, integer, text);

-- enqueue_job, saying who added the job (`by`: sql, enqueue, operator, handler) in its first
-- event (the steer migration's add_job, with issue 24's arguments).
create function queue_pump.add_job(
  organization_id text,
  queue text,
  job_type text,
  payload jsonb default '{}'::jsonb,
  dedupe_key text default null,
  run_at timestamptz default null,
  max_attempts integer default 5,
  by text default 'sql',
  priority integer default 0,
  concurrency_key text default null,
  "after" bigint[] default null,
  after_failure text default 'end',
  parent_id bigint default null
) returns table (id bigint, created boolean)
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  q text := coalesce(add_job.queue, 'agent');
begin
  perform queue_pump.check_text('enqueue', 'by', coalesce(add_job.by, 'sql'), 1, 40);
  perform queue_pump.check_new_job('enqueue', add_job.organization_id, q,
    add_job.job_type, add_job.payload, add_job.dedupe_key, add_job.run_at,
    add_job.max_attempts, add_job.priority, add_job.concurrency_key,
    add_job."after", add_job.after_failure, add_job.parent_id);
  return query select * from queue_pump.insert_job('enqueue', add_job.organization_id, q,
    add_job.job_type, add_job.payload, add_job.dedupe_key, add_job.run_at,
    add_job.max_attempts, add_job.priority, add_job.concurrency_key,
    add_job."after", add_job.after_failure, add_job.parent_id, coalesce(add_job.by, 'sql'));
end;
$$;

create function queue_pump.enqueue_job(
  organization_id text,
  queue text,
  job_type text,
  payload jsonb default '{}'::jsonb,
  dedupe_key text default null,
  run_at timestamptz default null,
  max_attempts integer default 5,
  priority integer default 0,
  concurrency_key text default null,
  "after" bigint[] default null,
  after_failure text default 'end',
  parent_id bigint default null
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
    max_attempts => enqueue_job.max_attempts, by => 'sql',
    priority => enqueue_job.priority, concurrency_key => enqueue_job.concurrency_key,
    "after" => enqueue_job."after", after_failure => enqueue_job.after_failure,
    parent_id => enqueue_job.parent_id) a;
$$;

create function queue_pump.enqueue(
  organization_id text,
  queue text,
  job_type text,
  payload jsonb default '{}'::jsonb,
  dedupe_key text default null,
  run_at timestamptz default null,
  max_attempts integer default 5,
  priority integer default 0,
  concurrency_key text default null,
  "after" bigint[] default null,
  after_failure text default 'end',
  parent_id bigint default null
) returns bigint
language sql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
  select a.id from queue_pump.add_job(
    organization_id => enqueue.organization_id, queue => enqueue.queue,
    job_type => enqueue.job_type, payload => enqueue.payload,
    dedupe_key => enqueue.dedupe_key, run_at => enqueue.run_at,
    max_attempts => enqueue.max_attempts, by => 'sql',
    priority => enqueue.priority, concurrency_key => enqueue.concurrency_key,
    "after" => enqueue."after", after_failure => enqueue.after_failure,
    parent_id => enqueue.parent_id) a;
$$;

-- One field of a batch element, or a one-line error naming the element and the field.
create function queue_pump.batch_text(fn text, element jsonb, field text) returns text
language plpgsql
immutable
as $$
begin
  if not element ? field or jsonb_typeof(element -> field) = 'null' then
    return null;
  end if;
  if jsonb_typeof(element -> field) <> 'string' then
    raise exception 'queue_pump.%: % must be a string, got %', fn, field,
      jsonb_typeof(element -> field) using errcode = '22023';
  end if;
  return element ->> field;
end;
$$;

create function queue_pump.batch_int(fn text, element jsonb, field text) returns numeric
language plpgsql
immutable
as $$
declare
  n numeric;
begin
  if not element ? field or jsonb_typeof(element -> field) = 'null' then
    return null;
  end if;
  if jsonb_typeof(element -> field) <> 'number' then
    raise exception 'queue_pump.%: % must be a whole number, got %', fn, field,
      jsonb_typeof(element -> field) using errcode = '22023';
  end if;
  n := (element ->> field)::numeric;
  if n <> trunc(n) or abs(n) > 9007199254740991 then
    raise exception 'queue_pump.%: % must be a whole number, got %', fn, field,
      left(n::text, 30) using errcode = '22023';
  end if;
  return n;
end;
$$;

-- Up to 1,000 jobs in one transaction: each element an object with the arguments of
-- enqueue_job by name (job_type required; queue defaults to the call's). Every element is
-- checked before any is inserted; a bad one refuses the whole batch with its index (from 0)
-- and field. Returns each element's index, its job id and whether it was created (false: its
-- dedupe_key was known, including from an earlier element of the same batch).
create function queue_pump.enqueue_many(
  organization_id text,
  queue text,
  jobs jsonb,
  by text default 'sql'
) returns table (index integer, id bigint, created boolean)
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  q text := coalesce(enqueue_many.queue, 'agent');
  n integer;
  el jsonb;
  fn text;
  bad text;
  run_at timestamptz;
  after_ids bigint[];
  parsed jsonb[] := '{}';
  fields constant text[] := array['job_type', 'payload', 'queue', 'dedupe_key', 'run_at',
    'max_attempts', 'priority', 'concurrency_key', 'after', 'after_failure', 'parent_id'];
begin
  if jsonb_typeof(enqueue_many.jobs) is distinct from 'array' then
    raise exception 'queue_pump.enqueue_many: jobs must be a JSON array of job objects'
      using errcode = '22023';
  end if;
  perform queue_pump.check_text('enqueue_many', 'by', coalesce(enqueue_many.by, 'sql'), 1, 40);
  n := jsonb_array_length(enqueue_many.jobs);
  if n < 1 or n > 1000 then
    raise exception 'queue_pump.enqueue_many: jobs must hold 1 to 1000 jobs, got %', n
      using errcode = '22023';
  end if;
  for i in 0 .. n - 1 loop
    el := enqueue_many.jobs -> i;
    fn := format('enqueue_many: jobs[%s]', i);
    if jsonb_typeof(el) <> 'object' then
      raise exception 'queue_pump.%: must be an object, got %', fn, jsonb_typeof(el)
        using errcode = '22023';
    end if;
    select k into bad from jsonb_object_keys(el) k where k <> all(fields) limit 1;
    if bad is not null then
      raise exception 'queue_pump.%: unknown field %; accepted: %', fn, left(bad, 50),
        array_to_string(fields, ', ') using errcode = '22023';
    end if;
    run_at := null;
    if queue_pump.batch_text(fn, el, 'run_at') is not null then
      begin
        run_at := (el ->> 'run_at')::timestamptz;
      exception when others then
        raise exception 'queue_pump.%: run_at must be a time with a zone, e.g. 2026-11-28T03:00:00Z, got %',
          fn, left(el ->> 'run_at', 50) using errcode = '22023';
      end;
    end if;
    after_ids := null;
    if el ? 'after' and jsonb_typeof(el -> 'after') <> 'null' then
      if jsonb_typeof(el -> 'after') <> 'array'
         or exists (select 1 from jsonb_array_elements(el -> 'after') a
                     where jsonb_typeof(a) <> 'number' or (a #>> '{}')::numeric <> trunc((a #>> '{}')::numeric)
                        or abs((a #>> '{}')::numeric) > 9007199254740991) then
        raise exception 'queue_pump.%: after must be an array of job ids', fn using errcode = '22023';
      end if;
      after_ids := array(select (a #>> '{}')::bigint from jsonb_array_elements(el -> 'after') a);
    end if;
    if el ? 'payload' and jsonb_typeof(el -> 'payload') = 'null' then
      el := el - 'payload';
    end if;
    if queue_pump.batch_int(fn, el, 'max_attempts') not between -2147483648 and 2147483647
       or queue_pump.batch_int(fn, el, 'priority') not between -2147483648 and 2147483647 then
      raise exception 'queue_pump.%: max_attempts and priority must be 32-bit whole numbers', fn
        using errcode = '22023';
    end if;
    perform queue_pump.check_new_job(fn, enqueue_many.organization_id,
      coalesce(queue_pump.batch_text(fn, el, 'queue'), q),
      queue_pump.batch_text(fn, el, 'job_type'), coalesce(el -> 'payload', '{}'::jsonb),
      queue_pump.batch_text(fn, el, 'dedupe_key'), run_at,
      coalesce(queue_pump.batch_int(fn, el, 'max_attempts')::integer, 5),
      coalesce(queue_pump.batch_int(fn, el, 'priority')::integer, 0),
      queue_pump.batch_text(fn, el, 'concurrency_key'), after_ids,
      coalesce(queue_pump.batch_text(fn, el, 'after_failure'), 'end'),
      queue_pump.batch_int(fn, el, 'parent_id')::bigint);
  end loop;

  for i in 0 .. n - 1 loop
    el := enqueue_many.jobs -> i;
    fn := format('enqueue_many: jobs[%s]', i);
    after_ids := case when jsonb_typeof(el -> 'after') = 'array'
                      then array(select (a #>> '{}')::bigint from jsonb_array_elements(el -> 'after') a) end;
    return query
      select i, r.id, r.created from queue_pump.insert_job(fn, enqueue_many.organization_id,
        coalesce(el ->> 'queue', q), el ->> 'job_type',
        coalesce(nullif(el -> 'payload', 'null'::jsonb), '{}'::jsonb), el ->> 'dedupe_key',
        (el ->> 'run_at')::timestamptz, coalesce((el ->> 'max_attempts')::integer, 5),
        coalesce((el ->> 'priority')::integer, 0), el ->> 'concurrency_key', after_ids,
        coalesce(el ->> 'after_failure', 'end'), (el ->> 'parent_id')::bigint,
        coalesce(enqueue_many.by, 'sql')) r;
  end loop;
end;
$$;

-- limits -------------------------------------------------------------------------------------

-- At most max_running jobs of this key (a null key: of each key of the queue, where the key has
-- no limit of its own) run at once; a null max_running removes the limit. Jobs held back by the
-- old limit are given another look at once.
create function queue_pump.set_concurrency_limit(
  organization_id text,
  queue text,
  key text,
  max_running integer
) returns void
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
begin
  perform queue_pump.check_text('set_concurrency_limit', 'organization_id',
                                set_concurrency_limit.organization_id, 1, 200);
  perform queue_pump.check_text('set_concurrency_limit', 'queue', set_concurrency_limit.queue, 1, 100);
  if set_concurrency_limit.key is not null then
    perform queue_pump.check_text('set_concurrency_limit', 'key', set_concurrency_limit.key, 1, 200);
  end if;
  if set_concurrency_limit.max_running is not null
     and (set_concurrency_limit.max_running < 1 or set_concurrency_limit.max_running > 100000) then
    raise exception 'queue_pump.set_concurrency_limit: max_running must be between 1 and 100000 (null: no limit), got %',
      set_concurrency_limit.max_running using errcode = '22023';
  end if;
  if set_concurrency_limit.max_running is null then
    delete from queue_pump.concurrency_limits l
     where l.organization_id = set_concurrency_limit.organization_id
       and l.queue = set_concurrency_limit.queue
       and l.concurrency_key = coalesce(set_concurrency_limit.key, '');
  else
    insert into queue_pump.concurrency_limits as l
      (organization_id, queue, concurrency_key, max_running)
    values (set_concurrency_limit.organization_id, set_concurrency_limit.queue,
            coalesce(set_concurrency_limit.key, ''), set_concurrency_limit.max_running)
    on conflict on constraint concurrency_limits_pkey
      do update set max_running = excluded.max_running;
  end if;
  perform queue_pump.unpark(set_concurrency_limit.organization_id, set_concurrency_limit.queue,
                            set_concurrency_limit.key, 2147483647);
end;
$$;

-- At most max_starts jobs of this key (a null key: of each key of the queue without its own)
-- start in any window of length `per`: a sliding window, (now - per, now]. A null max_starts
-- removes the limit.
create function queue_pump.set_rate_limit(
  organization_id text,
  queue text,
  key text,
  max_starts integer,
  per interval
) returns void
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
begin
  perform queue_pump.check_text('set_rate_limit', 'organization_id',
                                set_rate_limit.organization_id, 1, 200);
  perform queue_pump.check_text('set_rate_limit', 'queue', set_rate_limit.queue, 1, 100);
  if set_rate_limit.key is not null then
    perform queue_pump.check_text('set_rate_limit', 'key', set_rate_limit.key, 1, 200);
  end if;
  if set_rate_limit.max_starts is null then
    delete from queue_pump.rate_limits r
     where r.organization_id = set_rate_limit.organization_id and r.queue = set_rate_limit.queue
       and r.concurrency_key = coalesce(set_rate_limit.key, '');
  else
    if set_rate_limit.max_starts < 1 or set_rate_limit.max_starts > 1000 then
      raise exception 'queue_pump.set_rate_limit: max_starts must be between 1 and 1000 (null: no limit), got %',
        set_rate_limit.max_starts using errcode = '22023';
    end if;
    if set_rate_limit.per is null or set_rate_limit.per < interval '1 millisecond'
       or set_rate_limit.per > interval '1 day' then
      raise exception 'queue_pump.set_rate_limit: per must be between 1 millisecond and 1 day, got %',
        coalesce(set_rate_limit.per::text, 'null') using errcode = '22023';
    end if;
    insert into queue_pump.rate_limits as r
      (organization_id, queue, concurrency_key, max_starts, per)
    values (set_rate_limit.organization_id, set_rate_limit.queue,
            coalesce(set_rate_limit.key, ''), set_rate_limit.max_starts, set_rate_limit.per)
    on conflict on constraint rate_limits_pkey
      do update set max_starts = excluded.max_starts, per = excluded.per;
  end if;
  update queue_pump.key_state s set reopen_at = null
   where s.organization_id = set_rate_limit.organization_id and s.queue = set_rate_limit.queue
     and (set_rate_limit.key is null or s.concurrency_key = set_rate_limit.key)
     and s.reopen_at is not null;
  perform queue_pump.unpark(set_rate_limit.organization_id, set_rate_limit.queue,
                            set_rate_limit.key, 2147483647);
end;
$$;

-- The limits of a queue's keys and what each key is doing now: a row per key that has a
-- limit, a running job or a parked one ('' is the queue's default).
create function queue_pump.key_limits(
  organization_id text,
  queue text default 'agent'
) returns table (
  key text, max_running integer, max_starts integer, per interval, running bigint, parked bigint
)
language sql
stable
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
  with keys as (
    select l.concurrency_key as k from queue_pump.concurrency_limits l
     where l.organization_id = key_limits.organization_id and l.queue = key_limits.queue
    union
    select r.concurrency_key from queue_pump.rate_limits r
     where r.organization_id = key_limits.organization_id and r.queue = key_limits.queue
    union
    select x.concurrency_key from queue_pump.jobs x
     where x.organization_id = key_limits.organization_id and x.queue = key_limits.queue
       and x.concurrency_key is not null and x.status = 'running'
    union
    select x.concurrency_key from queue_pump.jobs x
     where x.organization_id = key_limits.organization_id and x.queue = key_limits.queue
       and x.status = 'queued' and x.parked
  )
  select nullif(k.k, ''),
         (select l.max_running from queue_pump.concurrency_limits l
           where l.organization_id = key_limits.organization_id and l.queue = key_limits.queue
             and l.concurrency_key = k.k),
         (select r.max_starts from queue_pump.rate_limits r
           where r.organization_id = key_limits.organization_id and r.queue = key_limits.queue
             and r.concurrency_key = k.k),
         (select r.per from queue_pump.rate_limits r
           where r.organization_id = key_limits.organization_id and r.queue = key_limits.queue
             and r.concurrency_key = k.k),
         (select count(*) from queue_pump.jobs x
           where x.organization_id = key_limits.organization_id and x.queue = key_limits.queue
             and x.concurrency_key = k.k and x.status = 'running'),
         (select count(*) from queue_pump.jobs x
           where x.organization_id = key_limits.organization_id and x.queue = key_limits.queue
             and x.concurrency_key = k.k and x.status = 'queued' and x.parked)
    from keys k
   order by k.k;
$$;

-- tree ---------------------------------------------------------------------------------------

-- A job and its descendants (the jobs enqueued by its handler, theirs, ...), depth first, at
-- most 10,000 rows and 100 levels. `path` is the chain of ids from the job asked for.
create function queue_pump.job_tree(
  organization_id text,
  job_id bigint
) returns table (
  id bigint, parent_id bigint, depth integer, path bigint[], queue text, job_type text,
  status text, priority integer, concurrency_key text, "after" bigint[], waiting_for integer,
  attempts integer, created_at timestamptz, finished_at timestamptz, last_error text
)
language sql
stable
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
  with recursive tree as (
    select j.id, j.parent_id, 0 as depth, array[j.id] as path
      from queue_pump.jobs j
     where j.id = job_tree.job_id and j.organization_id = job_tree.organization_id
    union all
    select c.id, c.parent_id, t.depth + 1, t.path || c.id
      from tree t
      join queue_pump.jobs c on c.parent_id = t.id
     where c.organization_id = job_tree.organization_id and t.depth < 100
  )
  select t.id, t.parent_id, t.depth, t.path, j.queue, j.job_type, j.status, j.priority,
         j.concurrency_key, j."after", j.waiting_for, j.attempts, j.created_at, j.finished_at,
         j.last_error
    from tree t join queue_pump.jobs j on j.id = t.id
   order by t.path
   limit 10000;
$$;

-- claim --------------------------------------------------------------------------------------

-- The steer migration's claim (its history events, cancel requests) with the picking of issue
-- 24: priorities, and keys whose limits hold their jobs back.
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
  level integer;
  key text;
  verdict text;
  -- Once this call holds a key's lock it only tries others, never waits for them: two claims
  -- then never wait for each other.
  holding boolean := false;
  busy text[] := '{}';
begin
  -- The same words as heartbeat's.
  if claim.lease_seconds is null or claim.lease_seconds < 1 or claim.lease_seconds > 86400 then
    raise exception 'queue_pump.claim: lease_seconds must be between 1 and 86400, got %',
      coalesce(claim.lease_seconds::text, 'null') using errcode = '22023';
  end if;

  -- A running job whose lease ran out lost its worker. If that was its last attempt it ends
  -- failed here, and if an operator asked to cancel it, cancelled (at most 100 a call, so one
  -- claim stays short; the rest on later calls). Rare: the loop below is usually empty. In key
  -- order: ending a keyed job takes its key's lock (to unpark the next), and claims that take
  -- several take them in the same order.
  for dead in
    select x.id, x.locked_by, x.attempts, x.cancel_requested, x.concurrency_key
      from queue_pump.jobs x
     where x.organization_id = claim.organization_id and x.queue = q
       and x.status = 'running' and x.lease_expires_at < now()
       and (x.attempts >= x.max_attempts or x.cancel_requested)
     order by x.concurrency_key nulls first, x.id
     limit 100
     for update skip locked
  loop
    update queue_pump.jobs j
       set status = case when dead.cancel_requested then 'cancelled' else 'failed' end,
           finished_at = now(), updated_at = now(), locked_by = null, lease_expires_at = null,
           last_error = case when dead.cancel_requested then j.last_error
                             else 'lease expired on the last attempt (worker lost)' end
     where j.id = dead.id;
    holding := holding or dead.concurrency_key is not null;
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

  -- Keys whose rate window turned jobs away and has reopened: up to max_starts of their
  -- parked jobs go back to the due index (a few keys a call; tried, never waited for).
  for dead in
    select s.concurrency_key from queue_pump.key_state s
     where s.organization_id = claim.organization_id and s.queue = q and s.reopen_at <= now()
     order by s.reopen_at
     limit 4
  loop
    continue when not pg_try_advisory_xact_lock(
      queue_pump.key_lock(claim.organization_id, q, dead.concurrency_key));
    holding := true;
    update queue_pump.key_state s set reopen_at = null
     where s.organization_id = claim.organization_id and s.queue = q
       and s.concurrency_key = dead.concurrency_key;
    perform queue_pump.unpark(claim.organization_id, q, dead.concurrency_key,
      coalesce((select r.max_starts from queue_pump.rate_limits r
                 where r.organization_id = claim.organization_id and r.queue = q
                   and r.concurrency_key in (dead.concurrency_key, '')
                 order by r.concurrency_key = '' limit 1), 1));
  end loop;

  -- A job too big to hand out (stored before the limit, or written around the functions) ends
  -- failed without being sent; a job whose key is full is parked: each such round looks
  -- again, at most 20 a call.
  for tries in 1..20 loop
    lost_worker := null;
    key := null;
    -- An expired lease first: that job has waited since its lease ran out, and it still holds
    -- its key's slot (it is running), so no limit holds it back.
    select x.id, x.locked_by, x.attempts into job_id, lost_worker, lost_attempt
      from queue_pump.jobs x
     where x.organization_id = claim.organization_id and x.queue = q
       and x.status = 'running' and x.lease_expires_at < now()
       and x.attempts < x.max_attempts and not x.cancel_requested
     order by x.lease_expires_at
     limit 1
     for update skip locked;
    if job_id is null then
      -- Then by priority, highest first: each priority present costs one probe of the due
      -- index, and in it the oldest due job with an attempt left is taken.
      select x.priority into level from queue_pump.jobs x
       where x.organization_id = claim.organization_id and x.queue = q
         and x.status = 'queued' and x.waiting_for = 0 and not x.parked
       order by x.priority desc
       limit 1;
      while level is not null loop
        select x.id, x.history_events, x.history_bytes, x.concurrency_key
          into job_id, n, b, key
          from queue_pump.jobs x
         where x.organization_id = claim.organization_id and x.queue = q
           and x.status = 'queued' and x.waiting_for = 0 and not x.parked
           and x.priority = level and x.run_at <= now()
           and x.attempts < x.max_attempts        -- never more runs than max_attempts
           and (x.concurrency_key is null or x.concurrency_key <> all(busy))
         order by x.run_at, x.created_at, x.id
         limit 1
         for update skip locked;
        exit when job_id is not null;
        select x.priority into level from queue_pump.jobs x
         where x.organization_id = claim.organization_id and x.queue = q
           and x.status = 'queued' and x.waiting_for = 0 and not x.parked
           and x.priority < level
         order by x.priority desc
         limit 1;
        if not found then
          level := null;
        end if;
      end loop;
      if job_id is null then
        return;
      end if;
      if key is not null then
        verdict := queue_pump.admit(claim.organization_id, q, key, not holding);
        holding := holding or verdict in ('go', 'full', 'rate');
        if verdict not in ('go', 'free') then
          if verdict = 'busy' then
            busy := busy || key;
          end if;
          job_id := null;
          continue;
        end if;
      end if;
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

-- observation --------------------------------------------------------------------------------

-- A job as the operator API shows it (the steer migration's), with issue 24's fields.
create or replace function queue_pump.job_json(j queue_pump.jobs, full boolean default false)
returns jsonb
language sql stable parallel safe
as $$
  select jsonb_build_object(
    'id', j.id, 'queue', j.queue, 'type', j.job_type, 'status', j.status,
    'attempts', j.attempts, 'maxAttempts', j.max_attempts,
    'runAt', queue_pump.iso(j.run_at), 'createdAt', queue_pump.iso(j.created_at),
    'updatedAt', queue_pump.iso(j.updated_at), 'startedAt', queue_pump.iso(j.started_at),
    'finishedAt', queue_pump.iso(j.finished_at), 'heartbeatAt', queue_pump.iso(j.heartbeat_at),
    'leaseExpiresAt', queue_pump.iso(j.lease_expires_at), 'lockedBy', j.locked_by,
    'dedupeKey', j.dedupe_key, 'lastError', j.last_error, 'cancelRequested', j.cancel_requested,
    'priority', j.priority, 'concurrencyKey', j.concurrency_key, 'after', to_jsonb(j."after"),
    'afterFailure', j.after_failure, 'parentId', j.parent_id, 'waitingFor', j.waiting_for,
    'parked', j.parked)
  || case when job_json.full then jsonb_build_object('payload', j.payload, 'progress', j.progress,
                                            'result', j.result)
          else '{}'::jsonb end
$$;

-- "Due" leaves out jobs waiting for others and jobs parked by their key's limit: adding
-- workers would not start them. (And, as in the steer migration, running jobs with a cancel
-- request, which the claim ends rather than runs again.)
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
     and x.status = 'queued' and x.waiting_for = 0 and not x.parked and x.run_at <= now()
  union all
  select x.lease_expires_at from queue_pump.jobs x
   where x.organization_id = due_since.organization_id and x.queue = due_since.queue
     and x.status = 'running' and x.lease_expires_at < now()
     and x.attempts < x.max_attempts and not x.cancel_requested;
$$;

-- Only the service role may call the ways in; the helpers are not granted to anyone (they run
-- inside the functions above, as their owner).
revoke all on all functions in schema queue_pump from public;
do $$
begin
  execute 'revoke all on all functions in schema queue_pump from anon, authenticated';
  execute 'grant execute on all functions in schema queue_pump to service_role';
exception when undefined_object then
  raise notice 'queue_pump: roles anon/authenticated/service_role not found (not Supabase?)';
end $$;
