// Who may call: the agent token, compared in constant time, and the organization that scopes
// every query, optionally limited to ALLOWED_ORGANIZATION_IDS.
import { createHash, timingSafeEqual } from "node:crypto";
import { error } from "./http.ts";

// node:crypto's hash is synchronous: Web Crypto's digest() took two asynchronous operations
// on every call, about as much as the rest of the check.
function digest(value: string): Uint8Array {
  return createHash("sha256").update(value).digest();
}

/** Constant time in the secret's content and length: both sides are hashed first, so the
 * comparison always walks 32 bytes. */
export function sameSecret(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

export interface Caller {
  organizationId: string;
  workerId: string;
}

const ORG_PATTERN = /^[\x21-\x7e]{1,200}$/;

/** The caller, or the 401/403 answer to give. `header`: where the token is sent, the pump's
 * X-Agent-Token (ai-job-runner, enqueue) or an operator's X-Admin-Token (jobs); a token sent
 * in the other header is not looked at. */
export function authenticate(
  req: Request,
  token: string,
  allowedOrganizations: string[],
  header: "X-Agent-Token" | "X-Admin-Token" = "X-Agent-Token",
): Caller | Response {
  const given = req.headers.get(header) ?? "";
  if (!sameSecret(given, token)) {
    return error(401, `missing or wrong ${header}`);
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
