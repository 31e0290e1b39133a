// What the operator API accepts (docs/OPERATOR_API.md): query parameters and body fields, each
// checked by name. A 400's message starts with the field's name as the client sent it, and an
// unknown one is refused, so that a typo never silently widens a bulk action.
import { exactText } from "../_shared/json.ts";

export class Invalid extends Error {}

export const STATUSES = ["queued", "running", "done", "failed", "cancelled"] as const;
export const MAX_PAGE = 500;
export const MAX_DELAY_S = 31_536_000;
/** 100 years of 365 days, as the reference runner counts them. */
export const MAX_PURGE_AGE_S = 100 * 365 * 86_400;
export const MAX_HUNG_AGE_S = 86_400;
const QUEUE_PATTERN = /^[A-Za-z0-9_.:\-]{1,100}$/;
// ISO 8601 with a zone, as PostgreSQL reads it to the microsecond (Python's isoformat() too).
const TIME_PATTERN = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)$/i;

function shown(value: unknown): string {
  try {
    const text = typeof value === "string" ? JSON.stringify(value) : String(JSON.stringify(value));
    return text.length > 60 ? `${text.slice(0, 57)}...` : text;
  } catch {
    return "a value that cannot be shown";
  }
}

/** Refuses a name not in `accepted` (what: "query parameter" or "field"). */
export function onlyKnown(names: Iterable<string>, accepted: readonly string[], what: string): void {
  for (const name of names) {
    if (!accepted.includes(name)) {
      const list = accepted.length > 0 ? accepted.join(", ") : "none";
      throw new Invalid(`unknown ${what} ${shown(name.slice(0, 50))}; accepted: ${list}`);
    }
  }
}

export function queryOf(url: URL, accepted: readonly string[]): Record<string, string> {
  const names = [...url.searchParams.keys()];
  onlyKnown(names, accepted, "query parameter");
  const out: Record<string, string> = {};
  for (const name of names) {
    if (url.searchParams.getAll(name).length > 1) throw new Invalid(`${name} is given more than once`);
    out[name] = url.searchParams.get(name) ?? "";
  }
  return out;
}

export function wholeNumber(text: string | undefined, name: string, low: number, high: number, fallback: number) {
  if (text === undefined) return fallback;
  if (!/^\d{1,16}$/.test(text.trim()) || Number(text) < low || Number(text) > high) {
    throw new Invalid(`${name} must be a whole number from ${low} to ${high}, got ${shown(text)}`);
  }
  return Number(text);
}

export function seconds(value: unknown, name: string, low: number, high: number): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < low || value > high) {
    throw new Invalid(`${name} must be a number of seconds from ${low} to ${high}, got ${shown(value)}`);
  }
  return value;
}

/** Seconds given as a query parameter (a whole number) or a body field (a number). */
export function olderThan(value: unknown, fallback: number | null, low: number, high: number): number {
  if (value === undefined || value === null) {
    if (fallback === null) throw new Invalid(`olderThan is required: seconds, from ${low} to ${high}`);
    return fallback;
  }
  if (typeof value === "string") return wholeNumber(value, "olderThan", low, high, fallback ?? low);
  return seconds(value, "olderThan", low, high);
}

/** An ISO 8601 time with a zone, as sent (PostgreSQL reads it); null when absent. */
export function time(value: unknown, name: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === "string" && TIME_PATTERN.test(value) && !Number.isNaN(Date.parse(value.replace(" ", "T")))) {
    return value;
  }
  throw new Invalid(`${name} must be an ISO 8601 time with a zone, e.g. 2026-12-06T08:00:00Z, got ${shown(value)}`);
}

export function flag(value: unknown, name: string): boolean {
  if (value === undefined || value === null) return false;
  if (typeof value !== "boolean") throw new Invalid(`${name} must be true or false, got ${shown(value)}`);
  return value;
}

export function queueName(value: unknown, name = "queue"): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== "string" || !QUEUE_PATTERN.test(value)) {
    throw new Invalid(`${name} must be 1-100 characters of A-Z a-z 0-9 _ . : -, got ${shown(value)}`);
  }
  return value;
}

export function typeName(value: unknown, name = "type"): string | null {
  if (value === undefined || value === null) return null;
  if (!exactText(value, 1, 200)) {
    throw new Invalid(`${name} must be a string of 1-200 characters, got ${shown(value)}`);
  }
  return value;
}

export function statuses(value: string | undefined): string[] | null {
  if (value === undefined) return null;
  const wanted = value.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (wanted.length === 0 || wanted.some((s) => !(STATUSES as readonly string[]).includes(s))) {
    throw new Invalid(
      `status must be one of ${STATUSES.join(", ")} (or several, comma-separated), got ${shown(value)}`,
    );
  }
  return [...new Set(wanted)];
}

export interface Cursor {
  createdAt: string;
  id: number;
}

const CURSOR_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

export function encodeCursor(cursor: Cursor): string {
  return btoa(JSON.stringify([cursor.createdAt, cursor.id])).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}

export function decodeCursor(text: string | undefined): Cursor | null {
  if (text === undefined) return null;
  try {
    const padded = text.replaceAll("-", "+").replaceAll("_", "/");
    const [createdAt, id] = JSON.parse(atob(padded + "=".repeat((4 - padded.length % 4) % 4)));
    if (typeof createdAt === "string" && CURSOR_TIME.test(createdAt) && Number.isSafeInteger(id) && id > 0) {
      return { createdAt, id };
    }
  } catch {
    // refused below
  }
  throw new Invalid("cursor is not one this API gave; pass the 'next' of the previous page");
}

/** A job id in a path: a positive integer JavaScript holds exactly; anything else is no job. */
export function jobId(text: string): number | null {
  const id = Number(text);
  return Number.isSafeInteger(id) && id > 0 ? id : null;
}
