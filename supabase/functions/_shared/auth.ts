// Who may call: the agent token, compared in constant time, and the organization that scopes
// every query, optionally limited to ALLOWED_ORGANIZATION_IDS.
import { error } from "./http.ts";

const encoder = new TextEncoder();

async function digest(value: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(value)));
}

/** Constant time in the secret's content and length: both sides are hashed first, so the
 * comparison always walks 32 bytes. */
export async function sameSecret(given: string, expected: string): Promise<boolean> {
  const [a, b] = await Promise.all([digest(given), digest(expected)]);
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

export interface Caller {
  organizationId: string;
  workerId: string;
}

const ORG_PATTERN = /^[\x21-\x7e]{1,200}$/;

/** The caller, or the 401/403 answer to give. */
export async function authenticate(
  req: Request,
  token: string,
  allowedOrganizations: string[],
): Promise<Caller | Response> {
  const given = req.headers.get("x-agent-token") ?? "";
  if (!(await sameSecret(given, token))) {
    return error(401, "missing or wrong X-Agent-Token");
  }
  const organizationId = (req.headers.get("x-organization-id") ?? "").trim();
  if (!ORG_PATTERN.test(organizationId)) {
    return error(401, "missing or malformed X-Organization-Id (1-200 printable characters)");
  }
  if (allowedOrganizations.length > 0 && !allowedOrganizations.includes(organizationId)) {
    return error(403, "this X-Organization-Id is not in ALLOWED_ORGANIZATION_IDS");
  }
  const workerId = (req.headers.get("x-worker-id") ?? "unknown").slice(0, 100);
  return { organizationId, workerId };
}
