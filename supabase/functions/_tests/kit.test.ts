// Unit tests for the functions' pure parts: `deno test supabase/functions/_tests` (CI runs it).
import { deepStrictEqual, equal, match, notEqual } from "node:assert/strict";
import { parseBatch, parseNewJob, sqlElement } from "../enqueue/validate.ts";
import { subPath } from "../jobs/api.ts";
import {
  decodeCursor,
  encodeCursor,
  flag,
  Invalid,
  jobId,
  olderThan,
  onlyKnown,
  queryOf,
  queueName,
  statuses,
  time,
  wholeNumber,
} from "../jobs/input.ts";
import { queueOf } from "../ai-job-runner/runner.ts";
import { sameSecret } from "../_shared/auth.ts";
import { retryAfterFor } from "../_shared/db.ts";
import { framing } from "../_shared/front.ts";
import { isFunctionPath } from "../_shared/http.ts";
import { exactNumber, InexactNumber, jsonProblem, MAX_JSON_BYTES, parseExact, storableText } from "../_shared/json.ts";
import { describe, Masker, UNPRINTABLE } from "../_shared/secrets.ts";

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
    priority: 0,
    concurrencyKey: null,
    after: null,
    afterFailure: "end",
    parentId: null,
  });
});

Deno.test("issue 24's fields: priority, concurrencyKey, after, afterFailure, parentId", () => {
  const job = parseNewJob(
    { type: "t", priority: -1000, concurrencyKey: "acme", after: [1, 2 ** 53 - 1], afterFailure: "run", parentId: 7 },
    null,
  );
  deepStrictEqual(typeof job === "string" ? job : sqlElement(job), {
    job_type: "t",
    queue: "agent",
    payload: {},
    dedupe_key: null,
    run_at: null,
    max_attempts: 5,
    priority: -1000,
    concurrency_key: "acme",
    after: [1, 2 ** 53 - 1],
    after_failure: "run",
    parent_id: 7,
  });
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ type: "t", priority: 1001 }, /^priority must be a whole number from -1000 to 1000 \(higher runs first\)$/],
    [{ type: "t", priority: 1.5 }, /^priority must be/],
    [{ type: "t", priority: "50" }, /^priority must be/],
    [{ type: "t", concurrencyKey: "" }, /^concurrencyKey must be a string of 1-200/],
    [{ type: "t", concurrencyKey: "k\u0000" }, /^concurrencyKey must be/],
    [{ type: "t", after: 5 }, /^after must be an array of at most 1000 job ids$/],
    [{ type: "t", after: [0] }, /^after must be/],
    [{ type: "t", after: [2 ** 53] }, /^after must be/],
    [{ type: "t", after: Array(1001).fill(1) }, /^after must be/],
    [{ type: "t", afterFailure: "ignore" }, /^afterFailure must be "end" or "run"$/],
    [{ type: "t", parentId: "7" }, /^parentId must be a job id$/],
    [{ type: "t", concurrency_key: "k" }, /^unknown field "concurrency_key"; accepted: .*concurrencyKey/],
  ];
  cases.forEach(([body, expected], i) => {
    const got = parseNewJob(body, null);
    equal(typeof got, "string", `case ${i}`);
    match(got as string, expected);
  });
});

Deno.test("null fields take their defaults", () => {
  const job = parseNewJob({
    type: "t",
    priority: null,
    concurrencyKey: null,
    after: null,
    afterFailure: null,
    parentId: null,
  }, null);
  deepStrictEqual(
    typeof job === "string" ? job : [job.priority, job.concurrencyKey, job.after, job.afterFailure, job.parentId],
    [0, null, null, "end", null],
  );
});

