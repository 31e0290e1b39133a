// One runner call: claim one due job of the call's queue, run its handler, record the outcome.
import { type Caller } from "../_shared/auth.ts";
import { databaseError, isUnavailable, type Sql, sqlState } from "../_shared/db.ts";
import { json } from "../_shared/http.ts";
import { jsonProblem, storableText } from "../_shared/json.ts";
import { type Handler, type JobContext, type JobInfo, Yield } from "./handlers.ts";

export interface RunnerOptions {
  leaseSeconds: number;
  /** How long one handler may run, capped so that it ends well inside the lease. */
  timeBudgetMs: number;
  handlers: Record<string, Handler>;
  /** Masked out of every error text the function answers or logs (the token, the DB password). */
  secrets: string[];
  /** Retry-After of the 503 answered while the database is away. */
  retryAfterSeconds: number;
}

export class LeaseLost extends Error {}

// A result or a checkpoint is stored as jsonb; past this it is a job error, not a memory bill.
export const MAX_RESULT_CHARS = 1024 * 1024;

interface ClaimedRow {
  id: number;
  job_type: string;
  queue: string;
  payload: unknown;
  progress: unknown;
  attempts: number;
  max_attempts: number;
}

type Outcome =
  | { kind: "done"; result: unknown }
  | { kind: "yield"; progress: unknown; runInSeconds: number }
  | { kind: "error"; message: string };

const QUEUE_PATTERN = /^[A-Za-z0-9_.:\-]{1,100}$/;

/** The query's queue wins over the body's; without either it is "agent" (the contract, §1). */
export function queueOf(url: URL, body: Record<string, unknown>): string | null {
  const raw = url.searchParams.get("queue") ?? body.queue ?? "agent";
  return typeof raw === "string" && QUEUE_PATTERN.test(raw) ? raw : null;
}

export async function runOne(sql: Sql, caller: Caller, queue: string, opts: RunnerOptions): Promise<Response> {
  // Unique per claim, so a lease is never mistaken for another call's even from one pump.
  const worker = `${caller.workerId}/${crypto.randomUUID()}`;
  let rows: ClaimedRow[];
  try {
    rows = await sql<ClaimedRow[]>`
      select id, job_type, queue, payload, progress, attempts, max_attempts
        from queue_pump.claim(organization_id => ${caller.organizationId}, queue => ${queue},
                              worker => ${worker}, lease_seconds => ${opts.leaseSeconds})`;
  } catch (err) {
    return databaseError(err, opts.retryAfterSeconds);
  }
  if (rows.length === 0) return json(200, { processed: false });
  const row = rows[0];
  const job: JobInfo = {
    id: row.id,
    type: row.job_type,
    queue: row.queue,
    organizationId: caller.organizationId,
    attempt: row.attempts,
    maxAttempts: row.max_attempts,
  };
  let outcome = await runHandler(sql, job, row, worker, opts);
  if (outcome.kind === "error") outcome = { kind: "error", message: mask(outcome.message, opts.secrets) };
  let status: string;
  try {
    status = await recordOrFail(sql, job, worker, outcome);
  } catch (err) {
    // The job ran but its outcome could not be written: it stays running until its lease ends,
    // then runs again (at least once). Tell the pump to back off from a database that is away.
    return databaseError(err, opts.retryAfterSeconds);
  }
  logOutcome(job, status, outcome);
  return json(200, {
    processed: true,
    jobId: job.id,
    jobType: job.type,
    status,
    yielded: outcome.kind === "yield",
    attempt: job.attempt,
    ...(outcome.kind === "error" ? { error: outcome.message } : {}),
  });
}

