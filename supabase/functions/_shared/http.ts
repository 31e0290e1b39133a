// Answers and request reading shared by the kit's functions. Every error is JSON
// {"error": "one line"} and never echoes a header value (the token least of all).

export const MAX_BODY_BYTES = 64 * 1024;

export function json(status: number, body: unknown, headers: HeadersInit = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

export function error(status: number, message: string, headers: HeadersInit = {}): Response {
  return json(status, { error: message }, headers);
}

export class BadRequest extends Error {}

/** The request's JSON body, read up to MAX_BODY_BYTES; empty means `{}`. */
export async function readJsonObject(req: Request): Promise<Record<string, unknown>> {
  const reader = req.body?.getReader();
  if (!reader) return {};
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_BODY_BYTES) {
      await reader.cancel();
      throw new BadRequest(`body too large: at most ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(value);
  }
  if (size === 0) return {};
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new BadRequest("body is not valid JSON");
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new BadRequest("body must be a JSON object");
  }
  return parsed as Record<string, unknown>;
}

/** True when the request is for this function: `/<name>` on Supabase, or
 * `/functions/v1/<name>` when served by plain Deno (so SUPABASE_URL=http://host:PORT works). */
export function isFunctionPath(url: URL, name: string): boolean {
  const path = url.pathname.replace(/\/+$/, "");
  return path === `/${name}` || path === `/functions/v1/${name}`;
}

/** Serves `handler` under Supabase's runtime, or under plain Deno on PORT (default 8000) and
 * HOST (default 127.0.0.1), finishing calls in flight on SIGTERM/SIGINT before exiting. */
export function serve(handler: (req: Request) => Promise<Response>): void {
  const port = Number(Deno.env.get("PORT") ?? 8000);
  const hostname = Deno.env.get("HOST") ?? "127.0.0.1";
  const server = Deno.serve({
    port,
    hostname,
    onListen: ({ hostname, port }) => console.log(JSON.stringify({ event: "listening", hostname, port })),
  }, handler);
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    try {
      Deno.addSignalListener(signal, () => {
        server.shutdown().then(() => Deno.exit(0));
      });
    } catch {
      // Supabase's edge runtime manages the process's life; no signal listeners there.
    }
  }
}
