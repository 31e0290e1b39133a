// The guarded front. Deno.serve has no read deadline and no connection cap
// (denoland/deno#3515): served directly, 100 slow-loris connections stayed open past 30 s and
// 3,000 half-sent requests held 3,030 files. Under plain Deno (self-hosting, the local
// stack) a function therefore listens on PORT through this front, which hands each connection
// to Deno.serve on a private unix socket once its request is coming in at a decent pace. On
// Supabase the platform's gateway plays this part and the front is not used.
//
// Per connection it reads only the framing of each request: the header block (at most
// maxHeaderBytes, within headerTimeoutMs of its first byte, or of the connection), then
// Content-Length bytes of body within bodyTimeoutMs. Between a response and the next request a
// connection may stay idle for idleTimeoutMs. Responses are passed through untouched.
// Chunked request bodies are refused (411): every client of the kit sends a length, and a body
// with a known end is one a deadline can judge.

import { type Event, log } from "./log.ts";

export interface FrontLimits {
  maxConnections: number;
  headerTimeoutMs: number;
  bodyTimeoutMs: number;
  idleTimeoutMs: number;
  maxHeaderBytes: number;
  maxBodyBytes: number;
}

type Log = (event: Record<string, unknown>) => void;
const defaultLog: Log = (event) => log(event as Event);

interface Refusal {
  status: number;
  reason: string;
  message: string;
  headers?: string[];
}

const encoder = new TextEncoder();
const latin1 = new TextDecoder("latin1");
const REQUEST_LINE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP\/1\.[01]$/;

/** The bytes of a complete error answer that closes the connection. */
function answer(r: Refusal): Uint8Array {
  const body = JSON.stringify({ error: r.message });
  const head = [
    `HTTP/1.1 ${r.status} ${r.reason}`,
    "content-type: application/json",
    `content-length: ${encoder.encode(body).length}`,
    "connection: close",
    ...(r.headers ?? []),
  ];
  return encoder.encode(`${head.join("\r\n")}\r\n\r\n${body}`);
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) at += await conn.write(bytes.subarray(at));
}

/** Content-Length of a request head (its bytes as latin1 text), or why it is refused. */
export function framing(head: string, maxBodyBytes: number): number | Refusal {
  const lines = head.split("\r\n");
  if (!REQUEST_LINE.test(lines[0])) {
    return { status: 400, reason: "Bad Request", message: "not an HTTP/1.1 request line" };
  }
  let length: string | null = null;
  for (const line of lines.slice(1)) {
    if (line === "") continue;
    const colon = line.indexOf(":");
    if (colon <= 0 || line[0] === " " || line[0] === "\t") {
      return { status: 400, reason: "Bad Request", message: "malformed header line" };
    }
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === "transfer-encoding") {
      return { status: 411, reason: "Length Required", message: "send Content-Length; chunked bodies are refused" };
    }
    if (name === "content-length") {
      for (const part of value.split(",").map((p) => p.trim())) {
        if (!/^\d{1,15}$/.test(part) || (length !== null && part !== length)) {
          return { status: 400, reason: "Bad Request", message: "malformed Content-Length" };
        }
        length = part;
      }
    }
  }
  const bytes = Number(length ?? "0");
  if (bytes > maxBodyBytes) {
    return { status: 413, reason: "Content Too Large", message: `body too large: at most ${maxBodyBytes} bytes` };
  }
  return bytes;
}

type Phase = "head" | "body" | "waiting" | "idle";

/** One client connection and its upstream one, with the deadline of the current phase. */
class Guarded {
  private phase: Phase = "head";
  private head = ""; // the bytes of the head so far, as latin1 text (one character a byte)
  private bodyLeft = 0;
  private answered = false; // upstream bytes seen since the current request began
  private unanswered = 0; // requests passed on with no upstream bytes seen since
  /** When the current phase must be over (epoch ms; 0: no deadline), checked by the front a few times a second. */
  deadline = 0;
  private deadlinePhase = "";
  private draining = false;
  private closed = false;

  constructor(
    private readonly client: Deno.TcpConn,
    private readonly upstream: Deno.Conn,
    private readonly limits: FrontLimits,
    private readonly log: Log,
  ) {}

  async run(): Promise<void> {
    this.arm(this.limits.headerTimeoutMs, "headers");
    await Promise.all([this.fromClient(), this.fromUpstream()]);
  }

  // Deadlines are numbers, checked for every connection a few times a second by the front:
  // a timer set and cleared at each phase, with a head scanned byte by byte, made the front
  // cost ~75 us of CPU per call here; ~45 us since (bench/supabase_kit.py, 3 pumps x 8).
  private arm(ms: number, phase: string): void {
    this.deadline = Date.now() + ms;
    this.deadlinePhase = phase;
  }

