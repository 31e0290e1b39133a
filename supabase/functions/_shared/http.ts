// Answers and request reading shared by the kit's functions. Every error is JSON
// {"error": "one line"} and never echoes a header value (the token least of all).
import { parseExact } from "./json.ts";

export function error(status: number, message: string, headers: HeadersInit = {}): Response {
  return Response.json({ error: message }, { status, headers });
}

export class BadRequest extends Error {}
/** The client went away before its body arrived: nobody is left to answer. */
export class ClientGone extends Error {}

// Bytes that are not UTF-8 are refused, not read as U+FFFD: two different keys would become one.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

async function readBytes(req: Request, maxBytes: number): Promise<Uint8Array> {
  const reader = req.body?.getReader();
  if (!reader) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    let read: ReadableStreamReadResult<Uint8Array>;
    try {
      read = await reader.read();
    } catch {
      throw new ClientGone("the body ended early");
    }
    if (read.done) break;
    size += read.value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => {});
      throw new BadRequest(`body too large: at most ${maxBytes} bytes`);
    }
    chunks.push(read.value);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return bytes;
}

/** The request's JSON body, read up to maxBytes; empty means `{}`. Numbers a double would
 * change come back as InexactNumber, for the caller's checks to name. With `arrays`, a JSON
 * array is accepted too (the enqueue function's batch). */
export async function readJsonObject(req: Request, maxBytes: number): Promise<Record<string, unknown>>;
export async function readJsonObject(
  req: Request,
  maxBytes: number,
  arrays: true,
): Promise<Record<string, unknown> | unknown[]>;
export async function readJsonObject(
  req: Request,
  maxBytes: number,
  arrays = false,
): Promise<Record<string, unknown> | unknown[]> {
  const bytes = await readBytes(req, maxBytes);
  if (bytes.byteLength === 0) return {};
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new BadRequest("body is not UTF-8");
  }
  let parsed: unknown;
  try {
    parsed = parseExact(text).value;
  } catch {
    throw new BadRequest("body is not valid JSON");
  }
  if (arrays && Array.isArray(parsed)) return parsed;
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new BadRequest(arrays ? "body must be a JSON object or an array of them" : "body must be a JSON object");
  }
  return parsed as Record<string, unknown>;
}

/** True when the request is for this function: `/<name>` on Supabase, or
 * `/functions/v1/<name>` when served by plain Deno (so SUPABASE_URL=http://host:PORT works). */
export function isFunctionPath(url: URL, name: string): boolean {
  const path = url.pathname.replace(/\/+$/, "");
  return path === `/${name}` || path === `/functions/v1/${name}`;
}