Deno.test("a batch: every element checked, the first bad one named by index and field", () => {
  const ok = parseBatch([{ type: "a" }, { type: "b", queue: "q", priority: 3 }], null);
  deepStrictEqual(typeof ok === "string" ? ok : ok.map((j) => [j.type, j.queue, j.priority]), [
    ["a", "agent", 0],
    ["b", "q", 3],
  ]);
  const fromQuery = parseBatch([{ type: "a", queue: "body" }], "query");
  equal(typeof fromQuery === "string" ? fromQuery : fromQuery[0].queue, "query");
  equal(
    parseBatch([{ type: "a" }, { type: "b", priority: 5000 }], null),
    "jobs[1].priority must be a whole number from -1000 to 1000 (higher runs first)",
  );
  equal(parseBatch([{ type: "a" }, "x"], null), "jobs[1] must be a JSON object");
  equal(
    parseBatch([{ type: "a" }, {}], null),
    "jobs[1].type must be a string of 1-200 characters, without NUL or lone surrogates",
  );
  equal(parseBatch([], null), "an array body must hold 1 to 1000 jobs");
  equal(parseBatch(Array(1001).fill({ type: "a" }), null), "an array body must hold 1 to 1000 jobs");
  equal(typeof parseBatch(Array(1000).fill({ type: "a" }), null), "object");
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
    [{ type: "t", maxAttempts: new InexactNumber("1e400") }, /^maxAttempts must be/],
    [{ type: "t", runAt: "2026-02-30T00:00:00Z" }, /^runAt must be/],
    [{ type: "t", runAt: "0000-01-01T00:00:00Z" }, /^runAt must be/],
    [{ type: "t", runAt: "1999-12-31T23:59:59Z" }, /^runAt must be/],
    [{ type: "t", runAt: "9999-12-31T23:59:59-14:59" }, /^runAt must be/],
    [{ type: "a\u0000b" }, /^type must be .* without NUL or lone surrogates$/],
    [{ type: "a\ud800" }, /^type must be .* without NUL or lone surrogates$/],
    [{ type: "t", dedupeKey: "k\u0000" }, /^dedupeKey must be/],
    [{ type: "t", dedupeKey: "k\udfff" }, /^dedupeKey must be/],
    [{ type: "t", payload: { s: "x\u0000" } }, /^payload holds a \\u0000/],
    [{ type: "t", payload: { s: "\ud800" } }, /lone surrogate/],
    [{ type: "t", payload: { ["\ud800"]: 1 } }, /lone surrogate/],
    [{ type: "t", payload: nested(100) }, /^payload is nested deeper than 64/],
    [{ type: "t", payload: { a: [1, new InexactNumber("9007199254740993")] } }, /^payload\.a\[1\] holds the number/],
  ];
  cases.forEach(([body, expected], i) => {
    const got = parseNewJob(body, null);
    equal(typeof got, "string", `case ${i}`);
    match(got as string, expected);
  });
});

