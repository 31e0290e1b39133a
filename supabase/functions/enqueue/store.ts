// Writing checked jobs: one through queue_pump.add_job, a batch through queue_pump.enqueue_many
// (one transaction). Used by the enqueue function and by a handler's ctx.enqueue.
import { type Database } from "../_shared/db.ts";
import { type NewJob, sqlElement } from "./validate.ts";

export interface Added {
  id: number;
  created: boolean;
}

/** Who added a job, as its first history event says. */
export type By = "enqueue" | "handler" | "operator" | "sql";

/** One job; `parentId` overrides the job's own (a handler's children name it). */
export async function addJob(
  db: Database,
  organizationId: string,
  job: NewJob,
  by: By,
): Promise<Added | null> {
  // runAt goes as text: a timestamptz parameter would pass through a JavaScript Date and lose
  // its microseconds. `after` goes as JSON, read back as bigint[] (ids are exact below 2^53).
  const rows = await db.run(() =>
    db.sql<Added[]>`
      select id, created from queue_pump.add_job(
        organization_id => ${organizationId}, queue => ${job.queue}, job_type => ${job.type},
        payload => ${db.sql.json(job.payload as never)}, dedupe_key => ${job.dedupeKey},
        run_at => ${job.runAt}::text::timestamptz, max_attempts => ${job.maxAttempts}, by => ${by},
        priority => ${job.priority}, concurrency_key => ${job.concurrencyKey},
        "after" => (select array_agg(x::bigint) from jsonb_array_elements_text(${
      db.sql.json((job.after ?? []) as never)
    }::jsonb) x),
        after_failure => ${job.afterFailure}, parent_id => ${job.parentId}::bigint)`
  );
  return rows[0]?.id == null ? null : rows[0];
}

/** A batch, in order; all or nothing. */
export async function addJobs(
  db: Database,
  organizationId: string,
  jobs: NewJob[],
  by: By,
): Promise<Added[]> {
  const elements = jobs.map(sqlElement);
  return await db.run(() =>
    db.sql<Added[]>`
      select id, created from queue_pump.enqueue_many(
        organization_id => ${organizationId}, queue => 'agent', jobs => ${db.sql.json(elements as never)},
        by => ${by})
       order by index`
  );
}
