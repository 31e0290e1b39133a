// The Node pump's call, as a bare loop: global fetch (undici), the same request as the pump's,
// C loops calling until an idle answer, then all stop. Node 18+.
//
//   node bench/node_loop.mjs http://127.0.0.1:PORT [concurrency]
//   (AGENT_TOKEN and ORGANIZATION_ID from the environment, if set)

const base = (process.argv[2] || "").replace(/\/+$/, "");
const concurrency = Number(process.argv[3] || "1");
if (!base) {
  console.error("usage: node bench/node_loop.mjs URL [concurrency]");
  process.exit(2);
}
const url = `${base}/functions/v1/ai-job-runner?worker=1&queue=agent`;
const headers = {
  "X-Agent-Token": process.env.AGENT_TOKEN || "bench-token",
  "X-Organization-Id": process.env.ORGANIZATION_ID || "bench-org",
  "X-Worker-Id": "bench",
  "Content-Type": "application/json",
  Accept: "application/json",
  "User-Agent": "queue-pump-bench/0",
};
const body = JSON.stringify({ worker: true, queue: "agent" });

let done = false;
let calls = 0;
async function loop() {
  while (!done) {
    const res = await fetch(url, { method: "POST", headers, body });
    const data = await res.json();
    calls += 1;
    if (data.processed !== true) done = true;
  }
}

const started = performance.now();
await Promise.all(Array.from({ length: concurrency }, loop));
console.log(JSON.stringify({ calls, seconds: (performance.now() - started) / 1000 }));
