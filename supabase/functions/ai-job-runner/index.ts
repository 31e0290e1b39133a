// ai-job-runner: the runner the pump calls (docs/RUNNER_CONTRACT.md). Each POST claims up to
// JOB_BATCH_SIZE due jobs of its queue in one statement, runs their handlers at once and records
// each outcome as it comes; the answer says how many ran and how many are still due.
//
// Secrets/environment: AGENT_TOKEN (required, 16+ characters), SUPABASE_DB_URL (set by
// Supabase), JOB_BATCH_SIZE (default 10, 1-100; 1 is one job per call), JOB_LEASE_SECONDS
// (default 600, above the platform's 400 s wall-clock limit), JOB_TIME_BUDGET_MS (default
// 120000), JOB_CANCEL_POLL_MS (default 1000: how often each running handler's job is checked
// for an operator's cancel), ALLOWED_ORGANIZATION_IDS (optional, comma-separated),
// DB_POOL_MAX (default 5), DB_RECONNECT_MS (default 2000), DB_RETRY_AFTER_SECONDS (default 5);
// under plain Deno PORT, HOST and the HTTP_* limits of the guarded front (docs/SUPABASE.md).
import { availabilityFromEnv, connect, Database, dbPasswordForms } from "../_shared/db.ts";
import { distinctTokens, intFromEnv, listFromEnv, tokenFromEnv } from "../_shared/env.ts";
import { error } from "../_shared/http.ts";
import { accept } from "../_shared/request.ts";
import { Masker } from "../_shared/secrets.ts";
import { prepare, stopOnSignals } from "../_shared/serve.ts";
import { handlers } from "./handlers.ts";
import { MAX_BATCH_SIZE, MAX_BODY_BYTES, queueOf, runBatch, type RunnerOptions } from "./runner.ts";

const { handler, options } = prepare("ai-job-runner", MAX_BODY_BYTES, () => {
  const token = tokenFromEnv("AGENT_TOKEN");
  distinctTokens(token, "ADMIN_TOKEN");
  const allowed = listFromEnv("ALLOWED_ORGANIZATION_IDS");
  const [password, ...spellings] = dbPasswordForms();
  const runner: RunnerOptions = {
    leaseSeconds: intFromEnv("JOB_LEASE_SECONDS", 600, 2, 86400),
    batchSize: intFromEnv("JOB_BATCH_SIZE", 10, 1, MAX_BATCH_SIZE),
    cancelPollMs: intFromEnv("JOB_CANCEL_POLL_MS", 1000, 50, 600_000),
    timeBudgetMs: intFromEnv("JOB_TIME_BUDGET_MS", 120_000, 100, 86_400_000),
    handlers,
    masker: new Masker(password ? [token, password] : [token], spellings),
  };
  const db = new Database(connect(), availabilityFromEnv());

  return async (req: Request): Promise<Response> => {
    const call = await accept(req, "ai-job-runner", token, allowed, MAX_BODY_BYTES);
    if (call instanceof Response) return call;
    const queue = queueOf(call.url, call.body);
    if (queue === null) return error(400, "queue must be 1-100 characters of A-Z a-z 0-9 _ . : -");
    return await runBatch(db, call.caller, queue, runner);
  };
});

// Plain Deno: a private unix socket behind the guarded front; Supabase: the runtime's socket.
stopOnSignals("path" in options ? Deno.serve(options, handler) : Deno.serve(options, handler));
