// Unit tests for the functions' pure parts: `deno test supabase/functions/_tests` (CI runs it).
import { deepStrictEqual, equal, match } from "node:assert/strict";
import { parseNewJob } from "../enqueue/validate.ts";
import { queueOf } from "../ai-job-runner/runner.ts";
import { sameSecret } from "../_shared/auth.ts";
import { isFunctionPath } from "../_shared/http.ts";
import { jsonProblem, storableText } from "../_shared/json.ts";
import { mask } from "../ai-job-runner/runner.ts";

function nested(depth: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}

Deno.test("a minimal job takes the defaults", () => {
  deepStrictEqual(parseNewJob({ type: "echo" }, null), {
    queue: "agent",
    type: "echo",
    payload: {},
    dedupeKey: null,
    runAt: null,
    maxAttempts: 5,
  });
});

Deno.test("as for the runner call, the query's queue wins over the body's", () => {
  const job = parseNewJob({ type: "t", queue: "body" }, "query");
  equal(typeof job === "string" ? job : job.queue, "query");
  const fromBody = parseNewJob({ type: "t", queue: "body" }, null);
  equal(typeof fromBody === "string" ? fromBody : fromBody.queue, "body");
});

Deno.test("bad bodies get one line naming the field", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{}, /^type must be/],
    [{ type: "" }, /^type must be/],
    [{ type: "t", queue: "has space" }, /^queue must be/],
    [{ type: "t", dedupe_key: "k" }, /^unknown field "dedupe_key"; accepted: .*dedupeKey/],
    [{ type: "t", dedupeKey: "" }, /^dedupeKey must be/],
    [{ type: "t", runAt: "2026-11-28" }, /^runAt must be/],
    [{ type: "t", runAt: "2026-13-45T99:00:00Z" }, /^runAt must be/],
    [{ type: "t", maxAttempts: 1.5 }, /^maxAttempts must be/],
    [{ type: "t", maxAttempts: 1001 }, /^maxAttempts must be/],
    [{ type: "t", runAt: "2026-02-30T00:00:00Z" }, /^runAt must be/],
    [{ type: "t", runAt: "0000-01-01T00:00:00Z" }, /^runAt must be/],
    [{ type: "a\u0000b" }, /^type must be/],
    [{ type: "t", dedupeKey: "k\u0000" }, /^dedupeKey must be/],
    [{ type: "t", payload: { s: "x\u0000" } }, /^payload holds a \\u0000/],
    [{ type: "t", payload: { s: "\ud800" } }, /lone surrogate/],
    [{ type: "t", payload: nested(100) }, /^payload is nested deeper than 64/],
  ];
  for (const [body, expected] of cases) {
    const got = parseNewJob(body, null);
    equal(typeof got, "string", JSON.stringify(body));
    match(got as string, expected);
  }
});

Deno.test("the runner call's queue: query wins, then body, then agent", () => {
  const url = (q: string) => new URL(`http://x/functions/v1/ai-job-runner${q}`);
  equal(queueOf(url("?queue=q1"), { queue: "q2" }), "q1");
  equal(queueOf(url(""), { queue: "q2" }), "q2");
  equal(queueOf(url(""), {}), "agent");
  equal(queueOf(url("?queue=a%20b"), {}), null);
  equal(queueOf(url(""), { queue: 7 }), null);
});

Deno.test("secrets compare equal only when equal, whatever their lengths", async () => {
  equal(await sameSecret("s3cret-token", "s3cret-token"), true);
  equal(await sameSecret("s3cret-toke", "s3cret-token"), false);
  equal(await sameSecret("", "s3cret-token"), false);
  equal(await sameSecret("s3cret-token-and-more", "s3cret-token"), false);
});

Deno.test("a function answers on its Supabase path and on the local one", () => {
  const at = (p: string) => isFunctionPath(new URL(`http://x${p}`), "enqueue");
  equal(at("/enqueue"), true);
  equal(at("/functions/v1/enqueue/"), true);
  equal(at("/functions/v1/enqueued"), false);
  equal(at("/other/enqueue"), false);
});

Deno.test("jsonb's limits: what PostgreSQL would refuse is one line here", () => {
  equal(jsonProblem({ a: [1, "x", { b: null }] }, "v", 1000), null);
  equal(jsonProblem("a \\u0000 written out is fine", "v", 1000), null);
  equal(jsonProblem("\ud83d\ude00 a pair is fine", "v", 1000), null);
  match(jsonProblem("x".repeat(2000), "v", 1000)!, /larger than 1000/);
  match(jsonProblem(nested(100_000), "v", 1e9)!, /nested deeper/);
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  match(jsonProblem(cycle, "v", 1000)!, /^v is not JSON/);
  match(jsonProblem(10n, "v", 1000)!, /^v is not JSON/);
  equal(storableText("a\u0000b", 10), "ab");
});

Deno.test("secrets are masked out of error texts", () => {
  equal(
    mask("connect to postgres://u:pw-123456@h failed; token tok-abcdef", ["pw-123456", "tok-abcdef", ""]),
    "connect to postgres://u:***@h failed; token ***",
  );
});
