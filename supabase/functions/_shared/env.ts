// Settings read once from the environment; a bad value stops the function at start with one
// line naming the variable and what it accepts.

export function intFromEnv(name: string, fallback: number, min: number, max: number): number {
  const raw = Deno.env.get(name);
  if (raw === undefined || raw.trim() === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw.slice(0, 40))}`);
  }
  return value;
}

export function requiredEnv(name: string): string {
  const value = Deno.env.get(name);
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

/** Comma-separated list; empty or unset means "no list". */
export function listFromEnv(name: string): string[] {
  return (Deno.env.get(name) ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
}

// The one minimum for every token, here and in the pump (queue_pump/config/knobs.py
// MIN_TOKEN_CHARS): 16 characters from a random source cannot be guessed by trying
// (docs/CONFIGURATION.md, "Tokens").
export const MIN_TOKEN_CHARS = 16;

/** The shared secret; too short to be one is refused (its value is never shown). */
export function tokenFromEnv(name: string): string {
  const value = requiredEnv(name);
  if (value.length < MIN_TOKEN_CHARS) {
    throw new Error(
      `${name} is ${value.length} characters; use at least ${MIN_TOKEN_CHARS} (e.g. openssl rand -hex 32)`,
    );
  }
  return value;
}

/** AGENT_TOKEN and ADMIN_TOKEN are two secrets: a pump's token must never open the operator's
 * API, nor an operator's pose as a pump. On Supabase every function sees every secret, so each
 * function that reads one refuses to start when the other has the same value. */
export function distinctTokens(own: string, otherName: string): void {
  const other = Deno.env.get(otherName);
  if (other !== undefined && other !== "" && other === own) {
    throw new Error(`AGENT_TOKEN and ADMIN_TOKEN must differ (give ${otherName} a value of its own)`);
  }
}
