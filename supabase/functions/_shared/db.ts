// One postgres.js pool per isolate, on SUPABASE_DB_URL. No prepared statements: Supabase's
// transaction-mode pooler (port 6543) cannot keep them across transactions.
import postgres from "npm:postgres@3.4.9";
import { error } from "./http.ts";
import { intFromEnv, requiredEnv } from "./env.ts";

export type Sql = ReturnType<typeof postgres>;

/** The database's password, so that texts shown to callers can be masked. */
export function dbPassword(): string | null {
  try {
    const url = new URL(requiredEnv("SUPABASE_DB_URL"));
    return url.password ? decodeURIComponent(url.password) : null;
  } catch {
    return null;
  }
}

export function connect(): Sql {
  const url = requiredEnv("SUPABASE_DB_URL");
  let parsed: URL | null = null;
  try {
    parsed = new URL(url);
  } catch {
    // reported below, without the value: it holds the password
  }
  if (!parsed || !["postgres:", "postgresql:"].includes(parsed.protocol)) {
    throw new Error("SUPABASE_DB_URL is not a postgresql:// URL (its value is not shown: it holds the password)");
  }
  return postgres(url, {
    prepare: false,
    max: intFromEnv("DB_POOL_MAX", 5, 1, 100),
    idle_timeout: 30,
    connect_timeout: 5,
    // bigint ids fit a JS number for the next 2^53 jobs.
    types: { bigint: { to: 20, from: [20], serialize: (x: number) => String(x), parse: (x: string) => Number(x) } },
    onnotice: () => {},
  });
}

// SQLSTATE classes that mean "the database is not there right now", not "this query is wrong":
// 08 connection exception, 53 insufficient resources, 57 operator intervention (shutdown),
// 58 system error; and postgres.js's own connection codes.
const UNAVAILABLE_CLASSES = ["08", "53", "57", "58"];
// 55P03: a lock not had within the functions' lock_timeout (a migration holding the table).
const UNAVAILABLE_CODES = new Set(["55P03"]);
const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
]);

export function isUnavailable(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (typeof code !== "string") return err instanceof Deno.errors.ConnectionRefused;
  return CONNECTION_CODES.has(code) || UNAVAILABLE_CODES.has(code) || UNAVAILABLE_CLASSES.includes(code.slice(0, 2));
}

/** The database refused the data itself (class 22 data exception, 54 limits): the caller's
 * input, not the database, is at fault. */
export function isBadData(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" && ["22", "54"].includes(code.slice(0, 2));
}

export function sqlState(err: unknown): string {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" ? code.slice(0, 20) : "unknown";
}

/** DB_RETRY_AFTER_SECONDS: the Retry-After a pump is asked to wait while the database is away
 * (default 5: long enough to ride out a restart without a herd, short enough to resume soon). */
export function retryAfterFromEnv(): number {
  return intFromEnv("DB_RETRY_AFTER_SECONDS", 5, 1, 3600);
}

/** 503 + Retry-After while the database is away; 400 for data it refused; 500 for anything
 * else. None echoes the error's text, which can hold the connection string. */
export function databaseError(err: unknown, retryAfterS: number): Response {
  if (isBadData(err)) {
    return error(400, `the database refused this data (SQLSTATE ${sqlState(err)})`);
  }
  if (isUnavailable(err)) {
    return error(503, "database unavailable, try again later", { "retry-after": String(retryAfterS) });
  }
  console.error(JSON.stringify({ event: "internal_error", code: sqlState(err) }));
  return error(500, "internal error");
}
