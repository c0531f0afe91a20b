// Generated text on its way to the caller, one sanitizer per answer: control characters and
// terminal escapes stripped (control-chars.ts), credentials redacted when OUTPUT_REDACTION is on
// (secrets.ts), and the route's output content filters applied (content-filters.ts). It works on
// the text before any renderer JSON-encodes it, so a structured (JSON) answer stays valid JSON.
//
// Streams: what could still turn out to be part of a secret or a filter's match is held back until
// the next chunk decides it (or the answer ends): the trailing word when it could begin a
// credential ("sk", "eyJhbGci"), a PEM block until its END line, and, when the route has output
// filters, the last FILTER_HOLD_CHARS characters. Everything else is passed on at once.

import type { ContentFilter } from "./content-filters.ts";
import { FILTER_REDACTION, filterMatches } from "./content-filters.ts";
import { ControlStripper } from "./control-chars.ts";
import { ANY_LEAD, LEAD_PREFIXES, LONGEST_LEAD, redactionFor, SECRET_KINDS } from "./secrets.ts";

export interface OutputPolicy {
  /** Redact credentials (OUTPUT_REDACTION). */
  redactSecrets: boolean;
  /** The route's content filters that apply to output. */
  filters: readonly ContentFilter[];
}

export const STRIP_ONLY: OutputPolicy = { redactSecrets: false, filters: [] };

/** A match of an output filter up to this long is caught however the chunks split it. */
export const FILTER_HOLD_CHARS = 128;
/** What an output filter's pattern may read before its match (look-behind, "\b"). */
const FILTER_CONTEXT_CHARS = 256;
/** A PEM block is held until its END line, for at most this many characters. */
const MAX_PEM_HOLD_CHARS = 16_384;
/** A word is held as a possible credential for at most this many characters (tokens are shorter). */
const MAX_WORD_HOLD_CHARS = 1024;

const PEM_BEGIN = "-----BEGIN ";
/** Characters credentials are made of: the trailing run of these is "the trailing word". */
const TOKEN_CHAR = /[A-Za-z0-9_\-.+/=:]/;
const WORD_CHAR = /[A-Za-z0-9_]/;

interface Edit {
  /** Where the pattern's match starts (a kept prefix included). */
  match: number;
  /** What is replaced: [start, end). */
  start: number;
  end: number;
  /** null: a blocking filter. */
  replacement: string | null;
  filter?: ContentFilter;
}

export interface SanitizedPart {
  text: string;
  /** The output filter that blocks the answer; `text` is what came before its match. */
  blocked: ContentFilter | null;
}

export class OutputSanitizer {
  readonly #stripper = new ControlStripper();
  readonly #scans: boolean;
  #buffer = "";
  /** The end of what went out: the patterns' left context. */
  #context = "";
  readonly #contextChars: number;
  #blocked: ContentFilter | null = null;

  constructor(private readonly policy: OutputPolicy) {
    this.#scans = policy.redactSecrets || policy.filters.length > 0;
    // Credentials need one character ("\b"); an operator's pattern may look further back.
    this.#contextChars = policy.filters.length > 0 ? FILTER_CONTEXT_CHARS : 8;
  }

  get blocked(): ContentFilter | null {
    return this.#blocked;
  }

