// jobs: the operator's API (docs/OPERATOR_API.md): list, show, history, add, cancel, retry,
// bulk retry, hung jobs, stats and purge of ONE organization, over the migration's functions.
// What `queue-pump jobs ...` and `queue-pump top` call.
//
// Secrets/environment: ADMIN_TOKEN (16+ characters, sent as X-Admin-Token; given to people,
// never to pumps: AGENT_TOKEN is refused here, and the function will not start if the two are
// equal; unset, the API is off and every call is answered 503 saying so), SUPABASE_DB_URL (set by Supabase), ALLOWED_ORGANIZATION_IDS (optional,
// comma-separated), DB_POOL_MAX, DB_RECONNECT_MS, DB_RETRY_AFTER_SECONDS; under plain Deno PORT,
// HOST and the HTTP_* limits of the guarded front (docs/SUPABASE.md).
import { authenticate } from "../_shared/auth.ts";
import { availabilityFromEnv, connect, Database } from "../_shared/db.ts";
import { distinctTokens, listFromEnv, tokenFromEnv } from "../_shared/env.ts";
import { prepare, stopOnSignals } from "../_shared/serve.ts";
import { error } from "../_shared/http.ts";
import { log } from "../_shared/log.ts";
import { dispatch, MAX_JOB_BODY_BYTES, subPath } from "./api.ts";

const OFF = "the operator API is off: set the ADMIN_TOKEN secret (16+ characters, not AGENT_TOKEN's) on this function";

const { handler, options } = prepare("jobs", MAX_JOB_BODY_BYTES, () => {
  // Without ADMIN_TOKEN the operator's API is off (as the reference runner's): a project that
  // deploys every function but does not use it still starts them all, and nothing is open.
  if (!Deno.env.get("ADMIN_TOKEN")) {
    let said = false;
    return () => {
      if (!said) log({ event: "operator_api_off", reason: "ADMIN_TOKEN is not set" }); // once
      said = true;
      return error(503, OFF);
    };
  }
  const token = tokenFromEnv("ADMIN_TOKEN");
  distinctTokens(token, "AGENT_TOKEN");
  const allowed = listFromEnv("ALLOWED_ORGANIZATION_IDS");
  const db = new Database(connect(), availabilityFromEnv());

  return async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    const path = subPath(url);
    if (path === null) return error(404, "no such function");
    // Who is asking comes first: nothing about the paths is told to a caller without the token.
    const caller = authenticate(req, token, allowed, "X-Admin-Token");
    if (caller instanceof Response) return caller;
    return await dispatch(db, caller, req, url, path);
  };
});

// Plain Deno: a private unix socket behind the guarded front; Supabase: the runtime's socket.
stopOnSignals("path" in options ? Deno.serve(options, handler) : Deno.serve(options, handler));
