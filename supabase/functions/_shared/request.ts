// The front every kit function shares: its path, POST only, the caller's token and
// organization, and a JSON object body. Either the parts of an accepted call, or the answer.
import { authenticate, type Caller } from "./auth.ts";
import { BadRequest, error, isFunctionPath, readJsonObject } from "./http.ts";

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
): Promise<Accepted | Response> {
  const url = new URL(req.url);
  if (!isFunctionPath(url, name)) return error(404, "no such function");
  if (req.method !== "POST") return error(405, "use POST", { allow: "POST" });
  const caller = await authenticate(req, token, allowedOrganizations);
  if (caller instanceof Response) return caller;
  try {
    return { url, caller, body: await readJsonObject(req) };
  } catch (err) {
    if (err instanceof BadRequest) return error(400, err.message);
    throw err;
  }
}
