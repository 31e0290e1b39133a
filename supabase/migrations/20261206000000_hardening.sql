-- queue-pump: the kit hardened (issue 20). Upgrades a deployed 20261128000000_queue_pump in
-- place: jobs already queued, running or finished keep working, and keep their ids.
--
--   ids        new jobs get ids that reveal no count (a keyed permutation of a counter), still
--              bigint and exact in JavaScript (2^52 .. 2^53-1); existing ids stay as they are
--   enqueue    always returns a job: the one created, or the one holding the dedupe key, even
--              when purge deletes that one meanwhile; every argument checked by name
--   JSON       payloads, progress and results at most 1 MiB (as PostgreSQL writes the JSON);
--              numbers a JavaScript handler would not read exactly are refused
--   claim      never starts a job past max_attempts; a job too big to hand out ends failed
--   leases     every lease_seconds refuses null and out-of-range values the same way
--   purge      refuses negative and absurd intervals
--
-- Applies on a plain PostgreSQL 15+ with Supabase's roles anon, authenticated and service_role.

-- Text means the bytes that were sent. Under any other encoding (SQL_ASCII) PostgreSQL stores
-- bytes unchecked, and the functions' UTF-8 clients would read two different keys as one.
do $$
begin
  if pg_encoding_to_char((select d.encoding from pg_database d
                           where d.datname = current_database())) <> 'UTF8' then
    raise exception 'queue_pump: this database''s encoding is %, the kit needs UTF8',
      pg_encoding_to_char((select d.encoding from pg_database d
                            where d.datname = current_database()));
  end if;
end $$;

-- limits and argument checks ----------------------------------------------------------------

-- These helpers read no table and hold no right of their own: they run as their caller
-- (inside the functions below: the owner, with the functions' empty search_path) and take no
-- SET clause, which would cost a settings save and restore on every call of a hot path.

-- One limit for every JSON value the kit stores and hands to a handler (payload, progress,
-- result): 1 MiB of JSON as PostgreSQL writes it (`value::text`, the text a runner reads).
-- A plain SQL constant, so that the planner folds it where it is used.
create function queue_pump.max_json_bytes() returns integer
language sql
immutable
parallel safe
as $$ select 1048576 $$;

-- The window a run_at must fall in: finite, and a date a person could mean. A run_at of
-- -infinity broke stats(); one in 4713 BC reported an age of 2.1e11 s.
create function queue_pump.check_run_at(fn text, run_at timestamptz) returns void
language plpgsql
immutable
as $$
begin
  if check_run_at.run_at is not null and not (
       check_run_at.run_at >= '2000-01-01 00:00:00+00'
       and check_run_at.run_at < '10000-01-01 00:00:00+00') then
    raise exception 'queue_pump.%: run_at must be from 2000-01-01 to 9999-12-31 UTC, got %',
      fn, check_run_at.run_at using errcode = '22023';
  end if;
end;
$$;

create function queue_pump.check_text(fn text, arg text, value text, min_chars integer,
                                      max_chars integer) returns void
language plpgsql
immutable
as $$
begin
  if value is null or length(value) < min_chars or length(value) > max_chars then
    raise exception 'queue_pump.%: % must be text of % to % characters, got %', fn, arg,
      min_chars, max_chars, case when value is null then 'null'
                                 else length(value) || ' characters' end
      using errcode = '22023';
  end if;
end;
$$;

-- Null when `value` can be stored and handed to a JavaScript handler as it is, else why not
-- (`numbers` false: its size only).
-- A handler reads JSON numbers as IEEE doubles: 9007199254740993 would arrive as ...992 and
-- 1e400 as Infinity. So a number is refused unless its decimal value survives the trip
-- through a double (its shortest round-trip form, extra_float_digits > 0, has the same value):
-- 0.1 and 1.10 pass, 12345678901234567891 does not. Any number of at most 15 digits passes
-- (DBL_DIG), and jsonb never writes exponents, so only texts with a run of 16 digits or dots
-- are walked.
create function queue_pump.json_problem(value jsonb, numbers boolean default true) returns text
language plpgsql
stable
set extra_float_digits = 3
as $$
declare
  text_form text;
  bad numeric;
begin
  if value is null then
    return null;
  end if;
  text_form := value::text;
  if octet_length(text_form) > queue_pump.max_json_bytes() then
    return format('is %s bytes of JSON, over the limit of %s', octet_length(text_form),
                  queue_pump.max_json_bytes());
  end if;
  if not numbers or text_form !~ '[0-9.]{16}' then
    return null;
  end if;
  select n.v into bad
    from (select (x #>> '{}')::numeric as v
            from jsonb_path_query(value, 'strict $.** ? (@.type() == "number")') x) n
   where length(n.v::text) > 15
     and (abs(n.v) > 1.7976931348623157e308 or abs(n.v) < 4.9406564584124654e-324
          or n.v::float8::text::numeric <> n.v)
   limit 1;
  if found then
    return format('holds the number %s, which JavaScript would not read exactly'
                  ' (send it as a string)', case when length(bad::text) <= 30 then bad::text
                  else left(bad::text, 20) || '... (' || length(bad::text) || ' characters)' end);
  end if;
  return null;
end;
$$;

create function queue_pump.check_json(fn text, arg text, value jsonb,
                                      numbers boolean default true) returns void
language plpgsql
stable
as $$
declare
  problem text := queue_pump.json_problem(value, numbers);
begin
  if problem is not null then
    raise exception 'queue_pump.%: % %', fn, arg, problem using errcode = '22023';
  end if;
end;
$$;

-- ids -----------------------------------------------------------------------------------------

-- A job's id was the next value of one counter shared by every organization, so the ids one
-- organization saw counted everybody's enqueues. New ids are 2^52 + F(n): n from a counter, F
-- a 6-round Feistel permutation of 52 bits keyed by a random secret that no role but the owner
-- reads. A permutation cannot collide, the ids stay bigint below 2^53 (exact in JavaScript),
-- and they sit above every id the identity gave out before, which stay as they were.
create sequence queue_pump.job_counter as bigint minvalue 0 maxvalue 4503599627370495 start 0;

create table queue_pump.id_key (
  one boolean primary key default true check (one),
  key bytea not null check (octet_length(key) = 32)
);
insert into queue_pump.id_key (key)
values (uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));
alter table queue_pump.id_key enable row level security;
revoke all on queue_pump.id_key from public;
do $$
begin
  execute 'revoke all on table queue_pump.id_key from anon, authenticated, service_role';
exception when undefined_object then
  raise notice 'queue_pump: roles anon/authenticated/service_role not found (not Supabase?)';
end $$;

create function queue_pump.new_job_id() returns bigint
language plpgsql
volatile
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  n bigint := nextval('queue_pump.job_counter');
  secret bytea := (select k.key from queue_pump.id_key k);
  l bigint := n >> 26;
  r bigint := n & 67108863;
  h bytea;
  t bigint;
begin
  for i in 0..5 loop
    h := sha256(secret || int4send(i) || int8send(r));
    t := l # (((get_byte(h, 0)::bigint << 24) | (get_byte(h, 1) << 16) | (get_byte(h, 2) << 8)
               | get_byte(h, 3)) & 67108863);
    l := r;
    r := t;
  end loop;
  return 4503599627370496 + ((l << 26) | r);
