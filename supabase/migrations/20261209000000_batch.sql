-- queue-pump: more jobs per runner call, and the backlog in the answer (issue 25). Adds two
-- functions and changes nothing that exists: a deployed kit upgrades in place.
--
--   claim_batch   up to max_jobs claims in one statement (one round trip from the function)
--   backlog       how many jobs are due, counted up to a cap, so that it costs the same at
--                 1,000 or 1,000,000 jobs in the table
--
-- Applies on a plain PostgreSQL 15+ with Supabase's roles anon, authenticated and service_role.

-- claim_batch --------------------------------------------------------------------------------

-- Deliberately a thin loop over queue_pump.claim, not a claim of its own: every rule of which
-- job comes next and what starting one means (expired leases first, max_attempts, payload
-- limits, and whatever later migrations add to claim: history, cancellation, priorities,
-- concurrency keys, dependencies) lives in claim alone and carries over unchanged. Each turn is
-- one claim, as if the function had called it max_jobs times, minus the round trips; the loop
-- stops at the first claim that finds nothing. Every job gets the same holder (worker), which
-- is still unique per call from the kit's runner; fencing is per job id and holder, so a batch's
-- jobs are completed, failed and heartbeated one by one exactly as single claims are.
-- Measured beside a single claim in docs/BENCHMARKS.md (bench/supabase_kit.py claim-batch).
create function queue_pump.claim_batch(
  organization_id text,
  queue text default 'agent',
  worker text default null,
  lease_seconds integer default 600,
  max_jobs integer default 10
) returns setof queue_pump.jobs
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  -- Without a worker name the batch gets one holder of its own (claim would give each job
  -- another; one per call is what the runner does and is as safe).
  holder text := coalesce(claim_batch.worker, gen_random_uuid()::text);
  claimed queue_pump.jobs;
begin
  if claim_batch.max_jobs is null or claim_batch.max_jobs < 1 or claim_batch.max_jobs > 1000 then
    raise exception 'queue_pump.claim_batch: max_jobs must be between 1 and 1000, got %',
      coalesce(claim_batch.max_jobs::text, 'null') using errcode = '22023';
  end if;
  for n in 1..claim_batch.max_jobs loop
    select c.* into claimed
      from queue_pump.claim(organization_id => claim_batch.organization_id,
                            queue => claim_batch.queue, worker => holder,
                            lease_seconds => claim_batch.lease_seconds) c;
    exit when not found;
    return next claimed;
  end loop;
end;
$$;

-- backlog ------------------------------------------------------------------------------------

-- How many jobs are due now by time (queued with run_at passed, or running with an expired
-- lease and an attempt left), counted up to `cap`: a result equal to cap means at least that
-- many. It reads at most about cap index entries of queued and running jobs, never the
-- history, so it costs the same with 1,000 or 1,000,000 jobs in the table (tests/supabase/
-- test_batch_sql.py counts the reads). Bitmap scans are off: the planner, which cannot tell
-- how many jobs of one queue are due, chose one, and a bitmap scan reads every due entry
-- before the limit applies (5,000 for a cap of 1,000). No order either: any cap entries do,
-- whatever the due index's order is (later migrations may change it).
-- A queued job always has an attempt left (constraint jobs_queued_has_attempts_left), so the
-- queued part needs no look at attempts. Queued jobs still waiting for others (waiting_for) or
-- parked by their key's limits are not due: left out, which is also what keeps the queued part
-- on the due index (jobs_due_idx holds exactly the others). A claim may still hold back some of
-- these (a key that fills up meanwhile, an operator's cancel on a running one): the count is an
-- upper bound of what the next claims take, which is what a pump deciding how many loops to
-- wake needs.
create function queue_pump.backlog(
  organization_id text,
  queue text default 'agent',
  cap integer default 1000
) returns integer
language plpgsql
stable
security definer
set search_path = ''
set lock_timeout = '5s'
set enable_bitmapscan = off
as $$
declare
  q text := coalesce(backlog.queue, 'agent');
  n integer;
begin
  if backlog.cap is null or backlog.cap < 1 or backlog.cap > 100000 then
    raise exception 'queue_pump.backlog: cap must be between 1 and 100000, got %',
      coalesce(backlog.cap::text, 'null') using errcode = '22023';
  end if;
  select count(*) into n from (
    (select 1 from queue_pump.jobs x
      where x.organization_id = backlog.organization_id and x.queue = q
        and x.status = 'queued' and x.waiting_for = 0 and not x.parked and x.run_at <= now()
      limit backlog.cap)
    union all
    (select 1 from queue_pump.jobs x
      where x.organization_id = backlog.organization_id and x.queue = q
        and x.status = 'running' and x.lease_expires_at < now()
        and x.attempts < x.max_attempts
      limit backlog.cap)
    limit backlog.cap) d;
  return n;
end;
$$;

revoke all on function queue_pump.claim_batch(text, text, text, integer, integer) from public;
revoke all on function queue_pump.backlog(text, text, integer) from public;
do $$
begin
  execute 'revoke all on function queue_pump.claim_batch(text, text, text, integer, integer)'
          ' from anon, authenticated';
  execute 'revoke all on function queue_pump.backlog(text, text, integer)'
          ' from anon, authenticated';
  execute 'grant execute on function queue_pump.claim_batch(text, text, text, integer, integer)'
          ' to service_role';
  execute 'grant execute on function queue_pump.backlog(text, text, integer) to service_role';
exception when undefined_object then
  raise notice 'queue_pump: roles anon/authenticated/service_role not found (not Supabase?)';
end $$;