  /** Called by the front's sweep: ends the phase whose deadline has passed. */
  due(now: number): void {
    if (this.deadline !== 0 && now >= this.deadline) {
      this.deadline = 0;
      this.expire(this.deadlinePhase);
    }
  }

  private remote(): string {
    return this.client.remoteAddr.hostname;
  }

  private async fromClient(): Promise<void> {
    const buf = new Uint8Array(65536);
    while (!this.closed) {
      let n: number | null;
      try {
        n = await this.client.read(buf);
      } catch {
        n = null;
      }
      if (n === null) {
        if (this.phase === "body" && !this.draining && !this.closed) {
          this.log({ event: "http_client_gone", during: "body", missing_bytes: this.bodyLeft, remote: this.remote() });
        }
        this.close();
        return;
      }
      if (this.draining) continue; // after our answer: read and dropped, see refuse()
      let refusal: Refusal | null;
      try {
        refusal = await this.take(buf.subarray(0, n));
      } catch {
        // The upstream went away: the function is stopping, or refuse() closed it.
        if (!this.draining) this.close();
        continue;
      }
      if (refusal) await this.refuse(refusal);
    }
  }

  /** Passes a chunk from the client on, following its framing; or says why it is refused. */
  private async take(chunk: Uint8Array): Promise<Refusal | null> {
    let at = 0;
    while (at < chunk.length) {
      if (this.phase === "idle" || this.phase === "waiting") this.begin();
      if (this.phase === "head") {
        // Head bytes go on as they come (the function's server waits for the rest); only the
        // body waits until the head's framing is known to be acceptable.
        const before = this.head.length;
        const room = Math.min(chunk.length - at, this.limits.maxHeaderBytes - before);
        this.head += latin1.decode(chunk.subarray(at, at + room));
        const found = this.head.indexOf("\r\n\r\n", Math.max(0, before - 3));
        if (found < 0) {
          if (this.head.length >= this.limits.maxHeaderBytes) {
            return { status: 431, reason: "Request Header Fields Too Large", message: "headers too large" };
          }
          await writeAll(this.upstream, chunk.subarray(at, at + room));
          at += room;
          continue;
        }
        const end = found + 4 - before; // head bytes in this chunk
        const length = framing(this.head.slice(0, found + 4), this.limits.maxBodyBytes);
        if (typeof length !== "number") return length;
        await writeAll(this.upstream, chunk.subarray(at, at + end));
        at += end;
        this.head = "";
        this.bodyLeft = length;
        if (length > 0) {
          this.phase = "body";
          this.arm(this.limits.bodyTimeoutMs, "body");
        } else {
          this.requested();
        }
        continue;
      }
      const n = Math.min(this.bodyLeft, chunk.length - at);
      await writeAll(this.upstream, chunk.subarray(at, at + n));
      at += n;
      this.bodyLeft -= n;
      if (this.bodyLeft === 0) this.requested();
    }
    return null;
  }

  /** A new request's first bytes: its headers are due within headerTimeoutMs. */
  private begin(): void {
    this.phase = "head";
    this.answered = false;
    this.arm(this.limits.headerTimeoutMs, "headers");
  }

  /** The whole request is with the function: no deadline while it works on it. */
  private requested(): void {
    this.phase = "waiting";
    this.unanswered++;
    this.deadline = 0;
  }

  private async fromUpstream(): Promise<void> {
    const buf = new Uint8Array(65536);
    while (!this.closed) {
      let n: number | null;
      try {
        n = await this.upstream.read(buf);
      } catch {
        n = null;
      }
      if (n === null) break;
      if (this.draining) break; // our own answer goes out instead
      try {
        await writeAll(this.client, buf.subarray(0, n));
      } catch {
        break;
      }
      this.answered = true;
      this.unanswered = 0;
      if (this.phase === "waiting") this.phase = "idle";
      if (this.phase === "idle") this.arm(this.limits.idleTimeoutMs, "idle");
    }
    if (!this.draining) this.close();
  }

  private expire(phase: string): void {
    if (this.closed || this.draining) return;
    if (phase === "idle") {
      this.close();
      return;
    }
    this.log({
      event: "http_timeout",
      during: phase,
      ...(phase === "body" ? { missing_bytes: this.bodyLeft } : { header_bytes: this.head.length }),
      remote: this.remote(),
    });
    if (this.answered || this.unanswered > 0) {
      this.close(); // an answer of the function's may be on its way: never write into it
      return;
    }
    const ms = phase === "body" ? this.limits.bodyTimeoutMs : this.limits.headerTimeoutMs;
    this.refuse({ status: 408, reason: "Request Timeout", message: `request not received within ${ms} ms` });
  }

