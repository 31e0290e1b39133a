// One postgres.js pool per isolate, on SUPABASE_DB_URL. No prepared statements: Supabase's
// transaction-mode pooler (port 6543) cannot keep them across transactions.
import postgres from "npm:postgres@3.4.9";
import { error } from "./http.ts";
import { intFromEnv, requiredEnv } from "./env.ts";

export type Sql = ReturnType<typeof postgres>;

export function connect(): Sql {
  return postgres(requiredEnv("SUPABASE_DB_URL"), {
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
  return CONNECTION_CODES.has(code) || UNAVAILABLE_CLASSES.includes(code.slice(0, 2));
}

export const RETRY_AFTER_S = 5;

/** 503 + Retry-After while the database is away; 500 for anything else. Neither echoes the
 * error's text, which can hold the connection string. */
export function databaseError(err: unknown): Response {
  if (isUnavailable(err)) {
    return error(503, "database unavailable, try again later", { "retry-after": String(RETRY_AFTER_S) });
  }
  console.error(JSON.stringify({ event: "internal_error", code: (err as { code?: unknown })?.code ?? null }));
  return error(500, "internal error");
}
