// Prompt-injection scoring: the rules of injection-rules.ts over the normalized text, plus payloads
// hidden in encodings (base64, hex, escapes, percent-encoding, binary, ROT13, reversed text) that
// are decoded and scored like a prompt of their own. Pure: no I/O, no state between calls.
import {
  DECODED_INJECTION_WEIGHT,
  INJECTION_THRESHOLD,
  MENTION_FACTOR,
  MENTION_LEAD,
  META_FRAMING,
  OBFUSCATION_WEIGHTS,
  RULES,
  type Rule,
  type RuleName,
  type Signal,
  TOPIC_CONTEXT,
} from "./injection-rules.ts";
import { type NormalizedText, normalizeText } from "./normalize.ts";

export interface Finding {
  rule: RuleName;
  /** What the rule added to the score (at most its weight). */
  score: number;
}

export interface InjectionVerdict {
  score: number;
  flagged: boolean;
  /** The rule that added most, when any matched. */
  rule: RuleName | null;
  /** Every rule that added to the score, largest first. */
  findings: Finding[];
}

const NO_FINDINGS: InjectionVerdict = { score: 0, flagged: false, rule: null, findings: [] };

/** Encoded runs decoded per prompt, and characters each may decode to: bounds the work. */
const MAX_DECODED_CANDIDATES = 8;
const MAX_DECODED_CHARS = 4096;
/** A decoded payload may itself hold one more encoded layer (base64 of hex, ...), no deeper. */
const MAX_DEPTH = 2;

/** Scores one text: a /generate prompt or one chat message. */
export function detectInjection(text: string, threshold = INJECTION_THRESHOLD): InjectionVerdict {
  return score(text, threshold, 0);
}

/** The highest-scoring of several texts (a chat's user messages), scored one by one. */
export function detectInjectionIn(
  texts: Iterable<string>,
  threshold = INJECTION_THRESHOLD,
): InjectionVerdict {
  let worst = NO_FINDINGS;
  for (const text of texts) {
    const verdict = score(text, threshold, 0);
    if (verdict.score > worst.score) worst = verdict;
  }
  return worst;
}

function score(text: string, threshold: number, depth: number): InjectionVerdict {
  if (text.length === 0) return NO_FINDINGS;
  const normalized = normalizeText(text);
  const mentions = new MentionContext(normalized.folded);
  const byRule = new Map<RuleName, number>();
  for (const rule of RULES) {
    if (!triggered(rule, normalized)) continue;
    let total = 0;
    for (const signal of rule.signals) total += signalScore(signal, normalized, mentions);
    if (total > 0) byRule.set(rule.name, Math.min(rule.weight, total));
  }
  const obfuscation =
    (normalized.smuggledTags ? OBFUSCATION_WEIGHTS.smuggledTags : 0) +
    (normalized.mixedScript ? OBFUSCATION_WEIGHTS.mixedScript : 0) +
    (mentions.leetMatched ? OBFUSCATION_WEIGHTS.leet : 0);
  if (obfuscation > 0) addCapped(byRule, "unicode_obfuscation", obfuscation);
  if (depth < MAX_DEPTH) {
    for (const decoded of decodedPayloads(normalized)) {
      if (score(decoded, threshold, depth + 1).score >= threshold) {
        addCapped(byRule, "encoded_payload", DECODED_INJECTION_WEIGHT);
        break;
      }
    }
  }
  if (byRule.size === 0) return NO_FINDINGS;
  const findings = [...byRule]
    .map(([rule, s]) => ({ rule, score: round(s) }))
    .sort((a, b) => b.score - a.score);
  const total = round(findings.reduce((sum, f) => sum + f.score, 0));
  return { score: total, flagged: total >= threshold, rule: findings[0]?.rule ?? null, findings };
}

/** The rule's words appear (in the folded text or its leetspeak reading): its signals may match. */
export function triggered(rule: Rule, text: NormalizedText): boolean {
  if (rule.signals.length === 0) return false;
  if (rule.trigger === null) return true;
  return rule.trigger.test(text.folded) || (text.leet !== null && rule.trigger.test(text.leet));
}

