// Start a function: its settings are read once by `init`; a bad or missing one prints one line
// naming the variable (never a secret's value) and exits 2 under plain Deno. Where the process
// cannot exit (Supabase's runtime), every call is answered 500 with that line, which the pump
// shows in its logs.
import { error, serve } from "./http.ts";

export type Handler = (req: Request) => Promise<Response>;

export function start(name: string, init: () => Handler): void {
  let handler: Handler;
  try {
    handler = init();
  } catch (err) {
    const line = `${name}: ${err instanceof Error ? err.message : String(err)}`;
    console.error(line);
    try {
      Deno.exit(2);
    } catch {
      // no exit here: answer with the problem instead
    }
    handler = () => Promise.resolve(error(500, `function misconfigured: ${line}`));
  }
  serve(handler);
}
