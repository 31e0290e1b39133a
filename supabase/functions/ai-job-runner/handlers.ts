// Job handlers, registered by job_type. Add yours to `handlers` below.
//
// A handler gets the job's payload and context and returns the job's result (any JSON value),
// or `ctx.yield(progress)` to stop early on purpose and be run again later from `progress`.
// Throwing fails the attempt: the job goes back to the queue with a backoff, or ends `failed`
// after its max_attempts. Delivery is at least once (a run whose function dies is run again
// after its lease), so a handler must be idempotent: safe to run twice for the same job.

export interface JobInfo {
  id: number;
  type: string;
  queue: string;
  organizationId: string;
  attempt: number;
  maxAttempts: number;
  /** Higher runs first (-1000..1000, default 0). */
  priority: number;
  /** The key whose concurrency and rate limits this job counts against, if any. */
  concurrencyKey: string | null;
  /** The job whose handler enqueued this one (ctx.enqueue), if any. */
  parentId: number | null;
  /** The jobs this one waited for: all done, or it would not be running (see afterFailure). */
  after: number[] | null;
}

/** What ctx.enqueue takes: the enqueue function's body (docs/SUPABASE.md), without parentId
 * (it is this job). The queue defaults to this job's. */
export type ChildJob = Record<string, unknown>;

export interface Enqueued {
  id: number;
  created: boolean;
}

/** What aborts ctx.signal (its `reason`), and what ctx.checkpoint throws, when an operator
 * cancelled the job: the run ends `cancelled`, never retried, whatever the handler does next. */
export class JobCancelled extends Error {
  constructor(jobId: number) {
    super(`job ${jobId} was cancelled by an operator`);
    this.name = "JobCancelled";
  }
}

export class Yield {
  constructor(readonly progress: unknown, readonly runInSeconds: number) {}
}

export interface JobContext {
  job: JobInfo;
  payload: unknown;
  /** What the last checkpoint or yield saved; null on a first run. */
  progress: unknown;
  /** Epoch milliseconds by which the handler must have returned. */
  deadline: number;
  /** Aborted at the deadline, or when an operator cancels the job (its reason is then a
   * JobCancelled): pass it to fetch() and friends. */
  signal: AbortSignal;
  /** Saves progress (recorded in the job's history) and extends the lease. Throws LeaseLost if
   * another worker has the job, JobCancelled if an operator cancelled it. */
  checkpoint(progress: unknown): Promise<void>;
  /** A line into the job's history (`queue-pump jobs logs ID`): one line of at most 2,000
   * characters, `data` at most 2 KiB of JSON (clipped past that). At most 200 lines a run are
   * sent; the history keeps at most 200 events a job in all. Secrets are masked. Awaiting it is
   * optional: the run's outcome is recorded after every line. */
  log(message: string, data?: unknown): Promise<void>;
  /** `return ctx.yield(progress)`: requeue with progress saved, due after runInSeconds. */
  yield(progress?: unknown, runInSeconds?: number): Yield;
  /** Enqueues a child of this job (or, given an array, up to 1,000 of them in one
   * transaction): its parent is this job. Runs at once, not when the handler returns, so a
   * rerun enqueues again: give each child a dedupeKey built from ctx.job.id. Throws with one
   * line for a bad job. */
  enqueue(job: ChildJob): Promise<Enqueued>;
  enqueue(jobs: ChildJob[]): Promise<Enqueued[]>;
}

export type Handler = (ctx: JobContext) => unknown | Promise<unknown>;

function record(payload: unknown): Record<string, unknown> {
  return payload !== null && typeof payload === "object" && !Array.isArray(payload)
    ? payload as Record<string, unknown>
    : {};
}

/** Returns its payload as the result. */
const echo: Handler = ({ payload }) => ({ echo: payload });

/** Sleeps `{"ms": N}` milliseconds (at most until the deadline), then succeeds. */
const sleep: Handler = async ({ payload, signal }) => {
  const ms = Number(record(payload).ms ?? 0);
  if (!Number.isFinite(ms) || ms < 0) throw new Error("sleep: payload.ms must be a number >= 0");
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    const stop = () => {
      clearTimeout(timer);
      reject(
        signal.reason instanceof JobCancelled ? signal.reason : new Error(`sleep: deadline reached before ${ms} ms`),
      );
    };
    if (signal.aborted) stop();
    signal.addEventListener("abort", stop, { once: true });
  });
  return { slept_ms: ms };
};

/** Always throws: for trying retries and dead letters. */
const fail: Handler = ({ payload }) => {
  const message = record(payload).message;
  throw new Error(typeof message === "string" ? message : "fail: this handler always fails");
};

/** Fans out: enqueues `{"children": N}` echo jobs (with the payload's priority and
 * concurrencyKey, if any) as children of this job, and a `collect` job that runs after all of
 * them. Dedupe keys made from this job's id keep a rerun from adding them twice. */
const fanout: Handler = async (ctx) => {
  const { children = 3, priority = 0, concurrencyKey = null } = record(ctx.payload);
  const n = Number(children);
  if (!Number.isInteger(n) || n < 1 || n > 999) throw new Error("fanout: payload.children must be 1-999");
  const kids = await ctx.enqueue(Array.from({ length: n }, (_, i) => ({
    type: "echo",
    payload: { child: i },
    priority,
    concurrencyKey,
    dedupeKey: `fanout:${ctx.job.id}:${i}`,
  })));
  const fanIn = await ctx.enqueue({
    type: "collect",
    payload: { children: n },
    after: kids.map((k) => k.id),
    dedupeKey: `fanout:${ctx.job.id}:collect`,
  });
  return { children: kids.map((k) => k.id), collect: fanIn.id };
};

/** A fan-in: runs once every job in its `after` is done, and says which they were. */
const collect: Handler = ({ job }) => ({ after: job.after ?? [], parent: job.parentId });

/** Says what the job was started with: its priority and concurrency key (for the limits). */
const whoami: Handler = ({ job }) => ({ priority: job.priority, concurrencyKey: job.concurrencyKey });

export const handlers: Record<string, Handler> = { echo, sleep, fail, fanout, collect, whoami };