end;
$$;

alter table queue_pump.jobs alter column id drop identity if exists;
alter table queue_pump.jobs alter column id set default queue_pump.new_job_id();

-- Jobs due at the same instant were taken in id order, which was the order they were enqueued
-- in; ids no longer say that. created_at does, once it is the insert's own time rather than
-- its transaction's start: a batch enqueued in one statement is then taken in order, and the
-- claim walks the table in the order it was written (in id order, a batch's claims cost 50 %
-- more, hopping over the heap). The due index is rebuilt with it; it holds queued jobs only.
alter table queue_pump.jobs alter column created_at set default clock_timestamp();
create index jobs_due_order_idx on queue_pump.jobs (organization_id, queue, run_at, created_at, id)
  where status = 'queued';
drop index queue_pump.jobs_due_idx;
alter index queue_pump.jobs_due_order_idx rename to jobs_due_idx;

-- payload sizes -------------------------------------------------------------------------------

-- A payload's size as PostgreSQL writes it, recorded by enqueue (which measures it anyway), so
-- that the claim does not write a payload out once more to measure it (2.4 ms for 1 MiB here:
-- draining jobs at the limit went from 182 to 137 a second). Null for jobs from before, and
-- after any update that changes the payload (a direct one): then the claim measures.
alter table queue_pump.jobs add column payload_bytes integer;

create function queue_pump.forget_payload_bytes() returns trigger
language plpgsql
as $$
begin
  if new.payload is distinct from old.payload then
    new.payload_bytes := null;
  end if;
  return new;
end;
$$;

create trigger jobs_payload_bytes before update of payload on queue_pump.jobs
  for each row execute function queue_pump.forget_payload_bytes();

-- rows the old functions let through ---------------------------------------------------------

-- requeue(max_free_yields => null) could leave a job queued with no attempts left; the claim
-- then ran it past max_attempts. End those failed, and keep new ones out. These updates touch
-- only jobs still to run (queued or running), not the history.
update queue_pump.jobs j
   set status = 'failed', finished_at = now(), updated_at = now(),
       last_error = coalesce(j.last_error || ' / ', '') || 'no attempts left'
 where j.status = 'queued' and j.attempts >= j.max_attempts;
