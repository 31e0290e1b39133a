// Texts shown to callers and kept in last_error never hold a secret: every form a secret can
// take in an error (raw, URL-encoded, JSON-escaped) is masked before anything cuts or
// reformats the text, so a cut can never leave part of one behind.

const SHOWN = "***";
/** What describe() answers when the thrown value cannot be turned into text. */
export const UNPRINTABLE = "the handler threw a value that cannot be shown";

/** The forms a secret takes in text: as it is, percent-encoded (either case of hex, as
 * encodeURIComponent, encodeURI and forms write it), JSON-escaped (with and without \u escapes
 * for non-ASCII). */
export function secretForms(secret: string): string[] {
  const json = JSON.stringify(secret).slice(1, -1);
  const forms = [
    secret,
    encodeURIComponent(secret),
    encodeURI(secret),
    new URLSearchParams({ s: secret }).toString().slice(2),
    json,
    json.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`),
  ];
  return [...new Set(forms)];
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export class Masker {
  private readonly pattern: RegExp | null;
  /** Texts are cut to this before masking (a handler's error can be any size); far enough
   * out that a secret cut in half there is still past any cut made after masking. */
  private readonly preCut: number;

  /** `secrets`: the values; `extraForms`: other spellings seen in configuration (the
   * password as written in SUPABASE_DB_URL). Shorter than 4 characters: not masked. */
  constructor(secrets: string[], extraForms: string[] = []) {
    const forms = [...secrets.flatMap(secretForms), ...extraForms].filter((f) => f.length >= 4);
    const unique = [...new Set(forms)].sort((a, b) => b.length - a.length);
    this.pattern = unique.length > 0 ? new RegExp(unique.map(escapeRegExp).join("|"), "gi") : null;
    const longest = unique.length > 0 ? unique[0].length : 0;
    this.preCut = Math.max(65536, 600 * longest);
  }

  mask(text: string): string {
    return this.pattern ? text.replace(this.pattern, SHOWN) : text;
  }

  /** One line of at most `max` characters, storable as text, with every secret masked
   * first. Never throws. */
  line(text: string, max: number): string {
    try {
      let out = this.mask(text.length > this.preCut ? text.slice(0, this.preCut) : text);
      out = this.mask(out.replace(/\s+/g, " ").replaceAll("\u0000", ""));
      return out.slice(0, max).toWellFormed();
    } catch {
      return UNPRINTABLE;
    }
  }
}

/** `Name: message` of anything thrown, or a fixed line when it cannot be printed (an object
 * without a prototype, a message getter that throws, a Proxy): never throws. */
export function describe(err: unknown): string {
  try {
    if (err instanceof Error) {
      const name = String(err.name);
      const message = String(err.message);
      return `${name}: ${message}`;
    }
    const text = String(err);
    return typeof text === "string" ? text : UNPRINTABLE;
  } catch {
    return UNPRINTABLE;
  }
}
