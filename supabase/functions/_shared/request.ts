// The front every kit function shares: its path, POST only, the caller's token and
// organization, and a JSON object body. Either the parts of an accepted call, or the answer.
import { authenticate, type Caller } from "./auth.ts";
import { BadRequest, ClientGone, error, isFunctionPath, readJsonObject } from "./http.ts";

export interface Accepted {
  url: URL;
  caller: Caller;
  body: Record<string, unknown>;
}

export async function accept(
  req: Request,
  name: string,
  token: string,
  allowedOrganizations: string[],
  maxBodyBytes: number,
): Promise<Accepted | Response> {
  const url = new URL(req.url);
  if (!isFunctionPath(url, name)) return error(404, "no such function");
  if (req.method !== "POST") return error(405, "use POST", { allow: "POST" });
  const caller = authenticate(req, token, allowedOrganizations);
  if (caller instanceof Response) return caller;
  try {
    return { url, caller, body: await readJsonObject(req, maxBodyBytes) };
  } catch (err) {
    if (err instanceof BadRequest) return error(400, err.message);
    // Nobody reads this answer; the guarded front logged the disconnect (front.ts).
    if (err instanceof ClientGone) return error(400, err.message);
    throw err;
  }
}