update queue_pump.jobs j
   set run_at = least(greatest(j.run_at, '2000-01-01 00:00:00+00'),
                      '9999-12-31 00:00:00+00'),
       updated_at = now()
 where j.status = 'queued'
   and not (j.run_at >= '2000-01-01 00:00:00+00' and j.run_at < '10000-01-01 00:00:00+00');
-- Jobs still to run whose payload or progress a handler would get changed (a number such as
-- 9007199254740993, which arrived as ...992) or should not get at all (over 1 MiB) end failed
-- now, with the reason, rather than run. Enqueue refuses both from now on.
update queue_pump.jobs j
   set status = 'failed', finished_at = now(), updated_at = now(),
       locked_by = null, lease_expires_at = null,
       last_error = 'not run: its ' || coalesce('payload ' || queue_pump.json_problem(j.payload),
                                                'progress ' || queue_pump.json_problem(j.progress))
 where j.status = 'queued'
   and coalesce(queue_pump.json_problem(j.payload), queue_pump.json_problem(j.progress)) is not null;
update queue_pump.jobs j
   set status = 'failed', finished_at = now(), updated_at = now(),
       locked_by = null, lease_expires_at = null,
       last_error = 'not run again: its ' || coalesce('payload ' || queue_pump.json_problem(j.payload),
                                                      'progress ' || queue_pump.json_problem(j.progress))
 where j.status = 'running'
   and coalesce(queue_pump.json_problem(j.payload), queue_pump.json_problem(j.progress)) is not null;
-- NOT VALID: enforced on every write from now on, without a scan of the whole history under
-- this migration's lock. The rows that could break them (queued ones) were fixed just above.
alter table queue_pump.jobs add constraint jobs_queued_has_attempts_left
  check (status <> 'queued' or attempts < max_attempts) not valid;
alter table queue_pump.jobs add constraint jobs_run_at_window
  check (run_at >= '2000-01-01 00:00:00+00' and run_at < '10000-01-01 00:00:00+00') not valid;

-- enqueue ------------------------------------------------------------------------------------