function addCapped(byRule: Map<RuleName, number>, name: RuleName, add: number): void {
  const cap = RULES.find((r) => r.name === name)?.weight ?? add;
  byRule.set(name, Math.min(cap, (byRule.get(name) ?? 0) + add));
}

const round = (n: number) => Math.round(n * 1000) / 1000;

function signalScore(signal: Signal, text: NormalizedText, mentions: MentionContext): number {
  if (signal.raw) {
    if (!signal.pattern.test(text.raw)) return 0;
    return signal.topic && mentions.topicFramed() ? signal.weight * MENTION_FACTOR : signal.weight;
  }
  const min = signal.minMatches ?? 1;
  if (matches(signal.pattern, text.folded, min)) {
    if (signal.topic && mentions.topicFramed()) return signal.weight * MENTION_FACTOR;
    return signal.weight * mentions.factor(signal.pattern);
  }
  if (text.leet !== null && matches(signal.pattern, text.leet, min)) {
    mentions.leetMatched = true;
    return signal.weight;
  }
  return 0;
}

function matches(pattern: RegExp, text: string, min: number): boolean {
  if (min <= 1) return pattern.test(text);
  let n = 0;
  for (const _ of text.matchAll(globalOf(pattern))) if (++n >= min) return true;
  return false;
}

/** The /g twin of each rule pattern, compiled once. */
const globals = new WeakMap<RegExp, RegExp>();
function globalOf(pattern: RegExp): RegExp {
  let global = globals.get(pattern);
  if (global === undefined) {
    global = new RegExp(pattern.source, `${pattern.flags}g`);
    globals.set(pattern, global);
  }
  return global;
}

/**
 * Whether a signal's matches are only mentions (MENTION_FACTOR) or said (1). Quotations and the
 * prompt's framing are worked out once per prompt, and only when a signal matched.
 */
class MentionContext {
  leetMatched = false;
  #quoted: [number, number][] | null = null;
  #framed: boolean | null = null;
  #topicFramed: boolean | null = null;
  #outside: string | null = null;

  constructor(private readonly text: string) {}

  factor(pattern: RegExp): number {
    if (!this.#isFramed()) return 1;
    const quoted = this.#quotedSpans();
    let any = false;
    for (const match of this.text.matchAll(globalOf(pattern))) {
      any = true;
      const start = match.index;
      const end = start + match[0].length;
      const inQuote = quoted.some(([s, e]) => s <= start && end <= e);
      const led = MENTION_LEAD.test(this.text.slice(Math.max(0, start - 24), start));
      if (!inQuote && !led) return 1;
    }
    return any ? MENTION_FACTOR : 1;
  }

  /** The prompt's framing (outside quotes) asks about a topic signal's topic. */
  topicFramed(): boolean {
    this.#topicFramed ??= TOPIC_CONTEXT.test(this.#outsideQuotes());
    return this.#topicFramed;
  }

  #isFramed(): boolean {
    this.#framed ??= META_FRAMING.test(this.#outsideQuotes());
    return this.#framed;
  }

  #outsideQuotes(): string {
    if (this.#outside === null) {
      let outside = "";
      let at = 0;
      for (const [s, e] of this.#quotedSpans()) {
        outside += `${this.text.slice(at, s)} `;
        at = e;
      }
      this.#outside = outside + this.text.slice(at);
    }
    return this.#outside;
  }

  #quotedSpans(): [number, number][] {
    this.#quoted ??= quotedSpans(this.text);
    return this.#quoted;
  }
}

const CLOSING: Record<string, string> = {
  '"': '"',
  "`": "`",
  "“": "”",
  "”": "”",
  "‘": "’",
  "«": "»",
  "'": "'",
};
/** A quotation longer than this is a document (where indirect injections hide), not a mention. */
const MAX_MENTION_CHARS = 120;
const WORD_CHAR = /[\p{L}\p{N}]/u;

/**
 * Short quotations: "…", `…`, “…”, ‘…’, «…», and '…' that is not an apostrophe. Each opening
 * quote looks at most MAX_MENTION_CHARS ahead for its close, so the scan stays linear.
 */
