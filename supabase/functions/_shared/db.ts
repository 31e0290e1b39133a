// One postgres.js pool per isolate, on SUPABASE_DB_URL. No prepared statements: Supabase's
// transaction-mode pooler (port 6543) cannot keep them across transactions.
import postgres from "postgres";
import { error } from "./http.ts";
import { intFromEnv, requiredEnv } from "./env.ts";
import { log, logError } from "./log.ts";

export type Sql = ReturnType<typeof postgres>;

/** The database's password, and its spelling in SUPABASE_DB_URL (percent-encoded as the user
 * wrote it), so that texts shown to callers can be masked. */
export function dbPasswordForms(): string[] {
  try {
    const url = new URL(requiredEnv("SUPABASE_DB_URL"));
    return url.password ? [decodeURIComponent(url.password), url.password] : [];
  } catch {
    return [];
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
    // postgres.js waits before reopening a connection after a failed one, up to 20 s by default
    // (3^n / 100 s): after a restart that kept every connection away for 10-20 s. Calls pace
    // their own retries (Database.run), so reconnect within a quarter second at most.
    backoff: (retries: number) => Math.min(0.025 * 2 ** retries, 0.25),
    // Job ids are below 2^53 (the migration's permutation keeps them there): exact as numbers.
    types: { bigint: { to: 20, from: [20], serialize: (x: number) => String(x), parse: (x: string) => Number(x) } },
    onnotice: () => {},
  });
}

// SQLSTATE classes that mean "the database is not there right now", not "this query is wrong":
// 08 connection exception, 53 insufficient resources, 57 operator intervention (shutdown),
// 58 system error; and postgres.js's own connection codes.
const UNAVAILABLE_CLASSES = ["08", "53", "57", "58"];
// 55P03: a lock not had within the functions' lock_timeout (a migration holding the table);
// 40001 and 40P01: a conflict that a second try resolves (enqueue_job gives up with 40001 when
// a dedupe key is taken and freed ten times in a row).
const UNAVAILABLE_CODES = new Set(["55P03", "40001", "40P01"]);
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

/** The kit's own argument checks (`queue_pump.<function>: <argument> must be ...`): written by
 * the migration, naming only the caller's own input, so safe to pass on. */
export function ownCheck(err: unknown): string | null {
  const message = (err as { message?: unknown })?.message;
  if (sqlState(err) !== "22023" || typeof message !== "string" || !message.startsWith("queue_pump.")) return null;
  return message.replace(/\s+/g, " ").slice(0, 300);
}

export interface Availability {
  /** How long one call waits for the database to come back before it answers 503. */
  reconnectMs: number;
  /** The longest Retry-After asked of a pump (DB_RETRY_AFTER_SECONDS). */
  maxRetryAfterS: number;
}

export function availabilityFromEnv(): Availability {
  return {
    reconnectMs: intFromEnv("DB_RECONNECT_MS", 2000, 0, 30_000),
    maxRetryAfterS: intFromEnv("DB_RETRY_AFTER_SECONDS", 5, 1, 3600),
  };
}

/** The Retry-After for an outage that began `outageMs` ago: 1 s while it is fresh (a restart
 * is back within a second or two), then half its age, at most `maxS`. */
export function retryAfterFor(outageMs: number, maxS: number): number {
  return Math.min(maxS, Math.max(1, Math.ceil(outageMs / 2000)));
}

/** The pool, and what this isolate knows of the database's availability. */
export class Database {
  private outageSince: number | null = null;

  constructor(readonly sql: Sql, readonly availability: Availability) {}

  /** `query()`, tried again while the database is unavailable (a restart, a failover) for up
   * to reconnectMs, so that a short outage costs the calls in flight a wait, not a 503 and a
   * pump's backoff. postgres.js opens a fresh connection for each try. */
  async run<T>(query: () => Promise<T>): Promise<T> {
    const started = Date.now();
    for (let pause = 25;; pause = Math.min(pause * 2, 200)) {
      try {
        const result = await query();
        this.outageSince = null;
        return result;
      } catch (err) {
        if (!isUnavailable(err)) throw err;
        this.outageSince ??= Date.now();
        if (Date.now() - started + pause > this.availability.reconnectMs) throw err;
        await new Promise((resolve) => setTimeout(resolve, pause));
      }
    }
  }

  /** 503 + Retry-After while the database is away, with one log line saying why; 400 for data
   * it refused; 500 for anything else. None echoes the database's own text, which can hold the
   * connection string. */
  errorResponse(err: unknown, during: string): Response {
    const own = ownCheck(err);
    if (own) return error(400, own);
    if (isBadData(err)) {
      return error(400, `the database refused this data (SQLSTATE ${sqlState(err)})`);
    }
    if (isUnavailable(err)) {
      const outageMs = this.outageSince === null ? 0 : Date.now() - this.outageSince;
      const retryAfterS = retryAfterFor(outageMs, this.availability.maxRetryAfterS);
      log({
        event: "db_unavailable",
        during,
        code: sqlState(err),
        outage_ms: outageMs,
        retry_after_s: retryAfterS,
      });
      return error(503, "database unavailable, try again later", { "retry-after": String(retryAfterS) });
    }
    logError({ event: "internal_error", during, code: sqlState(err) });
    return error(500, "internal error");
  }
}
