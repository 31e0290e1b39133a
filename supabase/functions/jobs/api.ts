// The operator API's paths (docs/OPERATOR_API.md §4) over the migration's functions; every one
// scoped to the caller's organization, which the SQL functions take as their first argument.
import { type Caller } from "../_shared/auth.ts";
import { type Database } from "../_shared/db.ts";
import { BadRequest, ClientGone, error, readJsonObject } from "../_shared/http.ts";
import { MAX_BODY_BYTES as MAX_JOB_BODY_BYTES, parseNewJob } from "../enqueue/validate.ts";
import {
  decodeCursor,
  encodeCursor,
  flag,
  Invalid,
  jobId,
  MAX_DELAY_S,
  MAX_HUNG_AGE_S,
  MAX_PAGE,
  MAX_PURGE_AGE_S,
  olderThan,
  onlyKnown,
  queryOf,
  queueName,
  seconds,
  statuses,
  time,
  typeName,
  wholeNumber,
} from "./input.ts";

/** Bodies of the steering calls; adding a job takes what `enqueue` takes. */
export const MAX_BODY_BYTES = 64 * 1024;
export { MAX_JOB_BODY_BYTES };

type Json = Record<string, unknown>;
type Handler = (db: Database, caller: Caller, req: Request, url: URL, id: number | null) => Promise<Response>;

interface Route {
  pattern: RegExp;
  methods: Record<string, Handler>;
}

async function body(req: Request, accepted: readonly string[], maxBytes = MAX_BODY_BYTES): Promise<Json> {
  let parsed: Json;
  try {
    parsed = await readJsonObject(req, maxBytes);
  } catch (err) {
    if (err instanceof BadRequest || err instanceof ClientGone) throw new Invalid(err.message);
    throw err;
  }
  onlyKnown(Object.keys(parsed), accepted, "field");
  return parsed;
}

function notFound(id: number | null): Response {
  return error(404, id === null ? "no such job in this organization" : `no job ${id} in this organization`);
}

function conflict(job: Json, message: string): Response {
  return Response.json({ error: message, status: job.status }, { status: 409 });
}

async function list(db: Database, caller: Caller, _req: Request, url: URL): Promise<Response> {
  const q = queryOf(url, ["status", "type", "queue", "since", "until", "limit", "cursor"]);
  const wanted = statuses(q.status);
  const type = typeName(q.type);
  const queue = queueName(q.queue);
  const since = time(q.since, "since");
  const until = time(q.until, "until");
  const limit = wholeNumber(q.limit, "limit", 1, MAX_PAGE, 50);
  const after = decodeCursor(q.cursor);
  const rows = await db.run(() =>
    db.sql<{ job: Json }[]>`
      select l as job from queue_pump.list_jobs(
        organization_id => ${caller.organizationId}, statuses => ${wanted}::text[],
        job_type => ${type}, queue => ${queue}, since => ${since}::text::timestamptz,
        until => ${until}::text::timestamptz, after_created => ${after?.createdAt ?? null}::text::timestamptz,
        after_id => ${after === null ? null : String(after.id)}::bigint, max_rows => ${limit + 1}) l`
  );
  const jobs = rows.slice(0, limit).map((r) => r.job);
  const last = jobs[jobs.length - 1];
  const next = rows.length > limit ? encodeCursor({ createdAt: String(last.createdAt), id: Number(last.id) }) : null;
  return Response.json({ jobs, next });
}

