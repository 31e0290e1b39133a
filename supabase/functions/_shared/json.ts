// What the kit stores as jsonb and hands to handlers, checked before it is sent: a value that
// cannot be stored, or would not reach a handler as it was written, must become a clear job
// error or a 400, never a 500 after the job ran, and never a changed value.

/** Every JSON value the kit stores (payload, progress, result): 1 MiB as PostgreSQL writes
 * it, `value::text` (queue_pump.max_json_bytes() in the migration says the same). */
export const MAX_JSON_BYTES = 1024 * 1024;
export const MAX_DEPTH = 64;

// A \u0000 or a lone surrogate escape that JSON.stringify wrote (a literal backslash before it
// is itself escaped, hence the even run of backslashes in front).
const UNSTORABLE = /(?<!\\)(?:\\\\)*\\u(?:0000|d[89a-f][0-9a-f]{2})/i;

/** A JSON number whose decimal value a double would change (9007199254740993, 1e400): what
 * parseExact puts in its place, so that a check can name where it was. */
export class InexactNumber {
  constructor(readonly source: string) {}
  toJSON(): never {
    throw new TypeError(`the number ${shorten(this.source)} would not be read exactly`);
  }
}

function shorten(source: string): string {
  return source.length <= 30 ? source : `${source.slice(0, 20)}... (${source.length} characters)`;
}

/** The decimal value of a JSON number as digits and a power of ten, "0" for zero. */
function decimalKey(text: string): string | null {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!m) return null;
  const [, sign, whole, fraction = "", exponent = "0"] = m;
  let digits = (whole + fraction).replace(/^0+/, "");
  if (digits === "") return "0";
  let power = Number(exponent) - fraction.length;
  const trimmed = digits.replace(/0+$/, "");
  power += digits.length - trimmed.length;
  digits = trimmed;
  return `${sign}${digits}e${power}`;
}

/** True when the number written as `source` is read as exactly that value: its shortest
 * round-trip form (what String() gives) has the same decimal value. 0.1 and 1.10 are exact in
 * this sense; 12345678901234567891, 1e400 and 1e-400 are not. */
export function exactNumber(source: string, value: number): boolean {
  return Number.isFinite(value) && decimalKey(source) === decimalKey(String(value));
}

// Numbers of at most 15 digits and no exponent are always read exactly (DBL_DIG); only a text
// with a run of 16 digits or dots, or an exponent, needs the slower reviver.
const MAYBE_INEXACT = /[0-9.]{16}|[0-9][eE]/;

type Reviver = (this: unknown, key: string, value: unknown, context?: { source?: string }) => unknown;

/** JSON.parse, with every number a double would change replaced by an InexactNumber (the
 * reviver's `context.source` is the number as written). `inexact` is the first one, or null. */
export function parseExact(text: string): { value: unknown; inexact: string | null } {
  if (!MAYBE_INEXACT.test(text)) return { value: JSON.parse(text), inexact: null };
  let inexact: string | null = null;
  const reviver: Reviver = (_key, value, context) => {
    const source = context?.source;
    if (typeof value !== "number" || source === undefined || exactNumber(source, value)) return value;
    inexact ??= source;
    return new InexactNumber(source);
  };
  const value: unknown = JSON.parse(text, reviver as (key: string, value: unknown) => unknown);
  return { value, inexact };
}

export function inexactProblem(what: string, source: string): string {
  return `${what} holds the number ${shorten(source)}, which JavaScript would not read exactly (send it as a string)`;
}

/** null when `value` can be stored as jsonb (at most maxBytes of compact JSON) and read back
 * as it is, else one line naming where it fails. */
export function jsonProblem(value: unknown, what: string, maxBytes: number): string | null {
  let text: string | undefined;
  try {
    // Inside the try: a getter or a Proxy trap of a handler's value may throw.
    const walked = walk(value, what);
    if (walked) return walked;
    text = JSON.stringify(value ?? null);
  } catch (err) {
    return `${what} is not JSON (${err instanceof Error ? err.message.slice(0, 80) : "not serializable"})`;
  }
  if (text === undefined) return `${what} is not JSON`;
  // Bytes: a character outside ASCII is 2-4 of them. Cheap first: length is a lower bound.
  if (text.length > maxBytes || new TextEncoder().encode(text).length > maxBytes) {
    return `${what} is larger than ${maxBytes} bytes of JSON`;
  }
  if (UNSTORABLE.test(text)) {
    return `${what} holds a \\u0000 or a lone surrogate, which PostgreSQL cannot store`;
  }
  return null;
}

/** Depth and inexact numbers, iteratively, so a value nested 100,000 deep costs a loop, not
 * the stack. A key is named by its path (payload.items[3].id). */
function walk(value: unknown, what: string): string | null {
  const stack: [unknown, number, string][] = [[value, 0, what]];
  const seen = new Set<unknown>();
  while (stack.length > 0) {
    const [v, depth, path] = stack.pop()!;
    if (v instanceof InexactNumber) return inexactProblem(path, v.source);
    if (v === null || typeof v !== "object") continue;
    if (depth >= MAX_DEPTH) return `${what} is nested deeper than ${MAX_DEPTH} levels`;
    if (seen.has(v)) continue; // a cycle: JSON.stringify reports it
    seen.add(v);
    if (Array.isArray(v)) {
      v.forEach((child, i) => stack.push([child, depth + 1, `${path}[${i}]`]));
    } else {
      for (const [key, child] of Object.entries(v)) stack.push([child, depth + 1, `${path}.${key.slice(0, 40)}`]);
    }
  }
  return null;
}

/** Text for a `text` column: no NUL (PostgreSQL refuses it), no lone surrogate (it would be
 * stored as U+FFFD, another text). */
export function storableText(text: string, max: number): string {
  return text.replaceAll("\u0000", "").slice(0, max).toWellFormed();
}

/** A string that is stored as exactly what it is: well-formed UTF-16 (no lone surrogate) and
 * no NUL. */
export function exactText(value: unknown, min: number, max: number): value is string {
  return typeof value === "string" && value.length >= min && value.length <= max && !value.includes("\u0000") &&
    value.isWellFormed();
}
