// One runner call: claim up to JOB_BATCH_SIZE due jobs of the call's queue, run their handlers
// at once, record each outcome as it comes.
import { type Caller } from "../_shared/auth.ts";
import { type Database, isUnavailable, ownCheck, sqlState } from "../_shared/db.ts";
import { jsonProblem, MAX_JSON_BYTES } from "../_shared/json.ts";
import { log } from "../_shared/log.ts";
import { describe, type Masker } from "../_shared/secrets.ts";
import { addJob, addJobs } from "../enqueue/store.ts";
import { type NewJob, parseBatch, parseNewJob } from "../enqueue/validate.ts";
import {
  type ChildJob,
  type Enqueued,
  type Handler,
  JobCancelled,
  type JobContext,
  type JobInfo,
  Yield,
} from "./handlers.ts";

export interface RunnerOptions {
  leaseSeconds: number;
  /** Most jobs one call claims and runs at once (JOB_BATCH_SIZE). */
  batchSize: number;
  /** How often a run asks whether an operator cancelled its job while the handler runs
   * (JOB_CANCEL_POLL_MS): one read of the job's row by its key. */
  cancelPollMs: number;
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
/** ctx.log lines sent per run (the history keeps at most 200 events a job in all). */
export const MAX_LOG_LINES = 200;
export const MAX_LOG_CHARS = 2000;

interface ClaimedRow {
  id: number;
  job_type: string;
  queue: string;
  payload: unknown;
  progress: unknown;
  attempts: number;
  max_attempts: number;
  priority: number;
  concurrency_key: string | null;
  parent_id: number | null;
  after: number[] | null;
}

type Outcome =
  | { kind: "done"; result: unknown }
  | { kind: "yield"; progress: unknown; runInSeconds: number }
  | { kind: "error"; message: string }
  | { kind: "cancelled" };

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
  // Each job on its own: one that throws, times out, is cancelled or cannot be recorded does not
  // stop the others, and each is recorded the moment it ends (its lease, heartbeat, cancel poll,
  // log lines and fencing its own).
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
      select id, job_type, queue, payload, progress, attempts, max_attempts, priority,
             concurrency_key, parent_id, "after"
        from queue_pump.claim(organization_id => ${organizationId}, queue => ${queue},
                              worker => ${worker}, lease_seconds => ${opts.leaseSeconds})`;
  }
  return db.sql<ClaimedRow[]>`
    select id, job_type, queue, payload, progress, attempts, max_attempts, priority,
           concurrency_key, parent_id, "after"
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
    priority: row.priority,
    concurrencyKey: row.concurrency_key,
    parentId: row.parent_id === null ? null : Number(row.parent_id),
    after: row.after === null ? null : row.after.map(Number),
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
  let stop: (outcome: Outcome) => void = () => {};
  const stopped = new Promise<Outcome>((resolve) => stop = resolve);
  // An operator's cancel, seen by a checkpoint or by the poll: the signal is aborted and the
  // run ends now as cancelled, whatever the handler then returns or throws.
  const cancel = () => {
    if (!controller.signal.aborted) controller.abort(new JobCancelled(job.id));
    stop({ kind: "cancelled" });
  };
  const logs = new LogLines(db, job, worker, opts.masker);
  const ctx = context(db, job, row.payload, row.progress, worker, opts, budget, controller.signal, cancel, logs);
  const timer = setTimeout(() => {
    controller.abort();
    stop({ kind: "error", message: `handler ran past its ${budget} ms budget` });
  }, budget);
  let polling = false;
  const poll = setInterval(async () => {
    if (polling) return;
    polling = true;
    try {
      const [r] = await db.sql`select queue_pump.cancel_requested(${job.id}::bigint, ${worker}) as c`;
      if (r?.c === true) cancel();
    } catch {
      // the database is away: the next poll, the checkpoint or the completion will tell
    } finally {
      polling = false;
    }
  }, opts.cancelPollMs);
  try {
    const outcome = await Promise.race([settle(handler, ctx), stopped]);
    // A handler that threw because its signal was aborted by a cancel was cancelled.
    return controller.signal.reason instanceof JobCancelled ? { kind: "cancelled" } : outcome;
  } finally {
    clearTimeout(timer);
    clearInterval(poll);
    await logs.flushed();
  }
}

/** The handler's ctx.log lines, sent in order, at most MAX_LOG_LINES a run; the outcome is
 * recorded after the last of them. */
