-- queue-pump: the pg_cron safety net. Optional, and not a migration.
--
-- Keeps pg_cron + pg_net calling ai-job-runner once a minute, the way many queues run before
-- they have a pump, so that jobs still move (slowly: one job a minute) while no pump runs.
-- With a pump running it adds one call a minute, which finds the queue empty or takes a job.
-- Run it once in the SQL editor (Dashboard > SQL) after replacing the three values in <...>;
-- the token and organization live in Vault, not in the job's text. Re-running it is safe.
-- Undo: select cron.unschedule('queue-pump-safety-net'); select cron.unschedule('queue-pump-purge');

create extension if not exists pg_cron;
create extension if not exists pg_net;

select vault.create_secret('https://<project-ref>.supabase.co', 'queue_pump_project_url')
 where not exists (select 1 from vault.secrets where name = 'queue_pump_project_url');
select vault.create_secret('<AGENT_TOKEN>', 'queue_pump_agent_token')
 where not exists (select 1 from vault.secrets where name = 'queue_pump_agent_token');
select vault.create_secret('<ORGANIZATION_ID>', 'queue_pump_organization_id')
 where not exists (select 1 from vault.secrets where name = 'queue_pump_organization_id');

-- The pump's call, byte for byte the same request (docs/RUNNER_CONTRACT.md).
select cron.schedule('queue-pump-safety-net', '* * * * *', $job$
  select net.http_post(
    url := (select decrypted_secret from vault.decrypted_secrets
             where name = 'queue_pump_project_url')
           || '/functions/v1/ai-job-runner?worker=1&queue=agent',
    headers := jsonb_build_object(
      'Content-Type', 'application/json',
      'Accept', 'application/json',
      'X-Worker-Id', 'pg_cron',
      'X-Agent-Token', (select decrypted_secret from vault.decrypted_secrets
                         where name = 'queue_pump_agent_token'),
      'X-Organization-Id', (select decrypted_secret from vault.decrypted_secrets
                             where name = 'queue_pump_organization_id')),
    body := '{"worker": true, "queue": "agent"}'::jsonb,
    timeout_milliseconds := 150000
  );
$job$);

-- Housekeeping: finished jobs older than 7 days, every 5 minutes, in batches of 10,000 (short
-- transactions) until fewer are left: up to 200,000 a run, more than a busy queue finishes.
select cron.schedule('queue-pump-purge', '*/5 * * * *', $job$
  do $purge$
  begin
    for batch in 1..20 loop
      exit when queue_pump.purge(interval '7 days', 10000) < 10000;
    end loop;
  end
  $purge$;
$job$);
