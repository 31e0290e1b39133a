// How a kit function starts and stops. Its settings are read once by `init`; a bad or missing
// one prints one line naming the variable (never a secret's value) and exits 2 under plain
// Deno. Where the process cannot exit (Supabase's runtime), every call is answered 500 with
// that line, which the pump shows in its logs.
//
// Under Supabase's edge runtime Deno.serve needs no options: the runtime owns the socket and
// its gateway bounds what a client may send. Under plain Deno the function listens on
// PORT/HOST through the guarded front (front.ts): read deadlines and a connection cap.
import { intFromEnv } from "./env.ts";
import { error } from "./http.ts";
import { Front, type FrontLimits } from "./front.ts";
import { log, logError } from "./log.ts";

export interface Prepared {
  handler: Deno.ServeHandler;
  options: Deno.ServeTcpOptions | Deno.ServeUnixOptions;
}

function onError(err: unknown): Response {
  // A bug, not a caller's mistake: one line, the error's kind only (its text could hold a
  // secret; the stack is noise to an operator).
  logError({ event: "internal_error", error: err instanceof Error ? err.name : typeof err });
  return error(500, "internal error");
}

function frontLimitsFromEnv(maxBodyBytes: number): FrontLimits {
  return {
    maxConnections: intFromEnv("HTTP_MAX_CONNECTIONS", 256, 1, 100_000),
    headerTimeoutMs: intFromEnv("HTTP_HEADER_TIMEOUT_MS", 10_000, 100, 600_000),
    bodyTimeoutMs: intFromEnv("HTTP_BODY_TIMEOUT_MS", 30_000, 100, 3_600_000),
    idleTimeoutMs: intFromEnv("HTTP_IDLE_TIMEOUT_MS", 60_000, 100, 3_600_000),
    maxHeaderBytes: 16 * 1024,
    maxBodyBytes,
  };
}

function misconfigured(name: string, err: unknown): Deno.ServeHandler {
  const line = `${name}: ${err instanceof Error ? err.message : String(err)}`;
  console.error(line);
  try {
    Deno.exit(2);
  } catch {
    // no exit here: answer with the problem instead
  }
  return () => error(500, `function misconfigured: ${line}`);
}

/** The handler `init` builds and the options to give Deno.serve; under plain Deno this starts
 * the guarded front on PORT (default 8000) and HOST (default 127.0.0.1). */
export function prepare(name: string, maxBodyBytes: number, init: () => Deno.ServeHandler): Prepared {
  let handler: Deno.ServeHandler;
  let limits: FrontLimits;
  try {
    handler = init();
    limits = frontLimitsFromEnv(maxBodyBytes);
  } catch (err) {
    return { handler: misconfigured(name, err), options: { onError } };
  }
  if ("EdgeRuntime" in globalThis) return { handler, options: { onError } };
  const port = Number(Deno.env.get("PORT") ?? 8000);
  const hostname = Deno.env.get("HOST") ?? "127.0.0.1";
  // The function's own server listens on a unix socket in a directory only this user reads,
  // so nothing reaches it but through the front.
  const dir = Deno.makeTempDirSync({ prefix: `${name}-` });
  const path = `${dir}/http.sock`;
  try {
    guard = { front: new Front(hostname, port, path, limits), dir };
  } catch (err) {
    Deno.removeSync(dir, { recursive: true });
    const why = err instanceof Error ? err.name : "error";
    return { handler: misconfigured(name, `cannot listen on ${hostname}:${port} (${why})`), options: { onError } };
  }
  const front = guard.front;
  front.serve();
  return {
    handler,
    options: {
      transport: "unix",
      path,
      onError,
      onListen: () => log({ event: "listening", hostname, port: front.addr.port }),
    },
  };
}

let guard: { front: Front; dir: string } | null = null;

/** SIGTERM or SIGINT: stop taking connections, finish the calls in flight and pass their
 * answers on, exit 0. */
export function stopOnSignals(server: Deno.HttpServer): void {
  const stop = async () => {
    guard?.front.close();
    await server.shutdown();
    await guard?.front.idle(5000);
    if (guard) Deno.removeSync(guard.dir, { recursive: true });
    Deno.exit(0);
  };
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    try {
      Deno.addSignalListener(signal, stop);
    } catch {
      // Supabase's edge runtime manages the process's life; no signal listeners there.
    }
  }
}
