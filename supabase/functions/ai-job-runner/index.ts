// ai-job-runner: the runner the pump calls (docs/RUNNER_CONTRACT.md). Each POST claims at most
// one due job of its queue, runs the handler for its job_type and records the outcome.
//
// Secrets/environment: AGENT_TOKEN (required, 16+ characters), SUPABASE_DB_URL (set by
// Supabase), JOB_LEASE_SECONDS (default 600, above the platform's 400 s wall-clock limit),
// JOB_TIME_BUDGET_MS (default 120000), ALLOWED_ORGANIZATION_IDS (optional, comma-separated),
// DB_POOL_MAX (default 5), DB_RETRY_AFTER_SECONDS (default 5); PORT and HOST under plain Deno.
import { connect, dbPassword, retryAfterFromEnv } from "../_shared/db.ts";
import { intFromEnv, listFromEnv, tokenFromEnv } from "../_shared/env.ts";
import { error } from "../_shared/http.ts";
import { accept } from "../_shared/request.ts";
import { start } from "../_shared/start.ts";
import { handlers } from "./handlers.ts";
import { queueOf, type RunnerOptions, runOne } from "./runner.ts";

start("ai-job-runner", () => {
  const token = tokenFromEnv("AGENT_TOKEN");
  const allowed = listFromEnv("ALLOWED_ORGANIZATION_IDS");
  const options: RunnerOptions = {
    leaseSeconds: intFromEnv("JOB_LEASE_SECONDS", 600, 2, 86400),
    timeBudgetMs: intFromEnv("JOB_TIME_BUDGET_MS", 120_000, 100, 86_400_000),
    handlers,
    secrets: [token, dbPassword() ?? ""],
    retryAfterSeconds: retryAfterFromEnv(),
  };
  const sql = connect();

  return async (req: Request): Promise<Response> => {
    const call = await accept(req, "ai-job-runner", token, allowed);
    if (call instanceof Response) return call;
    const queue = queueOf(call.url, call.body);
    if (queue === null) return error(400, "queue must be 1-100 characters of A-Z a-z 0-9 _ . : -");
    return await runOne(sql, call.caller, queue, options);
  };
});
