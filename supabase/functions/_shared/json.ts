// What PostgreSQL's jsonb can store, checked before it is sent: a value that cannot be stored
// must become a clear job error or a 400, never a 500 after the job ran.

export const MAX_DEPTH = 64;

// A \u0000 or a lone surrogate escape that JSON.stringify wrote (a literal backslash before it
// is itself escaped, hence the even run of backslashes in front).
const UNSTORABLE = /(?<!\\)(?:\\\\)*\\u(?:0000|d[89a-f][0-9a-f]{2})/i;

/** null when `value` can be stored as jsonb (of at most maxChars of JSON), else one line. */
export function jsonProblem(value: unknown, what: string, maxChars: number): string | null {
  const depth = depthOver(value, MAX_DEPTH);
  if (depth) return `${what} is nested deeper than ${MAX_DEPTH} levels`;
  let text: string | undefined;
  try {
    text = JSON.stringify(value ?? null);
  } catch (err) {
    return `${what} is not JSON (${err instanceof Error ? err.message.slice(0, 80) : "not serializable"})`;
  }
  if (text === undefined) return `${what} is not JSON`;
  if (text.length > maxChars) return `${what} is larger than ${maxChars} characters of JSON`;
  if (UNSTORABLE.test(text)) {
    return `${what} holds a \\u0000 or a lone surrogate, which PostgreSQL cannot store`;
  }
  return null;
}

function depthOver(value: unknown, limit: number): boolean {
  // Iterative, so a value nested 100,000 deep costs a loop, not the stack.
  const stack: [unknown, number][] = [[value, 0]];
  const seen = new Set<unknown>();
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== "object") continue;
    if (d >= limit) return true;
    if (seen.has(v)) continue; // a cycle: JSON.stringify reports it
    seen.add(v);
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, d + 1]);
  }
  return false;
}

/** Text for a `text` column: PostgreSQL refuses NUL characters in text. */
export function storableText(text: string, max: number): string {
  return text.replaceAll("\u0000", "").slice(0, max);
}