export function quotedSpans(text: string): [number, number][] {
  const spans: [number, number][] = [];
  for (let i = 0; i < text.length; i++) {
    const open = text[i] as string;
    const close = CLOSING[open];
    if (close === undefined) continue;
    // An apostrophe inside a word ("don't") opens nothing.
    if (open === "'" && i > 0 && WORD_CHAR.test(text[i - 1] as string)) continue;
    const limit = Math.min(text.length, i + MAX_MENTION_CHARS + 2);
    let j = -1;
    for (let k = i + 1; k < limit; k++) {
      if (text[k] !== close) continue;
      // ... nor closes one.
      if (close === "'" && k + 1 < text.length && WORD_CHAR.test(text[k + 1] as string)) continue;
      j = k;
      break;
    }
    if (j < 0) continue;
    spans.push([i, j + 1]);
    i = j;
  }
  return spans;
}

// ---- encoded payloads ----

const BASE64_RUN = /[A-Za-z0-9+/_-]{16,}={0,2}/g;
const HEX_RUN = /\b(?:[0-9a-fA-F]{2}){10,}\b|(?:[0-9a-fA-F]{2}[ :,-]){9,}[0-9a-fA-F]{2}/g;
const ESCAPED_HEX = /(?:\\x[0-9a-fA-F]{2}|0x[0-9a-fA-F]{2}[ ,]*){6,}/g;
const ESCAPED_UNICODE = /(?:\\u[0-9a-fA-F]{4}){4,}/g;
const PERCENT = /(?:%[0-9a-fA-F]{2}){6,}/g;
const HTML_ENTITIES = /(?:&#(?:x[0-9a-fA-F]{1,6}|[0-9]{1,7});){4,}/g;
const BINARY = /(?:[01]{8} ?){6,}/g;
const ENCODED_LAYER = /^[A-Za-z0-9+/=_\-\s]{16,}$/;
const ASKS_ROT13 = /\brot-?13\b|\bcaesar\b/;
const ASKS_REVERSAL = /\b(?:reverse[ds]?|backwards?|right to left)\b/;

/** Decoded texts of the encoded runs in a prompt, the plausible ones only, bounded in count and size. */
export function decodedPayloads(text: NormalizedText): string[] {
  const out: string[] = [];
  const add = (decoded: string | null) => {
    if (decoded === null || out.length >= MAX_DECODED_CANDIDATES) return;
    // Text, or another layer of encoding (base64 of hex) for the next round to decode.
    if (isReadable(decoded) || ENCODED_LAYER.test(decoded)) out.push(decoded);
  };
  const raw = text.raw;
  // One pass says which encodings could be there at all: most prompts have none, and skip them all.
  const runs = longestRuns(raw);
  if (runs.base64 >= 16) {
    for (const [run] of raw.matchAll(BASE64_RUN)) {
      if (out.length >= MAX_DECODED_CANDIDATES) break;
      if (looksLikeBase64(run)) add(decodeBase64(run));
    }
  }
  if (runs.base64 >= 20 || runs.hexWithSeparators >= 29) {
    for (const [run] of raw.matchAll(HEX_RUN)) add(decodeHex(run.replace(/[ :,-]/g, "")));
  }
  if (raw.includes("\\x") || raw.includes("0x")) {
    for (const [run] of raw.matchAll(ESCAPED_HEX)) add(decodeHex(run.replace(/\\x|0x|[ ,]/g, "")));
  }
  if (raw.includes("\\u")) {
    for (const [run] of raw.matchAll(ESCAPED_UNICODE)) {
      add(run.replace(/\\u([0-9a-fA-F]{4})/g, (_, h: string) => String.fromCharCode(Number.parseInt(h, 16))));
    }
  }
  if (raw.includes("%")) {
    for (const [run] of raw.matchAll(PERCENT)) {
      try {
        add(decodeURIComponent(run));
      } catch {
        // Not UTF-8: not text.
      }
    }
  }
  if (raw.includes("&#")) for (const [run] of raw.matchAll(HTML_ENTITIES)) add(decodeEntities(run));
  if (runs.binary >= 48) for (const [run] of raw.matchAll(BINARY)) add(decodeBinary(run));
  if (ASKS_ROT13.test(text.folded)) add(rot13(raw.slice(0, MAX_DECODED_CHARS)));
  if (ASKS_REVERSAL.test(text.folded)) add([...raw.slice(0, MAX_DECODED_CHARS)].reverse().join(""));
  return out;
}

/** Per ASCII code: 1 a base64 character, 2 a hex digit or separator, 4 a binary digit or space. */
const RUN_CLASS = (() => {
  const table = new Uint8Array(128);
  const mark = (chars: string, bit: number) => {
    for (const c of chars) table[c.charCodeAt(0)] = (table[c.charCodeAt(0)] as number) | bit;
  };
  mark("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_", 1);
  mark("0123456789abcdefABCDEF :,-", 2);
  mark("01 ", 4);
  return table;
})();

/** The longest runs of base64 characters, of hex digits with separators, and of binary digits. */
function longestRuns(text: string): { base64: number; hexWithSeparators: number; binary: number } {
  let base64 = 0;
  let hex = 0;
  let binary = 0;
  let b = 0;
  let h = 0;
  let d = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const k = c < 128 ? (RUN_CLASS[c] as number) : 0;
    if (k & 1) {
      if (++b > base64) base64 = b;
    } else b = 0;
    if (k & 2) {
      if (++h > hex) hex = h;
    } else h = 0;
    if (k & 4) {
      if (++d > binary) binary = d;
    } else d = 0;
  }
  return { base64, hexWithSeparators: hex, binary };
}

