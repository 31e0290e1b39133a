// The enqueue body: {"type", "payload", "queue", "dedupeKey", "runAt", "maxAttempts"}; only
// `type` is required. Unknown fields are refused, so a typo such as `dedupe_key` cannot silently
// lose the dedupe.

export interface NewJob {
  queue: string;
  type: string;
  payload: unknown;
  dedupeKey: string | null;
  runAt: string | null;
  maxAttempts: number;
}

const FIELDS = new Set(["type", "payload", "queue", "dedupeKey", "runAt", "maxAttempts"]);
const QUEUE_PATTERN = /^[A-Za-z0-9_.:\-]{1,100}$/;
const ISO_PATTERN = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$/;

/** The job, or a one-line message naming the field and what it accepts. */
export function parseNewJob(body: Record<string, unknown>, queryQueue: string | null): NewJob | string {
  const unknown = Object.keys(body).filter((k) => !FIELDS.has(k));
  if (unknown.length > 0) {
    return `unknown field ${JSON.stringify(unknown[0].slice(0, 50))}; accepted: ${[...FIELDS].join(", ")}`;
  }
  const { type, payload = {}, dedupeKey = null, runAt = null, maxAttempts = 5 } = body;
  const queue = body.queue ?? queryQueue ?? "agent";
  if (typeof type !== "string" || type.length < 1 || type.length > 200) {
    return "type must be a string of 1-200 characters";
  }
  if (typeof queue !== "string" || !QUEUE_PATTERN.test(queue)) {
    return "queue must be 1-100 characters of A-Z a-z 0-9 _ . : -";
  }
  if (dedupeKey !== null && (typeof dedupeKey !== "string" || dedupeKey.length < 1 || dedupeKey.length > 500)) {
    return "dedupeKey must be a string of 1-500 characters";
  }
  if (runAt !== null && (typeof runAt !== "string" || !ISO_PATTERN.test(runAt) || Number.isNaN(Date.parse(runAt)))) {
    return "runAt must be an ISO 8601 time with a zone, e.g. 2026-11-28T03:00:00Z";
  }
  if (typeof maxAttempts !== "number" || !Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 1000) {
    return "maxAttempts must be a whole number from 1 to 1000";
  }
  return { queue, type, payload, dedupeKey: dedupeKey as string | null, runAt: runAt as string | null, maxAttempts };
}
