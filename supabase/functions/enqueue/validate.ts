// The enqueue body: {"type", "payload", "queue", "dedupeKey", "runAt", "maxAttempts", "priority",
// "concurrencyKey", "after", "afterFailure", "parentId"}; only `type` is required. Or an array of
// up to 1,000 such objects (one transaction). Unknown fields are refused, so a typo such as
// `dedupe_key` cannot silently lose the dedupe. Everything the database would refuse is refused
// here, with one line (in a batch, naming the element: `jobs[3].priority must be ...`); what only
// the database knows (a job named in `after` that does not exist) comes back from it the same way.
import { exactText, jsonProblem, MAX_JSON_BYTES } from "../_shared/json.ts";

/** A payload at the limit, written with escapes, plus the other fields. */
export const MAX_BODY_BYTES = 2 * MAX_JSON_BYTES;

export interface NewJob {
  queue: string;
  type: string;
  payload: unknown;
  dedupeKey: string | null;
  /** As sent (ISO 8601 with a zone): PostgreSQL reads it, to the microsecond. */
  runAt: string | null;
  maxAttempts: number;
  /** Higher runs first (-1000..1000), as in pg-boss; BullMQ and Oban count the other way. */
  priority: number;
  concurrencyKey: string | null;
  /** Ids of jobs this one waits for: due once they are all done. */
  after: number[] | null;
  /** When a job in `after` ends failed or cancelled: "end" (the same way, the default) or "run". */
  afterFailure: "end" | "run";
  parentId: number | null;
}

/** The most jobs one array body (and one enqueue_many call) may hold. */
export const MAX_BATCH = 1000;

const FIELDS = new Set([
  "type",
  "payload",
  "queue",
  "dedupeKey",
  "runAt",
  "maxAttempts",
  "priority",
  "concurrencyKey",
  "after",
  "afterFailure",
  "parentId",
]);
const QUEUE_PATTERN = /^[A-Za-z0-9_.:\-]{1,100}$/;
const ISO_PATTERN = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,6})?)?(?:Z|([+-])(\d{2}):(\d{2}))$/;
const RUN_AT_PROBLEM =
  "runAt must be an ISO 8601 time with a zone, from 2000-01-01 to 9999-12-31 UTC, e.g. 2026-11-28T03:00:00Z";
const TEXT_RULE = "without NUL or lone surrogates";
// The window queue_pump.check_run_at enforces, as UTC instants.
const EARLIEST = Date.UTC(2000, 0, 1);
const LATEST = Date.UTC(10000, 0, 1);

/** A real calendar time within the window: 2026-02-30 or 25:00 are refused, not moved to
 * another day, and so is 9999-12-31T23:59:59-14:59 (in UTC, the year 10000). */
function validRunAt(value: string): boolean {
  const m = ISO_PATTERN.exec(value);
  if (!m) return false;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map((x) => Number(x ?? 0));
  const [sign, offH, offM] = [m[7] === "-" ? -1 : 1, Number(m[8] ?? 0), Number(m[9] ?? 0)];
  const lastDay = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (
    !(month >= 1 && month <= 12 && day >= 1 && day <= lastDay && hour <= 23 && minute <= 59 && second <= 59 &&
      offH <= 14 && offM <= 59)
  ) return false;
  const instant = Date.UTC(year, month - 1, day, hour, minute, second) - sign * (offH * 60 + offM) * 60_000;
  return instant >= EARLIEST && instant < LATEST;
}

function jobId(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 1;
}

