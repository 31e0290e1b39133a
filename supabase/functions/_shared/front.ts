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

export interface FrontLimits {
  maxConnections: number;
  headerTimeoutMs: number;
  bodyTimeoutMs: number;
  idleTimeoutMs: number;
  maxHeaderBytes: number;
  maxBodyBytes: number;
}

type Log = (event: Record<string, unknown>) => void;
const defaultLog: Log = (event) => console.log(JSON.stringify(event));

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

/** Content-Length of a request head, or why it is refused. */
export function framing(head: Uint8Array, maxBodyBytes: number): number | Refusal {
  const lines = latin1.decode(head).split("\r\n");
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

function terminator(buf: Uint8Array, from: number, to: number): number {
  for (let i = Math.max(from, 3); i < to; i++) {
    if (buf[i] === 10 && buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13) return i + 1;
  }
  return -1;
}

type Phase = "head" | "body" | "waiting" | "idle";

/** One client connection and its upstream one, with the deadline of the current phase. */
class Guarded {
  private phase: Phase = "head";
  private readonly head: Uint8Array;
  private headLength = 0;
  private bodyLeft = 0;
  private answered = false; // upstream bytes seen since the current request began
  private unanswered = 0; // requests passed on with no upstream bytes seen since
  private timer: ReturnType<typeof setTimeout> | undefined;
  private draining = false;
  private closed = false;

  constructor(
    private readonly client: Deno.TcpConn,
    private readonly upstream: Deno.Conn,
    private readonly limits: FrontLimits,
    private readonly log: Log,
  ) {
    this.head = new Uint8Array(limits.maxHeaderBytes);
  }

  async run(): Promise<void> {
    this.arm(this.limits.headerTimeoutMs, "headers");
    await Promise.all([this.fromClient(), this.fromUpstream()]);
  }

  private arm(ms: number, phase: string): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.expire(phase), ms);
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
        const before = this.headLength;
        const copied = Math.min(chunk.length - at, this.head.length - before);
        this.head.set(chunk.subarray(at, at + copied), before);
        this.headLength += copied;
        const end = terminator(this.head, before, this.headLength);
        if (end < 0) {
          if (this.headLength >= this.head.length) {
            return { status: 431, reason: "Request Header Fields Too Large", message: "headers too large" };
          }
          at += copied;
          continue;
        }
        const length = framing(this.head.subarray(0, end), this.limits.maxBodyBytes);
        if (typeof length !== "number") return length;
        await writeAll(this.upstream, this.head.subarray(0, end));
        at += end - before;
        this.headLength = 0;
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
    clearTimeout(this.timer);
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
      try {
        await writeAll(this.client, buf.subarray(0, n));
      } catch {
        break;
      }
      if (this.draining) break;
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
      ...(phase === "body" ? { missing_bytes: this.bodyLeft } : { header_bytes: this.headLength }),
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
    clearTimeout(this.timer);
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
    this.timer = setTimeout(() => this.close(), 1000);
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
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
      await new Guarded(conn, upstream, this.limits, this.log).run();
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
    try {
      this.listener.close();
    } catch {
      // already closed
    }
  }
}