Deno.test("runAt: the window is checked as an instant in UTC", () => {
  for (const ok of ["2000-01-01T00:00:00Z", "2000-01-01T01:00:00+01:00", "9999-12-31T23:59:59.999999Z"]) {
    equal(typeof parseNewJob({ type: "t", runAt: ok }, null), "object", ok);
  }
  for (const bad of ["1999-12-31T23:00:00-00:59", "2000-01-01T00:30:00+01:00", "9999-12-31T20:00:00-04:00"]) {
    equal(typeof parseNewJob({ type: "t", runAt: bad }, null), "string", bad);
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

Deno.test("secrets compare equal only when equal, whatever their lengths", () => {
  equal(sameSecret("s3cret-token", "s3cret-token"), true);
  equal(sameSecret("s3cret-toke", "s3cret-token"), false);
  equal(sameSecret("", "s3cret-token"), false);
  equal(sameSecret("s3cret-token-and-more", "s3cret-token"), false);
  equal(sameSecret("\u00e9\ud800", "s3cret-token"), false);
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
  match(jsonProblem("x".repeat(2000), "v", 1000)!, /larger than 1000 bytes/);
  match(jsonProblem("\u00e9".repeat(600), "v", 1000)!, /larger than 1000 bytes/, "bytes, not characters");
  match(jsonProblem(nested(100_000), "v", 1e9)!, /nested deeper/);
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  match(jsonProblem(cycle, "v", 1000)!, /^v is not JSON/);
  match(jsonProblem(10n, "v", 1000)!, /^v is not JSON/);
  const hostile = new Proxy({}, {
    ownKeys() {
      throw new Error("no keys");
    },
  });
  equal(jsonProblem(hostile, "v", 1000), "v is not JSON (no keys)");
  equal(storableText("a\u0000b\ud800", 10), "ab\ufffd");
  equal(MAX_JSON_BYTES, 1048576);
});

Deno.test("a number is exact when a double reads the value that was written", () => {
  const exact = ["0", "-0", "0.1", "1.10", "1E2", "-0.5e-3", "9007199254740991", "12345678901234567000", "5e-324"];
  for (const s of exact) equal(exactNumber(s, Number(s)), true, s);
  const changed = ["9007199254740993", "12345678901234567891", "1e400", "-1e400", "1e-400", "0.1000000000000000055511"];
  for (const s of changed) equal(exactNumber(s, Number(s)), false, s);
});

Deno.test("parseExact keeps exact numbers and marks the others", () => {
  deepStrictEqual(parseExact('{"a":1,"b":[0.1,"1e400"]}'), { value: { a: 1, b: [0.1, "1e400"] }, inexact: null });
  const { value, inexact } = parseExact('{"id":12345678901234567891,"ok":1.5e3}');
  equal(inexact, "12345678901234567891");
  const got = value as { id: unknown; ok: unknown };
  equal(got.ok, 1500);
  equal(got.id instanceof InexactNumber, true);
  match(jsonProblem(value, "payload", 1000)!, /^payload\.id holds the number 12345678901234567891, which JavaScript/);
});

Deno.test("secrets are masked in every form before anything is cut", () => {
  const token = "tok-0123456789abcdef-ZZ";
  const password = 'p@ss/w0rd:"secret"';
  const masker = new Masker([token, password], ["p%40ss%2Fw0rd%3A%22secret%22"]);
  const forms = [
    token,
    token.toLowerCase(),
    password,
    encodeURIComponent(password),
    encodeURIComponent(password).toLowerCase(),
    JSON.stringify(password).slice(1, -1),
  ];
  for (const form of forms) equal(masker.mask(`a ${form} b`), "a *** b", form);
  // A secret at the cut: masked whole, never cut in half.
  const line = masker.line("x".repeat(490) + token, 500);
  equal(line, "x".repeat(490) + "***");
  const long = masker.line("y\n".repeat(100_000) + token, 500);
  equal(long.includes("tok-"), false);
  equal(long.length, 500);
  equal(new Masker([""]).mask("nothing to mask"), "nothing to mask");
});

Deno.test("describe never throws, whatever was thrown", () => {
  equal(describe(new TypeError("bad")), "TypeError: bad");
  equal(describe("plain"), "plain");
  equal(describe(Object.create(null)), UNPRINTABLE);
  const err = new Error("hidden");
  Object.defineProperty(err, "message", {
    get() {
      throw new Error("no");
    },
  });
  equal(describe(err), UNPRINTABLE);
  const proxy = new Proxy({}, {
    getPrototypeOf() {
      throw new Error("no prototype");
    },
  });
  equal(describe(proxy), UNPRINTABLE);
  notEqual(describe(Symbol("s")), undefined);
});

Deno.test("Retry-After starts at a second and grows with the outage, to the cap", () => {
  deepStrictEqual([0, 500, 2000, 2001, 6000, 9000, 60_000].map((ms) => retryAfterFor(ms, 5)), [1, 1, 1, 2, 3, 5, 5]);
  equal(retryAfterFor(60_000, 60), 30);
});

Deno.test("the front reads each request's framing and refuses what it cannot bound", () => {
  const head = (lines: string[]) => lines.join("\r\n") + "\r\n\r\n";
  equal(framing(head(["POST /functions/v1/enqueue HTTP/1.1", "Host: x", "Content-Length: 12"]), 100), 12);
  equal(framing(head(["POST / HTTP/1.1", "content-length: 5, 5"]), 100), 5);
  equal(framing(head(["GET / HTTP/1.0"]), 100), 0);
  const refused = (lines: string[]) => {
    const got = framing(head(lines), 100);
    return typeof got === "number" ? got : got.status;
  };
  equal(refused(["POST / HTTP/1.1", "Transfer-Encoding: chunked"]), 411);
  equal(refused(["POST / HTTP/1.1", "Content-Length: 101"]), 413);
  equal(refused(["POST / HTTP/1.1", "Content-Length: 5", "Content-Length: 6"]), 400);
  equal(refused(["POST / HTTP/1.1", "Content-Length: -1"]), 400);
  equal(refused(["PRI * HTTP/2.0"]), 400);
  equal(refused(["POST / HTTP/1.1", " folded: header"]), 400);
});

// --- the operator API's input (jobs/input.ts) ---------------------------------------------------

Deno.test("jobs: a 400 names the parameter or field and what it accepts", () => {
  const cases: [() => unknown, RegExp][] = [
    [() => statuses("finished"), /^status must be one of queued, running, done, failed, cancelled/],
    [() => statuses(""), /^status must be/],
    [() => wholeNumber("0", "limit", 1, 500, 50), /^limit must be a whole number from 1 to 500/],
    [() => wholeNumber("ten", "limit", 1, 500, 50), /^limit must be/],
    [() => time("yesterday", "since"), /^since must be an ISO 8601 time with a zone/],
    [() => time("2026-12-06T08:00:00", "since"), /^since must be/],
    [() => decodeCursor("not-a-cursor"), /^cursor is not one this API gave/],
    [() => flag("yes", "dryRun"), /^dryRun must be true or false/],
    [() => olderThan(undefined, null, 60, 100), /^olderThan is required/],
    [() => olderThan(1, null, 60, 100), /^olderThan must be a number of seconds from 60/],
    [() => olderThan("0", 300, 1, 86400), /^olderThan must be a whole number from 1/],
    [() => queueName("has space"), /^queue must be/],
    [() => onlyKnown(["dryrun"], ["dryRun"], "field"), /^unknown field "dryrun"; accepted: dryRun/],
    [() => queryOf(new URL("http://x/jobs?statuss=failed"), ["status"]), /^unknown query parameter "statuss"/],
  ];
  cases.forEach(([call, expected], i) => {
    let message = "";
    try {
      call();
    } catch (err) {
      equal(err instanceof Invalid, true, `case ${i}`);
      message = (err as Error).message;
    }
    match(message, expected, `case ${i}`);
  });
});

Deno.test("jobs: accepted input", () => {
  deepStrictEqual(statuses("done, failed,done"), ["done", "failed"]);
  equal(wholeNumber(undefined, "limit", 1, 500, 50), 50);
  equal(time("2026-12-06T08:00:00.123456+00:00", "since"), "2026-12-06T08:00:00.123456+00:00");
  equal(olderThan("300", 300, 1, 86400), 300);
  const cursor = { createdAt: "2026-12-06T08:19:16.123456Z", id: 2 ** 52 + 7 };
  deepStrictEqual(decodeCursor(encodeCursor(cursor)), cursor);
  equal(jobId("9007199254740993"), null);
  equal(jobId("42"), 42);
});

Deno.test("jobs: the function's own path, on Supabase and under plain Deno", () => {
  equal(subPath(new URL("http://x/jobs")), "");
  equal(subPath(new URL("http://x/functions/v1/jobs/42/history")), "/42/history");
  equal(subPath(new URL("http://x/functions/v1/jobsx")), null);
  equal(subPath(new URL("http://x/functions/v1/enqueue")), null);
});
