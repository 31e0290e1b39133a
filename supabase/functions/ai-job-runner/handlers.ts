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

export const handlers: Record<string, Handler> = { echo, sleep, fail };