/** The issue-24 fields, or a one-line message naming the field. */
function parseRelations(
  body: Record<string, unknown>,
): Pick<NewJob, "priority" | "concurrencyKey" | "after" | "afterFailure" | "parentId"> | string {
  // null means the default, as for dedupeKey and runAt.
  const priority = body.priority ?? 0;
  const concurrencyKey = body.concurrencyKey ?? null;
  const after = body.after ?? null;
  const afterFailure = body.afterFailure ?? "end";
  const parentId = body.parentId ?? null;
  if (typeof priority !== "number" || !Number.isInteger(priority) || priority < -1000 || priority > 1000) {
    return "priority must be a whole number from -1000 to 1000 (higher runs first)";
  }
  if (concurrencyKey !== null && !exactText(concurrencyKey, 1, 200)) {
    return `concurrencyKey must be a string of 1-200 characters, ${TEXT_RULE}`;
  }
  if (after !== null && (!Array.isArray(after) || after.length > 1000 || !after.every(jobId))) {
    return "after must be an array of at most 1000 job ids";
  }
  if (afterFailure !== "end" && afterFailure !== "run") return 'afterFailure must be "end" or "run"';
  if (parentId !== null && !jobId(parentId)) return "parentId must be a job id";
  return { priority, concurrencyKey, after: after as number[] | null, afterFailure, parentId };
}

/** An array body: every job, or a one-line message naming the first bad element and field. */
export function parseBatch(body: unknown[], queryQueue: string | null): NewJob[] | string {
  if (body.length < 1 || body.length > MAX_BATCH) return `an array body must hold 1 to ${MAX_BATCH} jobs`;
  const jobs: NewJob[] = [];
  for (const [i, element] of body.entries()) {
    if (element === null || typeof element !== "object" || Array.isArray(element)) {
      return `jobs[${i}] must be a JSON object`;
    }
    const job = parseNewJob(element as Record<string, unknown>, queryQueue);
    if (typeof job === "string") return `jobs[${i}].${job}`;
    jobs.push(job);
  }
  return jobs;
}

/** A job as queue_pump.enqueue_many reads an element (its SQL argument names). */
export function sqlElement(job: NewJob): Record<string, unknown> {
  return {
    job_type: job.type,
    queue: job.queue,
    payload: job.payload,
    dedupe_key: job.dedupeKey,
    run_at: job.runAt,
    max_attempts: job.maxAttempts,
    priority: job.priority,
    concurrency_key: job.concurrencyKey,
    after: job.after,
    after_failure: job.afterFailure,
    parent_id: job.parentId,
  };
}

/** The job, or a one-line message naming the field and what it accepts. */
export function parseNewJob(body: Record<string, unknown>, queryQueue: string | null): NewJob | string {
  const unknown = Object.keys(body).filter((k) => !FIELDS.has(k));
  if (unknown.length > 0) {
    return `unknown field ${JSON.stringify(unknown[0].slice(0, 50))}; accepted: ${[...FIELDS].join(", ")}`;
  }
  const { type, payload = {}, dedupeKey = null, runAt = null, maxAttempts = 5 } = body;
  // As for the runner call, the query's queue wins over the body's.
  const queue = queryQueue ?? body.queue ?? "agent";
  if (!exactText(type, 1, 200)) return `type must be a string of 1-200 characters, ${TEXT_RULE}`;
  if (typeof queue !== "string" || !QUEUE_PATTERN.test(queue)) {
    return "queue must be 1-100 characters of A-Z a-z 0-9 _ . : -";
  }
  if (dedupeKey !== null && !exactText(dedupeKey, 1, 500)) {
    return `dedupeKey must be a string of 1-500 characters, ${TEXT_RULE}`;
  }
  if (runAt !== null && (typeof runAt !== "string" || !validRunAt(runAt))) return RUN_AT_PROBLEM;
  if (typeof maxAttempts !== "number" || !Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 1000) {
    return "maxAttempts must be a whole number from 1 to 1000";
  }
  const problem = jsonProblem(payload, "payload", MAX_JSON_BYTES);
  if (problem) return problem;
  const relations = parseRelations(body);
  if (typeof relations === "string") return relations;
  return {
    queue,
    type: type as string,
    payload,
    dedupeKey: dedupeKey as string | null,
    runAt: runAt as string | null,
    maxAttempts,
    ...relations,
  };
}
