// enqueue: POST one job. 201 {"id", "created": true}; 200 {"id", "created": false} when the
// dedupeKey is already known in that organization and queue; 400 with one line for a bad body.
// Or POST an array of up to 1,000 jobs, stored in one transaction: {"jobs": [{"id", "created"},
// ...]} in the order sent, 201 when any was created; one bad element refuses the whole batch
// (400 naming it: `jobs[3].priority must be ...`).
// The same X-Agent-Token and X-Organization-Id as ai-job-runner (never ADMIN_TOKEN: that is the
// operator's, for the `jobs` function); what QUEUE_PUMP_SCHEDULES entries point at
// (docs/SCHEDULES.md). The job's history says it was added `by: enqueue`.
import { availabilityFromEnv, connect, Database } from "../_shared/db.ts";
import { distinctTokens, listFromEnv, tokenFromEnv } from "../_shared/env.ts";
import { error } from "../_shared/http.ts";
import { logError } from "../_shared/log.ts";
import { accept } from "../_shared/request.ts";
import { prepare, stopOnSignals } from "../_shared/serve.ts";
import { type Added, addJob, addJobs } from "./store.ts";
import { MAX_BODY_BYTES, parseBatch, parseNewJob } from "./validate.ts";

const { handler, options } = prepare("enqueue", MAX_BODY_BYTES, () => {
  const token = tokenFromEnv("AGENT_TOKEN");
  distinctTokens(token, "ADMIN_TOKEN");
  const allowed = listFromEnv("ALLOWED_ORGANIZATION_IDS");
  const db = new Database(connect(), availabilityFromEnv());

  return async (req: Request): Promise<Response> => {
    const call = await accept(req, "enqueue", token, allowed, MAX_BODY_BYTES, true);
    if (call instanceof Response) return call;
    const { caller, body, batch, url } = call;
    if (batch !== undefined) {
      const jobs = parseBatch(batch, url.searchParams.get("queue"));
      if (typeof jobs === "string") return error(400, jobs);
      let added: Added[];
      try {
        added = await addJobs(db, caller.organizationId, jobs, "enqueue");
      } catch (err) {
        return db.errorResponse(err, "enqueue");
      }
      if (added.length !== jobs.length) return noJob();
      const created = added.some((a) => a.created);
      return Response.json({ jobs: added.map(({ id, created }) => ({ id, created })) }, {
        status: created ? 201 : 200,
      });
    }
    const job = parseNewJob(body, url.searchParams.get("queue"));
    if (typeof job === "string") return error(400, job);
    let row: Added | null;
    try {
      row = await addJob(db, caller.organizationId, job, "enqueue");
    } catch (err) {
      return db.errorResponse(err, "enqueue");
    }
    // add_job always returns a job (the migration of issue 20); never answer without one.
    if (row === null) return noJob();
    return Response.json({ id: row.id, created: row.created }, { status: row.created ? 201 : 200 });
  };
});

function noJob(): Response {
  logError({ event: "internal_error", during: "enqueue", error: "no job returned" });
  return error(500, "internal error: the job was not stored, try again");
}

// Plain Deno: a private unix socket behind the guarded front; Supabase: the runtime's socket.
stopOnSignals("path" in options ? Deno.serve(options, handler) : Deno.serve(options, handler));