class LogLines {
  private sent = 0;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly db: Database,
    private readonly job: JobInfo,
    private readonly worker: string,
    private readonly masker: Masker,
  ) {}

  private closed = false;

  add(message: unknown, data?: unknown): Promise<void> {
    // Past the bound, or after the run's outcome (a handler left running past its deadline):
    // nothing more is sent.
    if (this.closed || this.sent >= MAX_LOG_LINES) return this.chain;
    this.sent++;
    const text = this.masker.line(typeof message === "string" ? message : describe(message), MAX_LOG_CHARS);
    let extra: unknown = null;
    if (data !== undefined && data !== null) {
      const problem = jsonProblem(data, "log data", 2048);
      try {
        extra = problem ? { unstorable: problem } : JSON.parse(this.masker.mask(JSON.stringify(data)));
      } catch {
        extra = { unstorable: "log data could not be masked and kept" };
      }
    }
    this.chain = this.chain.then(async () => {
      try {
        await this.db.sql`select queue_pump.job_log(${this.job.id}::bigint, ${this.worker}, ${text},
                                                    ${this.db.sql.json(extra as never)})`;
      } catch {
        // a log line is not worth failing the job for
      }
    });
    return this.chain;
  }

  /** Once every line sent so far is written; later ones are dropped. */
  flushed(): Promise<void> {
    this.closed = true;
    return this.chain;
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
  cancel: () => void,
  logs: LogLines,
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
      const rows = await db.sql`
        select lease_expires_at, cancel_requested from queue_pump.heartbeat_job(
          ${job.id}::bigint, ${worker}, ${opts.leaseSeconds}, ${db.sql.json(progress as never)})`;
      if (rows.length === 0) throw new LeaseLost(`job ${job.id}: lease lost`);
      if (rows[0].cancel_requested === true) {
        cancel();
        throw new JobCancelled(job.id);
      }
    },
    log: (message: string, data?: unknown) => logs.add(message, data),
    yield: (progress?: unknown, runInSeconds = 0) => {
      const seconds = Number.isFinite(runInSeconds) ? Math.min(Math.max(runInSeconds, 0), 86400) : 0;
      return new Yield(progress ?? null, seconds);
    },
    enqueue: ((children: ChildJob | ChildJob[]) => enqueueChildren(db, job, children)) as JobContext["enqueue"],
  };
}

/** ctx.enqueue: the enqueue function's rules, this job as the parent, its queue by default. */
async function enqueueChildren(
  db: Database,
  job: JobInfo,
  children: ChildJob | ChildJob[],
): Promise<Enqueued | Enqueued[]> {
  const asChild = (c: ChildJob): ChildJob | string => {
    if (c === null || typeof c !== "object" || Array.isArray(c)) return "must be an object";
    if (Object.hasOwn(c, "parentId")) return "parentId is set by ctx.enqueue (it is this job)";
    return { queue: job.queue, ...c };
  };
  const withParent = (j: NewJob): NewJob => ({ ...j, parentId: job.id });
  if (Array.isArray(children)) {
    const prepared = children.map(asChild);
    const bad = prepared.findIndex((c) => typeof c === "string");
    if (bad >= 0) throw new Error(`ctx.enqueue: jobs[${bad}] ${prepared[bad]}`);
    const parsed = parseBatch(prepared as ChildJob[], null);
    if (typeof parsed === "string") throw new Error(`ctx.enqueue: ${parsed}`);
    return await addJobs(db, job.organizationId, parsed.map(withParent), "handler");
  }
  const prepared = asChild(children);
  if (typeof prepared === "string") throw new Error(`ctx.enqueue: the job ${prepared}`);
  const parsed = parseNewJob(prepared, null);
  if (typeof parsed === "string") throw new Error(`ctx.enqueue: ${parsed}`);
  const added = await addJob(db, job.organizationId, withParent(parsed), "handler");
  if (added === null) throw new Error("ctx.enqueue: the job was not stored");
  return added;
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
    // 'cancelled' when an operator asked meanwhile: the job ends so, never retried.
    const [r] = await sql`select queue_pump.complete_job(${job.id}::bigint, ${worker},
                                                         ${sql.json(outcome.result as never)}) as status`;
    return r.status ?? "lost";
  }
  if (outcome.kind === "cancelled") {
    const [r] = await sql`select queue_pump.fail(${job.id}::bigint, ${worker}, 'its handler was stopped')
                            as status`;
    return r.status ?? "lost";
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
  log({
    event: "job_" + status,
    job_id: job.id,
    job_type: job.type.slice(0, 100),
    attempt: job.attempt,
    ...(outcome.kind === "error" ? { error: outcome.message } : {}),
  });
}
