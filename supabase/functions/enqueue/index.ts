// enqueue: POST one job. 201 {"id", "created": true}; 200 {"id", "created": false} when the
// dedupeKey is already known in that organization and queue; 400 with one line for a bad body.
// The same X-Agent-Token and X-Organization-Id as ai-job-runner; what QUEUE_PUMP_SCHEDULES
// entries point at (docs/SCHEDULES.md).
import { connect, databaseError, retryAfterFromEnv } from "../_shared/db.ts";
import { listFromEnv, tokenFromEnv } from "../_shared/env.ts";
import { error, json } from "../_shared/http.ts";
import { accept } from "../_shared/request.ts";
import { start } from "../_shared/start.ts";
import { parseNewJob } from "./validate.ts";

start("enqueue", () => {
  const token = tokenFromEnv("AGENT_TOKEN");
  const allowed = listFromEnv("ALLOWED_ORGANIZATION_IDS");
  const retryAfterS = retryAfterFromEnv();
  const sql = connect();

  return async (req: Request): Promise<Response> => {
    const call = await accept(req, "enqueue", token, allowed);
    if (call instanceof Response) return call;
    const { caller, body, url } = call;
    const job = parseNewJob(body, url.searchParams.get("queue"));
    if (typeof job === "string") return error(400, job);
    try {
      const [row] = await sql<{ id: number; created: boolean }[]>`
        select id, created from queue_pump.enqueue_job(
          organization_id => ${caller.organizationId}, queue => ${job.queue}, job_type => ${job.type},
          payload => ${sql.json(job.payload as never)}, dedupe_key => ${job.dedupeKey},
          run_at => ${job.runAt}::timestamptz, max_attempts => ${job.maxAttempts})`;
      return json(row.created ? 201 : 200, { id: row.id, created: row.created });
    } catch (err) {
      return databaseError(err, retryAfterS);
    }
  };
});
