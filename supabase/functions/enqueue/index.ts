// enqueue: POST one job. 201 {"id", "created": true}; 200 {"id", "created": false} when the
// dedupeKey is already known in that organization and queue; 400 with one line for a bad body.
// The same X-Agent-Token and X-Organization-Id as ai-job-runner (never ADMIN_TOKEN: that is the
// operator's, for the `jobs` function); what QUEUE_PUMP_SCHEDULES entries point at
// (docs/SCHEDULES.md). The job's history says it was added `by: enqueue`.
import { availabilityFromEnv, connect, Database } from "../_shared/db.ts";
import { distinctTokens, listFromEnv, tokenFromEnv } from "../_shared/env.ts";
import { error } from "../_shared/http.ts";
import { accept } from "../_shared/request.ts";
import { prepare, stopOnSignals } from "../_shared/serve.ts";
import { MAX_BODY_BYTES, parseNewJob } from "./validate.ts";

const { handler, options } = prepare("enqueue", MAX_BODY_BYTES, () => {
  const token = tokenFromEnv("AGENT_TOKEN");
  distinctTokens(token, "ADMIN_TOKEN");
  const allowed = listFromEnv("ALLOWED_ORGANIZATION_IDS");
  const db = new Database(connect(), availabilityFromEnv());

  return async (req: Request): Promise<Response> => {
    const call = await accept(req, "enqueue", token, allowed, MAX_BODY_BYTES);
    if (call instanceof Response) return call;
    const { caller, body, url } = call;
    const job = parseNewJob(body, url.searchParams.get("queue"));
    if (typeof job === "string") return error(400, job);
    let rows: { id: number; created: boolean }[];
    try {
      // runAt goes as text: a timestamptz parameter would pass through a JavaScript Date and
      // lose its microseconds.
      rows = await db.run(() =>
        db.sql<{ id: number; created: boolean }[]>`
          select id, created from queue_pump.add_job(
            organization_id => ${caller.organizationId}, queue => ${job.queue}, job_type => ${job.type},
            payload => ${db.sql.json(job.payload as never)}, dedupe_key => ${job.dedupeKey},
            run_at => ${job.runAt}::text::timestamptz, max_attempts => ${job.maxAttempts}, by => 'enqueue')`
      );
    } catch (err) {
      return db.errorResponse(err, "enqueue");
    }
    const [row] = rows;
    if (row?.id == null) {
      // enqueue_job always returns a job (the migration of issue 20); never answer without one.
      console.error(JSON.stringify({ event: "internal_error", during: "enqueue", error: "no job returned" }));
      return error(500, "internal error: the job was not stored, try again");
    }
    return Response.json({ id: row.id, created: row.created }, { status: row.created ? 201 : 200 });
  };
});

// Plain Deno: a private unix socket behind the guarded front; Supabase: the runtime's socket.
stopOnSignals("path" in options ? Deno.serve(options, handler) : Deno.serve(options, handler));
