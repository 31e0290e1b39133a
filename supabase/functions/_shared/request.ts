// The front every kit function shares: its path, POST only, the caller's token and
// organization, and a JSON object body. Either the parts of an accepted call, or the answer.
import { authenticate, type Caller } from "./auth.ts";
import { BadRequest, ClientGone, error, isFunctionPath, readJsonObject } from "./http.ts";

export interface Accepted {
  url: URL;
  caller: Caller;
  /** The JSON object sent; `{}` when a batch was sent instead. */
  body: Record<string, unknown>;
  /** The JSON array sent, when `arrays` allowed one. */
  batch?: unknown[];
}

export async function accept(
  req: Request,
  name: string,
  token: string,
  allowedOrganizations: string[],
  maxBodyBytes: number,
  arrays = false,
): Promise<Accepted | Response> {
  const url = new URL(req.url);
  if (!isFunctionPath(url, name)) return error(404, "no such function");
  if (req.method !== "POST") return error(405, "use POST", { allow: "POST" });
  const caller = authenticate(req, token, allowedOrganizations);
  if (caller instanceof Response) return caller;
  try {
    if (!arrays) return { url, caller, body: await readJsonObject(req, maxBodyBytes) };
    const read = await readJsonObject(req, maxBodyBytes, true);
    return Array.isArray(read) ? { url, caller, body: {}, batch: read } : { url, caller, body: read };
  } catch (err) {
    if (err instanceof BadRequest) return error(400, err.message);
    // Nobody reads this answer; the guarded front logged the disconnect (front.ts).
    if (err instanceof ClientGone) return error(400, err.message);
    throw err;
  }
}