async function runHandler(
  sql: Sql,
  job: JobInfo,
  row: ClaimedRow,
  worker: string,
  opts: RunnerOptions,
): Promise<Outcome> {
  const handler = Object.hasOwn(opts.handlers, job.type) ? opts.handlers[job.type] : undefined;
  if (!handler) return { kind: "error", message: `no handler for job_type ${JSON.stringify(job.type.slice(0, 100))}` };
  // Leave the lease 10 % (at least 1 s) of slack to record the outcome before it runs out.
  const budget = Math.min(opts.timeBudgetMs, opts.leaseSeconds * 1000 - Math.max(1000, opts.leaseSeconds * 100));
  const controller = new AbortController();
  const ctx = context(sql, job, row, worker, opts, budget, controller.signal);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<Outcome>((resolve) => {
    timer = setTimeout(() => {
      controller.abort();
      resolve({ kind: "error", message: `handler ran past its ${budget} ms budget` });
    }, budget);
  });
  try {
    return await Promise.race([settle(handler, ctx), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function context(
  sql: Sql,
  job: JobInfo,
  row: ClaimedRow,
  worker: string,
  opts: RunnerOptions,
  budget: number,
  signal: AbortSignal,
): JobContext {
  return {
    job,
    payload: row.payload,
    progress: row.progress ?? null,
    deadline: Date.now() + budget,
    signal,
    checkpoint: async (progress: unknown) => {
      const problem = jsonProblem(progress, "checkpoint progress", MAX_RESULT_CHARS);
      if (problem) throw new Error(problem);
      const rows = await sql`select queue_pump.heartbeat(${job.id}::bigint, ${worker}, ${opts.leaseSeconds},
                                                         ${sql.json(progress as never)}) as until`;
      if (rows[0]?.until == null) throw new LeaseLost(`job ${job.id}: lease lost`);
    },
    yield: (progress?: unknown, runInSeconds = 0) => {
      const seconds = Number.isFinite(runInSeconds) ? Math.min(Math.max(runInSeconds, 0), 86400) : 0;
      return new Yield(progress ?? null, seconds);
    },
  };
}

/** The handler's outcome; a value that cannot be stored is the job's error, not the call's. */
async function settle(handler: Handler, ctx: JobContext): Promise<Outcome> {
  try {
    const result = await handler(ctx);
    if (result instanceof Yield) {
      const problem = jsonProblem(result.progress, "yield progress", MAX_RESULT_CHARS);
      if (problem) return { kind: "error", message: problem };
      return { kind: "yield", progress: result.progress, runInSeconds: result.runInSeconds };
    }
    const problem = jsonProblem(result, "the handler's result", MAX_RESULT_CHARS);
    if (problem) return { kind: "error", message: problem };
    return { kind: "done", result: result ?? null };
  } catch (err) {
    return { kind: "error", message: oneLine(err) };
  }
}

async function recordOrFail(sql: Sql, job: JobInfo, worker: string, outcome: Outcome): Promise<string> {
  try {
    return await record(sql, job, worker, outcome);
  } catch (err) {
    if (isUnavailable(err) || outcome.kind === "error") throw err;
    // The database refused what the handler gave (checked above, so rare): fail the attempt
    // with a fixed line rather than leave the job to its lease.
    return await record(sql, job, worker, {
      kind: "error",
      message: `the outcome could not be stored (SQLSTATE ${sqlState(err)})`,
    });
  }
}

async function record(sql: Sql, job: JobInfo, worker: string, outcome: Outcome): Promise<string> {
  if (outcome.kind === "done") {
    const [r] = await sql`select queue_pump.complete(${job.id}::bigint, ${worker},
                                                     ${sql.json(outcome.result as never)}) as ok`;
    return r.ok ? "done" : "lost";
  }
  if (outcome.kind === "yield") {
    const [r] = await sql`select queue_pump.requeue(${job.id}::bigint, ${worker}, ${
      sql.json(outcome.progress as never)
    },
                                                    ${outcome.runInSeconds}) as status`;
    return r.status ?? "lost";
  }
  const [r] = await sql`select queue_pump.fail(${job.id}::bigint, ${worker}, ${outcome.message}) as status`;
  return r.status ?? "lost";
}

function oneLine(err: unknown): string {
  const text = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return storableText(text.replace(/\s+/g, " "), 500);
}

/** Handlers' error texts are shown to the caller and kept in last_error: never a secret. */
export function mask(text: string, secrets: string[]): string {
  let out = text;
  for (const secret of secrets) {
    if (secret.length >= 4) out = out.replaceAll(secret, "***");
  }
  return out;
}

function logOutcome(job: JobInfo, status: string, outcome: Outcome): void {
  if (status === "done") return;
  console.log(JSON.stringify({
    event: "job_" + status,
    job_id: job.id,
    job_type: job.type.slice(0, 100),
    attempt: job.attempt,
    ...(outcome.kind === "error" ? { error: outcome.message } : {}),
  }));
}