async function add(db: Database, caller: Caller, req: Request, url: URL): Promise<Response> {
  queryOf(url, []);
  const fields = await body(
    req,
    [
      "type",
      "payload",
      "queue",
      "dedupeKey",
      "runAt",
      "maxAttempts",
      "delaySeconds",
      "priority",
      "concurrencyKey",
      "after",
      "afterFailure",
    ],
    MAX_JOB_BODY_BYTES,
  );
  const { delaySeconds, ...rest } = fields;
  if (delaySeconds !== undefined && delaySeconds !== null && rest.runAt !== undefined && rest.runAt !== null) {
    throw new Invalid("delaySeconds and runAt: give one, not both");
  }
  const delay = delaySeconds === undefined || delaySeconds === null
    ? null
    : seconds(delaySeconds, "delaySeconds", 0, MAX_DELAY_S);
  const parsed = parseNewJob(rest, null);
  if (typeof parsed === "string") throw new Invalid(parsed);
  const added = await db.run(() =>
    db.sql<{ id: number; created: boolean }[]>`
      select a.id, a.created
        from queue_pump.add_job(
          organization_id => ${caller.organizationId}, queue => ${parsed.queue}, job_type => ${parsed.type},
          payload => ${db.sql.json(parsed.payload as never)}, dedupe_key => ${parsed.dedupeKey},
          run_at => coalesce(${parsed.runAt}::text::timestamptz,
                             now() + make_interval(secs => ${delay}::double precision)),
          max_attempts => ${parsed.maxAttempts}, by => 'operator',
          priority => ${parsed.priority}, concurrency_key => ${parsed.concurrencyKey},
          "after" => (select array_agg(x::bigint) from jsonb_array_elements_text(${
      db.sql.json((parsed.after ?? []) as never)
    }::jsonb) x),
          after_failure => ${parsed.afterFailure}, parent_id => ${parsed.parentId}::bigint) a`
  );
  const [row] = added;
  if (row?.id == null) return error(500, "internal error: the job was not stored, try again");
  // A statement of its own: the insert above is not in an earlier statement's snapshot.
  const [shown] = await db.run(() =>
    db.sql<{ job: Json | null }[]>`select queue_pump.job_detail(${caller.organizationId}, ${
      String(row.id)
    }::bigint) as job`
  );
  // As a list shows it: the payload was the caller's own, the history is one event.
  const { payload: _p, progress: _g, result: _r, history: _h, ...job } = shown?.job ?? { id: row.id };
  return Response.json({ job, created: row.created }, { status: row.created ? 201 : 200 });
}

async function show(db: Database, caller: Caller, _req: Request, url: URL, id: number | null): Promise<Response> {
  queryOf(url, []);
  if (id === null) return notFound(id);
  const [row] = await db.run(() =>
    db.sql<{ job: Json | null }[]>`select queue_pump.job_detail(${caller.organizationId}, ${String(id)}::bigint) as job`
  );
  return row?.job ? Response.json({ job: row.job }) : notFound(id);
}

async function history(db: Database, caller: Caller, _req: Request, url: URL, id: number | null): Promise<Response> {
  const q = queryOf(url, ["after", "limit"]);
  const after = wholeNumber(q.after, "after", 0, 2_147_483_647, 0);
  const limit = wholeNumber(q.limit, "limit", 1, MAX_PAGE, MAX_PAGE);
  if (id === null) return notFound(id);
  const [row] = await db.run(() =>
    db.sql<{ h: Json | null }[]>`
      select queue_pump.job_history(${caller.organizationId}, ${String(id)}::bigint, ${after}, ${limit}) as h`
  );
  return row?.h ? Response.json(row.h) : notFound(id);
}

async function cancel(db: Database, caller: Caller, req: Request, url: URL, id: number | null): Promise<Response> {
  queryOf(url, []);
  await body(req, []);
  if (id === null) return notFound(id);
  const [row] = await db.run(() =>
    db.sql<{ outcome: string; job: Json }[]>`
      select outcome, job from queue_pump.cancel(${caller.organizationId}, ${String(id)}::bigint, 'operator')`
  );
  if (!row) return notFound(id);
  if (row.outcome === "done" || row.outcome === "failed") {
    return conflict(row.job, `job ${id} is ${row.outcome}; only queued or running jobs can be cancelled`);
  }
  return Response.json({ job: row.job, changed: row.outcome === "cancelled" || row.outcome === "requested" });
}

async function retry(db: Database, caller: Caller, req: Request, url: URL, id: number | null): Promise<Response> {
  queryOf(url, []);
  await body(req, []);
  if (id === null) return notFound(id);
  const [row] = await db.run(() =>
    db.sql<{ outcome: string; job: Json }[]>`
      select outcome, job from queue_pump.retry(${caller.organizationId}, ${String(id)}::bigint, 'operator')`
  );
  if (!row) return notFound(id);
  if (row.outcome !== "retried") {
    return conflict(row.job, `job ${id} is ${row.outcome}; only failed or cancelled jobs can be retried`);
  }
  return Response.json({ job: row.job });
}

