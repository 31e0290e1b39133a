// One runner call: claim up to JOB_BATCH_SIZE due jobs of the call's queue, run their handlers
// at once, record each outcome as it comes.
import { type Caller } from "../_shared/auth.ts";
import { type Database, isUnavailable, ownCheck, sqlState } from "../_shared/db.ts";
import { jsonProblem, MAX_JSON_BYTES } from "../_shared/json.ts";
import { describe, type Masker } from "../_shared/secrets.ts";
import { type Handler, type JobContext, type JobInfo, Yield } from "./handlers.ts";

export interface RunnerOptions {
  leaseSeconds: number;
  /** Most jobs one call claims and runs at once (JOB_BATCH_SIZE). */
  batchSize: number;
  /** How long one handler may run, capped so that it ends well inside the lease. */
  timeBudgetMs: number;
  handlers: Record<string, Handler>;
  /** Masks the token and the database password out of every error text answered or logged. */
  masker: Masker;
}

export class LeaseLost extends Error {}

/** The runner call's body holds at most a queue name. */
export const MAX_BODY_BYTES = 64 * 1024;
/** Error texts kept in last_error and answered to the pump. */
export const MAX_ERROR_CHARS = 500;

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

/** Most jobs one call may claim and run (JOB_BATCH_SIZE's upper bound). */
export const MAX_BATCH_SIZE = 100;
/** The backlog in an answer is counted up to this; the cap means "at least that many". */
export const BACKLOG_CAP = 1000;

/** What one job of a call became, as answered to the pump. */
interface JobReport {
  jobId: number;
  jobType: string;
  status: string;
  yielded: boolean;
  attempt: number;
  error?: string;
}

/** One runner call: claim up to opts.batchSize due jobs of the queue in one statement, run them
 * all at once, record each as it finishes, answer how many ran and how many are still due. */
export async function runBatch(db: Database, caller: Caller, queue: string, opts: RunnerOptions): Promise<Response> {
  // Unique per call, so a lease is never mistaken for another call's even from one pump.
  const worker = `${caller.workerId}/${crypto.randomUUID()}`;
  let rows: ClaimedRow[];
  try {
    rows = await db.run(() => claim(db, caller.organizationId, queue, worker, opts));
  } catch (err) {
    return db.errorResponse(err, "claim");
  }
  if (rows.length === 0) return Response.json({ processed: false });
  // Counted while the jobs run (another pooled connection), after this call's claim: the jobs
  // still due once this batch was taken. Never fails the call; without it the field is left out.
  const backlog = backlogOf(db, caller.organizationId, queue);
  // Each job on its own: one that throws, times out or cannot be recorded does not stop the
  // others, and each is recorded the moment it ends (its lease, heartbeat and fencing its own).
  const ran = await Promise.all(rows.map((row) => runAndRecord(db, caller, row, worker, opts)));
  const failed = ran.find((r): r is { err: unknown } => "err" in r);
  if (failed) {
    // A job ran but its outcome could not be written: it stays running until its lease ends,
    // then runs again (at least once). Tell the pump to back off from a database that is away;
    // the batch's other jobs were recorded (or not) each on its own.
    return db.errorResponse(failed.err, "record");
  }
  const reports = ran.map((r) => (r as { report: JobReport }).report);
  const counted = await backlog;
  const extra = { jobs: reports.length, ...(counted === null ? {} : { backlog: counted }) };
  // One job: the answer of a one-job runner (the contract's fields), plus the counts.
  if (reports.length === 1) return Response.json({ processed: true, ...reports[0], ...extra });
  return Response.json({ processed: true, ...extra, results: reports });
}

function claim(db: Database, organizationId: string, queue: string, worker: string, opts: RunnerOptions) {
  // A payload holding a number a double would change cannot be here: enqueue refuses it,
  // and the upgrade failed the jobs that held one (the hardening migration).
  if (opts.batchSize === 1) {
    return db.sql<ClaimedRow[]>`
      select id, job_type, queue, payload, progress, attempts, max_attempts
        from queue_pump.claim(organization_id => ${organizationId}, queue => ${queue},
                              worker => ${worker}, lease_seconds => ${opts.leaseSeconds})`;
  }
  return db.sql<ClaimedRow[]>`
    select id, job_type, queue, payload, progress, attempts, max_attempts
      from queue_pump.claim_batch(organization_id => ${organizationId}, queue => ${queue},
                                  worker => ${worker}, lease_seconds => ${opts.leaseSeconds},
                                  max_jobs => ${opts.batchSize})`;
}

async function backlogOf(db: Database, organizationId: string, queue: string): Promise<number | null> {
  try {
    const [r] = await db.sql`select queue_pump.backlog(${organizationId}, ${queue}, ${BACKLOG_CAP}) as n`;
    return typeof r?.n === "number" ? r.n : null;
  } catch {
    return null;
  }
}

