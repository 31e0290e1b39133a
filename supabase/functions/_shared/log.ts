// The functions' log lines: one JSON object a line, `event` first (what tools match on), then
// `ts`, the time it was written (ISO 8601, UTC, milliseconds), then the event's own keys.

export type Event = { event: string } & Record<string, unknown>;

export function line(fields: Event): string {
  const { event, ...rest } = fields;
  return JSON.stringify({ event, ts: new Date().toISOString(), ...rest });
}

export function log(fields: Event): void {
  console.log(line(fields));
}

export function logError(fields: Event): void {
  console.error(line(fields));
}