async function retryFailed(db: Database, caller: Caller, req: Request, url: URL): Promise<Response> {
  queryOf(url, []);
  const b = await body(req, ["type", "queue", "since", "until", "dryRun"]);
  const type = typeName(b.type);
  const queue = queueName(b.queue);
  const since = time(b.since, "since");
  const until = time(b.until, "until");
  const dryRun = flag(b.dryRun, "dryRun");
  const [row] = await db.run(() =>
    db.sql<{ matched: number; retried: number; more: boolean }[]>`
      select matched, retried, more from queue_pump.retry_failed(
        organization_id => ${caller.organizationId}, job_type => ${type}, queue => ${queue},
        since => ${since}::text::timestamptz, until => ${until}::text::timestamptz,
        dry_run => ${dryRun}, by => 'operator')`
  );
  return Response.json({ matched: row.matched, retried: row.retried, dryRun, more: row.more });
}

async function hung(db: Database, caller: Caller, _req: Request, url: URL): Promise<Response> {
  const q = queryOf(url, ["olderThan", "queue"]);
  const age = olderThan(q.olderThan, 300, 1, MAX_HUNG_AGE_S);
  const queue = queueName(q.queue);
  const rows = await db.run(() =>
    db.sql<{ job: Json }[]>`
      select h as job from queue_pump.hung(${caller.organizationId}, ${age}::double precision, ${queue}) h`
  );
  return Response.json({ jobs: rows.map((r) => r.job) });
}

async function cancelHung(db: Database, caller: Caller, req: Request, url: URL): Promise<Response> {
  queryOf(url, []);
  const b = await body(req, ["olderThan", "queue", "dryRun"]);
  const age = olderThan(b.olderThan, 300, 1, MAX_HUNG_AGE_S);
  const queue = queueName(b.queue);
  const dryRun = flag(b.dryRun, "dryRun");
  const [row] = await db.run(() =>
    db.sql<{ matched: number; cancelled: number }[]>`
      select matched, cancelled from queue_pump.cancel_hung(
        ${caller.organizationId}, ${age}::double precision, ${queue}, ${dryRun}, 'operator')`
  );
  return Response.json({ matched: row.matched, cancelled: row.cancelled, dryRun });
}

async function stats(db: Database, caller: Caller, _req: Request, url: URL): Promise<Response> {
  const q = queryOf(url, ["queue"]);
  const queue = queueName(q.queue);
  const [row] = await db.run(() =>
    db.sql<{ s: Json }[]>`select queue_pump.summary(${caller.organizationId}, ${queue}) as s`
  );
  return Response.json(row.s);
}

async function purge(db: Database, caller: Caller, req: Request, url: URL): Promise<Response> {
  queryOf(url, []);
  const b = await body(req, ["olderThan", "dryRun"]);
  const age = olderThan(b.olderThan, null, 60, MAX_PURGE_AGE_S);
  const dryRun = flag(b.dryRun, "dryRun");
  const [row] = await db.run(() =>
    db.sql<{ matched: number; deleted: number; more: boolean }[]>`
      select matched, deleted, more from queue_pump.purge_organization(
        ${caller.organizationId}, make_interval(secs => ${age}::double precision), ${dryRun})`
  );
  return Response.json({ matched: row.matched, deleted: row.deleted, dryRun, more: row.more });
}

/** The limits of a queue's keys (issue 24): each key with a limit, a running job or a parked
 * one; `key` null is the queue's default for every key. */
async function limits(db: Database, caller: Caller, _req: Request, url: URL): Promise<Response> {
  const q = queryOf(url, ["queue"]);
  return await limitsOf(db, caller, queueName(q.queue) ?? "agent");
}

async function limitsOf(db: Database, caller: Caller, queue: string): Promise<Response> {
  const rows = await db.run(() =>
    db.sql<Json[]>`
      select key, max_running, max_starts, extract(epoch from per)::double precision as per_s,
             running, parked
        from queue_pump.key_limits(${caller.organizationId}, ${queue})`
  );
  return Response.json({
    queue,
    limits: rows.map((r) => ({
      key: r.key,
      maxRunning: r.max_running,
      maxStarts: r.max_starts,
      perSeconds: r.per_s,
      running: Number(r.running),
      parked: Number(r.parked),
    })),
  });
}