  /** Answers `r` in place of the function and ends the connection: its write side at once,
   * then, for a second, what the client still sends is read and dropped, so that closing does
   * not reset the connection and lose the answer before the client reads it. */
  private async refuse(r: Refusal): Promise<void> {
    if (this.draining || this.closed) return;
    if (r.status !== 408) {
      this.log({ event: "http_refused", status: r.status, reason: r.message, remote: this.remote() });
    }
    this.draining = true;
    this.deadline = 0;
    try {
      this.upstream.close();
    } catch {
      // already closed
    }
    try {
      await withinASecond(writeAll(this.client, answer(r)));
      await this.client.closeWrite();
    } catch {
      this.close();
      return;
    }
    setTimeout(() => this.close(), 1000);
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.deadline = 0;
    for (const conn of [this.client, this.upstream]) {
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  }
}

/** `work`, or nothing after a second (a client that does not read cannot hold us). */
async function withinASecond(work: Promise<unknown>): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([work, new Promise((resolve) => timer = setTimeout(resolve, 1000))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Writes a last answer to a connection never read from, and closes it. */
async function sendAndClose(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  try {
    await withinASecond(writeAll(conn, bytes));
  } catch {
    // gone already
  } finally {
    try {
      conn.close();
    } catch {
      // already closed
    }
  }
}

export class Front {
  private open = 0;
  private waiters: (() => void)[] = [];
  private readonly live = new Set<Guarded>();
  private readonly sweeper: ReturnType<typeof setInterval>;
  private readonly listener: Deno.TcpListener;

  /** Listens on hostname:port at once; `serve()` starts accepting. */
  constructor(
    hostname: string,
    port: number,
    private readonly upstreamPath: string,
    private readonly limits: FrontLimits,
    private readonly log: Log = defaultLog,
  ) {
    this.listener = Deno.listen({ hostname, port });
    // A deadline is met to within a quarter of the shortest one (at most 250 ms).
    const every = Math.max(10, Math.min(250, Math.floor(Math.min(limits.headerTimeoutMs, limits.bodyTimeoutMs) / 4)));
    this.sweeper = setInterval(() => {
      const now = Date.now();
      for (const conn of this.live) conn.due(now);
    }, every);
  }

  get addr(): Deno.NetAddr {
    return this.listener.addr;
  }

  async serve(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.listener.accept();
      } catch (err) {
        if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) return; // closed
        // Out of descriptors or the like: say so once a second and keep accepting.
        this.log({ event: "http_accept_failed", error: err instanceof Error ? err.name : "unknown" });
        await new Promise((resolve) => setTimeout(resolve, 1000));
        continue;
      }
      this.handle(conn);
    }
  }

  private async handle(conn: Deno.TcpConn): Promise<void> {
    if (this.open >= this.limits.maxConnections) {
      this.log({
        event: "http_refused",
        status: 503,
        reason: `HTTP_MAX_CONNECTIONS (${this.limits.maxConnections}) open`,
        remote: conn.remoteAddr.hostname,
      });
      await sendAndClose(
        conn,
        answer({
          status: 503,
          reason: "Service Unavailable",
          message: "too many connections, try again later",
          headers: ["retry-after: 1"],
        }),
      );
      return;
    }
    this.open++;
    try {
      conn.setNoDelay(true);
      let upstream: Deno.Conn;
      try {
        upstream = await Deno.connect({ transport: "unix", path: this.upstreamPath });
      } catch {
        this.log({ event: "http_refused", status: 503, reason: "the function is not serving (starting or stopping)" });
        await sendAndClose(
          conn,
          answer({ status: 503, reason: "Service Unavailable", message: "starting or stopping, try again later" }),
        );
        return;
      }
      const guarded = new Guarded(conn, upstream, this.limits, this.log);
      this.live.add(guarded);
      try {
        await guarded.run();
      } finally {
        this.live.delete(guarded);
      }
    } finally {
      this.open--;
      if (this.open === 0) this.waiters.splice(0).forEach((wake) => wake());
    }
  }

  /** Once no connection is open (their answers passed on), or after `ms`. */
  async idle(ms: number): Promise<void> {
    if (this.open === 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      this.waiters.push(resolve);
      timer = setTimeout(resolve, ms);
    });
    clearTimeout(timer);
  }

  close(): void {
    clearInterval(this.sweeper);
    try {
      this.listener.close();
    } catch {
      // already closed
    }
  }
}