async function runAndRecord(
  db: Database,
  caller: Caller,
  row: ClaimedRow,
  worker: string,
  opts: RunnerOptions,
): Promise<{ report: JobReport } | { err: unknown }> {
  const job: JobInfo = {
    id: row.id,
    type: row.job_type,
    queue: row.queue,
    organizationId: caller.organizationId,
    attempt: row.attempts,
    maxAttempts: row.max_attempts,
  };
  const outcome = await outcomeOf(db, job, row, worker, opts);
  let status: string;
  try {
    status = await recordOrFail(db, job, worker, outcome);
  } catch (err) {
    return { err };
  }
  logOutcome(job, status, outcome);
  return {
    report: {
      jobId: job.id,
      jobType: job.type,
      status,
      yielded: outcome.kind === "yield",
      attempt: job.attempt,
      ...(outcome.kind === "error" ? { error: outcome.message } : {}),
    },
  };
}

/** What became of the claimed job; never throws, and an error's text is masked and cut. */
async function outcomeOf(
  db: Database,
  job: JobInfo,
  row: ClaimedRow,
  worker: string,
  opts: RunnerOptions,
): Promise<Outcome> {
  let outcome: Outcome;
  try {
    outcome = await runHandler(db, job, row, worker, opts);
  } catch (err) {
    outcome = { kind: "error", message: describe(err) };
  }
  if (outcome.kind !== "error") return outcome;
  return { kind: "error", message: opts.masker.line(outcome.message, MAX_ERROR_CHARS) };
}

async function runHandler(
  db: Database,
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
  const ctx = context(db, job, row.payload, row.progress, worker, opts, budget, controller.signal);
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
  db: Database,
  job: JobInfo,
  payload: unknown,
  progress: unknown,
  worker: string,
  opts: RunnerOptions,
  budget: number,
  signal: AbortSignal,
): JobContext {
  return {
    job,
    payload,
    progress: progress ?? null,
    deadline: Date.now() + budget,
    signal,
    checkpoint: async (progress: unknown) => {
      const problem = jsonProblem(progress, "checkpoint progress", MAX_JSON_BYTES);
      if (problem) throw new Error(problem);
      const rows = await db.sql`select queue_pump.heartbeat(${job.id}::bigint, ${worker}, ${opts.leaseSeconds},
                                                            ${db.sql.json(progress as never)}) as until`;
      if (rows[0]?.until == null) throw new LeaseLost(`job ${job.id}: lease lost`);
    },
    yield: (progress?: unknown, runInSeconds = 0) => {
      const seconds = Number.isFinite(runInSeconds) ? Math.min(Math.max(runInSeconds, 0), 86400) : 0;
      return new Yield(progress ?? null, seconds);
    },
  };
}

/** The handler's outcome; a value that cannot be stored is the job's error, not the call's.
 * Never throws: whatever the handler throws or returns (a value without a prototype, a getter
 * that throws, a Proxy) ends as an outcome. */
async function settle(handler: Handler, ctx: JobContext): Promise<Outcome> {
  try {
    const result = await handler(ctx);
    if (result instanceof Yield) {
      const problem = jsonProblem(result.progress, "yield progress", MAX_JSON_BYTES);
      if (problem) return { kind: "error", message: problem };
      return { kind: "yield", progress: result.progress, runInSeconds: result.runInSeconds };
    }
    const problem = jsonProblem(result, "the handler's result", MAX_JSON_BYTES);
    if (problem) return { kind: "error", message: problem };
    return { kind: "done", result: result ?? null };
  } catch (err) {
    return { kind: "error", message: describe(err) };
  }
}

async function recordOrFail(db: Database, job: JobInfo, worker: string, outcome: Outcome): Promise<string> {
  try {
    return await db.run(() => record(db, job, worker, outcome));
  } catch (err) {
    if (isUnavailable(err) || outcome.kind === "error") throw err;
    // The database refused what the handler gave (checked above, so rare): fail the attempt
    // with a fixed line rather than leave the job to its lease.
    return await db.run(() =>
      record(db, job, worker, {
        kind: "error",
        message: ownCheck(err) ?? `the outcome could not be stored (SQLSTATE ${sqlState(err)})`,
      })
    );
  }
}

async function record(db: Database, job: JobInfo, worker: string, outcome: Outcome): Promise<string> {
  const sql = db.sql;
  if (outcome.kind === "done") {
    const [r] = await sql`select queue_pump.complete(${job.id}::bigint, ${worker},
                                                     ${sql.json(outcome.result as never)}) as ok`;
    return r.ok ? "done" : "lost";
  }
  if (outcome.kind === "yield") {
    const [r] = await sql`select queue_pump.requeue(${job.id}::bigint, ${worker}, ${
      sql.json(outcome.progress as never)
    }, ${outcome.runInSeconds}) as status`;
    return r.status ?? "lost";
  }
  const [r] = await sql`select queue_pump.fail(${job.id}::bigint, ${worker}, ${outcome.message}) as status`;
  return r.status ?? "lost";
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