create or replace function queue_pump.enqueue_job(
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
  q text := coalesce(enqueue_job.queue, 'agent');
  payload_text text := coalesce(enqueue_job.payload, '{}'::jsonb)::text;
  new_id bigint;
begin
  perform queue_pump.check_text('enqueue', 'organization_id', enqueue_job.organization_id, 1, 200);
  perform queue_pump.check_text('enqueue', 'queue', q, 1, 100);
  perform queue_pump.check_text('enqueue', 'job_type', enqueue_job.job_type, 1, 200);
  if enqueue_job.dedupe_key is not null then
    perform queue_pump.check_text('enqueue', 'dedupe_key', enqueue_job.dedupe_key, 1, 500);
  end if;
  if octet_length(payload_text) > queue_pump.max_json_bytes() or payload_text ~ '[0-9.]{16}' then
    perform queue_pump.check_json('enqueue', 'payload', enqueue_job.payload);
  end if;
  perform queue_pump.check_run_at('enqueue', enqueue_job.run_at);
  if enqueue_job.max_attempts is not null
     and (enqueue_job.max_attempts < 1 or enqueue_job.max_attempts > 1000) then
    raise exception 'queue_pump.enqueue: max_attempts must be between 1 and 1000, got %',
      enqueue_job.max_attempts using errcode = '22023';
  end if;

  -- With a dedupe key the insert gives way to the job holding it, which the look-up below
  -- then returns. Purge (or a delete) can remove that job between the two statements; then
  -- the key is free and the next round inserts. A round only repeats after such a delete.
  for tries in 1..10 loop
    insert into queue_pump.jobs as j
      (organization_id, queue, job_type, payload, payload_bytes, dedupe_key, run_at,
       max_attempts)
    values (
      enqueue_job.organization_id,
      q,
      enqueue_job.job_type,
      coalesce(enqueue_job.payload, '{}'::jsonb),
      octet_length(payload_text),
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
    -- ON CONFLICT waited for a concurrent insert of the key to commit, and this statement's
    -- snapshot is newer than that commit, so the holder is visible unless it was deleted.
    return query
      select j.id, false from queue_pump.jobs j
       where j.organization_id = enqueue_job.organization_id
         and j.queue = q
         and j.dedupe_key = enqueue_job.dedupe_key;
    if found then
      return;
    end if;
  end loop;
  raise exception 'queue_pump.enqueue: dedupe_key % was taken and freed 10 times in a row',
    left(enqueue_job.dedupe_key, 100) using errcode = '40001';
end;
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
begin
  -- The same words as heartbeat's.
  if claim.lease_seconds is null or claim.lease_seconds < 1 or claim.lease_seconds > 86400 then
    raise exception 'queue_pump.claim: lease_seconds must be between 1 and 86400, got %',
      coalesce(claim.lease_seconds::text, 'null') using errcode = '22023';
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

  -- A job too big to hand out (stored before the limit, or written around the functions) ends
  -- failed without being sent: one such payload took a runner's memory for every caller.
  for tries in 1..10 loop
    -- Picking: the rules of which job comes next, each a read of a partial index of live
    -- work (priorities or concurrency keys would go here). An expired lease first: that job
    -- has waited since its lease ran out. Then the oldest due queued job with an attempt left.
    select x.id into job_id from queue_pump.jobs x
     where x.organization_id = claim.organization_id and x.queue = q
       and x.status = 'running' and x.lease_expires_at < now()
       and x.attempts < x.max_attempts
     order by x.lease_expires_at
     limit 1
     for update skip locked;
    if job_id is null then
      select x.id into job_id from queue_pump.jobs x
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

    -- Starting: the lease, and the attempt counted.
    update queue_pump.jobs j
       set status = 'running',
           attempts = j.attempts + 1,
           locked_by = holder,
           lease_expires_at = now() + make_interval(secs => claim.lease_seconds),
           started_at = now(),
           updated_at = now()
     where j.id = job_id
       and coalesce(j.payload_bytes, octet_length(j.payload::text)) <= max_bytes
       and coalesce(octet_length(j.progress::text), 0) <= max_bytes
    returning j.* into claimed;
    if found then
      return next claimed;
      return;
    end if;
    update queue_pump.jobs j
       set status = 'failed', finished_at = now(), updated_at = now(),
           last_error = 'not run: its ' || coalesce('payload ' || queue_pump.json_problem(j.payload, false),
                                                    'progress ' || queue_pump.json_problem(j.progress, false))
     where j.id = job_id;
    job_id := null;
  end loop;
end;
$$;

-- lease holders ------------------------------------------------------------------------------

create or replace function queue_pump.heartbeat(
  job_id bigint,
  worker text,
  lease_seconds integer default 600,
  progress jsonb default null
) returns timestamptz
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  until timestamptz;
begin
  -- The same words as claim's: null or out of range is refused, never clamped.
  if heartbeat.lease_seconds is null or heartbeat.lease_seconds < 1
     or heartbeat.lease_seconds > 86400 then
    raise exception 'queue_pump.heartbeat: lease_seconds must be between 1 and 86400, got %',
      coalesce(heartbeat.lease_seconds::text, 'null') using errcode = '22023';
  end if;
  perform queue_pump.check_json('heartbeat', 'progress', heartbeat.progress);
  update queue_pump.jobs j
     set lease_expires_at = now() + make_interval(secs => heartbeat.lease_seconds),
         progress = coalesce(heartbeat.progress, j.progress),
         updated_at = now()
   where j.id = heartbeat.job_id and j.status = 'running' and j.locked_by = heartbeat.worker
  returning j.lease_expires_at into until;
  return until;
end;
$$;

create or replace function queue_pump.complete(
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
  -- A result is stored, never handed to a handler: its size is checked, not its numbers.
  if octet_length(complete.result::text) > queue_pump.max_json_bytes() then
    perform queue_pump.check_json('complete', 'result', complete.result, false);
  end if;
  update queue_pump.jobs j
     set status = 'done', result = complete.result, finished_at = now(), updated_at = now(),
         locked_by = null, lease_expires_at = null, last_error = null
   where j.id = complete.job_id and j.status = 'running' and j.locked_by = complete.worker;
  return found;
end;
$$;

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
begin
  if requeue.max_free_yields is null or requeue.max_free_yields < 0
     or requeue.max_free_yields > 1000000 then
    raise exception 'queue_pump.requeue: max_free_yields must be between 0 and 1000000, got %',
      coalesce(requeue.max_free_yields::text, 'null') using errcode = '22023';
  end if;
  perform queue_pump.check_json('requeue', 'progress', requeue.progress);
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

-- housekeeping -------------------------------------------------------------------------------

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
  -- purge('-1000 years') deleted jobs that had just finished.
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
                   where x.status in ('done', 'failed')
                     and x.finished_at < now() - purge.older_than
                   order by x.finished_at
                   limit purge.max_rows
                   for update skip locked);
  get diagnostics deleted = row_count;
  return deleted;
end;
$$;

-- Only the service role may call these (the first migration's default privileges already keep
-- PUBLIC out of functions added later; the grants are repeated for the new ones).
revoke all on all functions in schema queue_pump from public;
do $$
begin
  execute 'revoke all on all functions in schema queue_pump from anon, authenticated';
  execute 'grant execute on all functions in schema queue_pump to service_role';
  execute 'revoke all on sequence queue_pump.job_counter from anon, authenticated, service_role';
exception when undefined_object then
  raise notice 'queue_pump: roles anon/authenticated/service_role not found (not Supabase?)';
end $$;
