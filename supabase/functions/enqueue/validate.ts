// The enqueue body: {"type", "payload", "queue", "dedupeKey", "runAt", "maxAttempts"}; only
// `type` is required. Unknown fields are refused, so a typo such as `dedupe_key` cannot silently
// lose the dedupe. Everything the database would refuse is refused here, with one line.
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
}

const FIELDS = new Set(["type", "payload", "queue", "dedupeKey", "runAt", "maxAttempts"]);
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
  return {
    queue,
    type: type as string,
    payload,
    dedupeKey: dedupeKey as string | null,
    runAt: runAt as string | null,
    maxAttempts,
  };
}