/** Set (or, with null, remove) a key's concurrency limit and/or rate limit: `{"queue", "key",
 * "maxRunning"}`, `{"queue", "key", "maxStarts", "perSeconds"}`; `key` null or absent: the
 * queue's default for every key. Answers the queue's limits as GET does. */
async function setLimits(db: Database, caller: Caller, req: Request, url: URL): Promise<Response> {
  queryOf(url, []);
  const b = await body(req, ["queue", "key", "maxRunning", "maxStarts", "perSeconds"]);
  const queue = queueName(b.queue) ?? "agent";
  const key = b.key ?? null;
  if (key !== null && typeof key !== "string") throw new Invalid("key must be a string, or null for the default");
  const wholeOrNull = (v: unknown, name: string) => {
    if (v !== null && (typeof v !== "number" || !Number.isInteger(v))) {
      throw new Invalid(`${name} must be a whole number, or null to remove the limit`);
    }
    return v as number | null;
  };
  const concurrency = "maxRunning" in b;
  const rate = "maxStarts" in b;
  if (!concurrency && !rate) throw new Invalid("give maxRunning, maxStarts, or both");
  const maxRunning = concurrency ? wholeOrNull(b.maxRunning, "maxRunning") : null;
  const maxStarts = rate ? wholeOrNull(b.maxStarts, "maxStarts") : null;
  const per = maxStarts === null ? null : seconds(b.perSeconds, "perSeconds", 0.001, 86400);
  // One transaction: both limits change, or (a bad value the database refuses) neither.
  await db.run(() =>
    db.sql.begin(async (sql) => {
      if (concurrency) {
        await sql`select queue_pump.set_concurrency_limit(${caller.organizationId}, ${queue}, ${key}, ${maxRunning})`;
      }
      if (rate) {
        await sql`select queue_pump.set_rate_limit(${caller.organizationId}, ${queue}, ${key}, ${maxStarts},
                                                   make_interval(secs => ${per}::double precision))`;
      }
    })
  );
  return await limitsOf(db, caller, queue);
}

const ROUTES: Route[] = [
  { pattern: /^\/limits$/, methods: { GET: limits, POST: setLimits } },
  { pattern: /^$/, methods: { GET: list, POST: add } },
  { pattern: /^\/stats$/, methods: { GET: stats } },
  { pattern: /^\/hung$/, methods: { GET: hung } },
  { pattern: /^\/hung\/cancel$/, methods: { POST: cancelHung } },
  { pattern: /^\/retry$/, methods: { POST: retryFailed } },
  { pattern: /^\/purge$/, methods: { POST: purge } },
  { pattern: /^\/(\d{1,20})$/, methods: { GET: show } },
  { pattern: /^\/(\d{1,20})\/history$/, methods: { GET: history } },
  { pattern: /^\/(\d{1,20})\/cancel$/, methods: { POST: cancel } },
  { pattern: /^\/(\d{1,20})\/retry$/, methods: { POST: retry } },
];

// `/jobs/...` on Supabase; `/functions/v1/jobs/...` under plain Deno, as Supabase routes it.
const PREFIX = /^(?:\/functions\/v1)?\/jobs(?=\/|$)/;

/** The function's own path under `/jobs` ("" for the list), or null for another path. */
export function subPath(url: URL): string | null {
  const m = PREFIX.exec(url.pathname);
  return m ? url.pathname.slice(m[0].length).replace(/\/+$/, "") : null;
}

/** The answer to an authorized call. */
export async function dispatch(db: Database, caller: Caller, req: Request, url: URL, path: string): Promise<Response> {
  for (const route of ROUTES) {
    const m = route.pattern.exec(path);
    if (!m) continue;
    const handler = Object.hasOwn(route.methods, req.method) ? route.methods[req.method] : undefined;
    if (!handler) {
      const allow = Object.keys(route.methods).join(", ");
      return error(405, `use ${allow} on this path`, { allow });
    }
    const id = m[1] === undefined ? null : jobId(m[1]);
    try {
      return await handler(db, caller, req, url, id);
    } catch (err) {
      if (err instanceof Invalid) return error(400, err.message);
      return db.errorResponse(err, `jobs ${req.method} ${route.pattern.source}`);
    }
  }
  return error(404, "no such path; see docs/OPERATOR_API.md");
}