  /** The part of `chunk` (with what was held before) that can go to the caller now. */
  push(chunk: string): SanitizedPart {
    if (this.#blocked !== null) return { text: "", blocked: this.#blocked };
    const text = this.#stripper.push(chunk);
    if (!this.#scans) return { text, blocked: null };
    this.#buffer += text;
    return this.#drain(false);
  }

  /** The answer ended: everything held is decided and passed on. */
  end(): SanitizedPart {
    this.#stripper.end();
    if (this.#blocked !== null) return { text: "", blocked: this.#blocked };
    if (!this.#scans) return { text: "", blocked: null };
    return this.#drain(true);
  }

  #drain(final: boolean): SanitizedPart {
    const buffer = this.#buffer;
    let cut = final ? buffer.length : this.#holdFrom(buffer);
    // The common chunk: no filters, and nothing a credential starts with. Passed on as it is.
    if (this.policy.filters.length === 0 && !ANY_LEAD.test(buffer)) {
      if (cut === buffer.length) {
        this.#buffer = "";
        this.#context =
          buffer.length >= this.#contextChars
            ? buffer.slice(-this.#contextChars)
            : (this.#context + buffer).slice(-this.#contextChars);
        return { text: buffer, blocked: null };
      }
    }
    // Patterns read the text just before the buffer too ("\b" after a held word, a filter's
    // look-behind): what went out last is scanned with it, and matches starting there are past.
    const context = this.#context;
    const scanned = context + buffer;
    const edits: Edit[] = [];
    const add = (
      match: number,
      start: number,
      end: number,
      replacement: string | null,
      filter?: ContentFilter,
    ) => {
      if (match < context.length) return;
      const at = context.length;
      edits.push({ match: match - at, start: start - at, end: end - at, replacement, filter });
    };
    if (this.policy.redactSecrets && ANY_LEAD.test(buffer)) {
      for (const { kind, pattern, keepsPrefix } of SECRET_KINDS) {
        pattern.lastIndex = 0;
        for (const m of scanned.matchAll(pattern)) {
          const kept = keepsPrefix ? (m[1]?.length ?? 0) : 0;
          add(m.index, m.index + kept, m.index + m[0].length, redactionFor(kind));
        }
      }
    }
    for (const filter of this.policy.filters) {
      for (const m of filterMatches(scanned, filter)) {
        add(m.start, m.start, m.end, filter.action === "redact" ? FILTER_REDACTION : null, filter);
      }
    }
    edits.sort((a, b) => a.start - b.start || b.end - a.end);
    let out = "";
    let at = 0;
    for (const edit of edits) {
      if (edit.start < at) continue; // overlaps an earlier edit
      // A match reaching the end of what arrived may grow with the next chunk: decide it then,
      // holding the whole match (a kept prefix is the pattern's context).
      if (!final && edit.end >= buffer.length) {
        cut = Math.min(cut, Math.max(at, edit.match));
        break;
      }
      // A complete block is decided wherever it is; a redaction past the hold point waits its turn.
      if (edit.start >= cut && edit.replacement !== null) break;
      if (edit.replacement === null) {
        this.#blocked = edit.filter ?? null;
        this.#buffer = "";
        return { text: out + buffer.slice(at, edit.start), blocked: this.#blocked };
      }
      out += buffer.slice(at, edit.start) + edit.replacement;
      at = edit.end;
      // A replaced match is decided: it may end after the hold point.
      cut = Math.max(cut, at);
    }
    cut = Math.max(cut, at);
    out += buffer.slice(at, cut);
    this.#buffer = buffer.slice(cut);
    this.#context = (context + out).slice(-this.#contextChars);
    return { text: out, blocked: null };
  }

  /** Where the undecided tail of the buffer starts. */
  #holdFrom(buffer: string): number {
    let cut = buffer.length;
    if (this.policy.filters.length > 0) cut = Math.max(0, buffer.length - FILTER_HOLD_CHARS);
    if (this.policy.redactSecrets) {
      const pem = buffer.lastIndexOf(PEM_BEGIN);
      if (pem >= 0 && !hasEndLine(buffer, pem) && buffer.length - pem <= MAX_PEM_HOLD_CHARS) {
        cut = Math.min(cut, pem);
      }
      cut = Math.min(cut, this.#wordHold(buffer));
      // A PEM header or lead cut in the middle ("-----BEG") is a word too, held above.
    }
    // Never split a surrogate pair.
    if (cut > 0 && cut < buffer.length && isHighSurrogate(buffer.charCodeAt(cut - 1))) cut -= 1;
    return cut;
  }

  /** The start of the trailing word when it could be (the start of) a credential, else the end. */
  #wordHold(buffer: string): number {
    let start = buffer.length;
    while (
      start > 0 &&
      buffer.length - start < MAX_WORD_HOLD_CHARS &&
      TOKEN_CHAR.test(buffer[start - 1] as string)
    ) {
      start -= 1;
    }
    if (start === buffer.length) return start;
    const word = buffer.slice(start);
    if (ANY_LEAD.test(word)) return start;
    for (let n = Math.min(LONGEST_LEAD - 1, word.length); n >= 1; n--) {
      const from = word.length - n;
      // Credentials start a word ("\bsk-"): "safe" ends in "e" of "eyJ", but mid-word.
      if (LEAD_PREFIXES.has(word.slice(from)) && (from === 0 || !WORD_CHAR.test(word[from - 1] as string))) {
        return start;
      }
    }
    return buffer.length;
  }
}

/** The block begun at `from` has its whole END line ("-----END ... -----"). */
function hasEndLine(buffer: string, from: number): boolean {
  const end = buffer.indexOf("-----END ", from);
  return end >= 0 && buffer.indexOf("-----", end + 9) >= 0;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

/** A whole answer at once (not streamed): the same steps as a stream of one chunk. */
export function sanitizeOutput(text: string, policy: OutputPolicy): SanitizedPart {
  const sanitizer = new OutputSanitizer(policy);
  const first = sanitizer.push(text);
  if (first.blocked !== null) return first;
  const rest = sanitizer.end();
  return { text: first.text + rest.text, blocked: rest.blocked };
}