/** A run of letters only is a word, a run of digits a number: base64 of text mixes cases and digits. */
function looksLikeBase64(run: string): boolean {
  const body = run.replace(/=+$/, "");
  if (body.length % 4 === 1) return false;
  const upper = /[A-Z]/.test(body);
  const lower = /[a-z]/.test(body);
  const digitOrSymbol = /[0-9+/_-]/.test(body);
  return upper && lower && digitOrSymbol;
}

function decodeBase64(run: string): string | null {
  let body = run.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  body = body.slice(0, Math.floor((MAX_DECODED_CHARS * 4) / 3));
  while (body.length % 4 !== 0) body += "=";
  try {
    const binary = atob(body);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return utf8.decode(bytes);
  } catch {
    return null;
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: false, ignoreBOM: false });

function decodeHex(hex: string): string | null {
  if (hex.length % 2 !== 0) return null;
  const n = Math.min(hex.length / 2, MAX_DECODED_CHARS);
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i++) bytes[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return utf8.decode(bytes);
}

function decodeEntities(run: string): string {
  return run.replace(/&#(x[0-9a-fA-F]{1,6}|[0-9]{1,7});/g, (_, code: string) => {
    const n = code.startsWith("x") ? Number.parseInt(code.slice(1), 16) : Number(code);
    return n <= 0x10ffff ? String.fromCodePoint(n) : "";
  });
}

function decodeBinary(run: string): string {
  const bits = run.replace(/ /g, "");
  let out = "";
  for (let i = 0; i + 8 <= bits.length && out.length < MAX_DECODED_CHARS; i += 8) {
    out += String.fromCharCode(Number.parseInt(bits.slice(i, i + 8), 2));
  }
  return out;
}

function rot13(text: string): string {
  return text.replace(/[A-Za-z]/g, (c) => {
    const base = c <= "Z" ? 65 : 97;
    return String.fromCharCode(((c.charCodeAt(0) - base + 13) % 26) + base);
  });
}

/** Decoded bytes that read as text: mostly letters and spaces, no control characters. */
function isReadable(text: string): boolean {
  if (text.length < 8) return false;
  let readable = 0;
  let letters = 0;
  let spaces = 0;
  for (const ch of text) {
    const c = ch.codePointAt(0) as number;
    if (c === 0xfffd || (c < 0x20 && c !== 10 && c !== 9 && c !== 13) || (c >= 0x7f && c < 0xa0)) continue;
    readable++;
    if (c === 32) spaces++;
    else if (/\p{L}/u.test(ch)) letters++;
  }
  const length = [...text].length;
  return readable / length >= 0.9 && letters / length >= 0.5 && spaces >= 1;
}
