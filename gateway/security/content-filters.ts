// CONTENT_FILTERS: an operator's deny-list of patterns per route, applied to prompts (before they
// are dispatched) and to generated text (output-sanitizer.ts), each pattern blocking the request or
// redacting what it matches. Patterns are the operator's, so they are fenced in: a bounded length,
// no nested quantifiers or back-references (the shapes that backtrack catastrophically), and
// matched over bounded windows of the text, so no pattern can cost more than a window's worth of
// work however long the text. A pattern that fails these checks or does not compile is logged
// and left out; the rest apply.
import { z } from "zod";
import { PromptRoute } from "./injection-policy.ts";

/** Longest pattern source accepted. */
export const MAX_PATTERN_CHARS = 256;
/** Filters per route. */
export const MAX_FILTERS_PER_ROUTE = 64;
/** Text is matched in windows of this many characters... */
export const FILTER_WINDOW_CHARS = 4096;
/** ...that overlap by this many: a match up to this long is found wherever it falls. */
export const FILTER_OVERLAP_CHARS = 256;
/** What a redacting filter puts in place of its match. */
export const FILTER_REDACTION = "[redacted]";

export const FilterAction = z.enum(["block", "redact"]);
export type FilterAction = z.infer<typeof FilterAction>;

export const ContentFilterSpec = z.strictObject({
  pattern: z.string().min(1),
  /** RegExp flags from "imsu"; "g" and "y" are the matcher's own. */
  flags: z.string().optional(),
  action: FilterAction,
  /** Shown in a block's error message and in logs; default "#<index>" in its route's list. */
  name: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,64}$/)
    .optional(),
  /** Where the filter applies: the prompt, the generated text, or both (default). */
  on: z.enum(["input", "output", "both"]).optional(),
});
export type ContentFilterSpec = z.infer<typeof ContentFilterSpec>;

/** {route: [filter, ...]}: a route of PromptRoute, or "*" for every route (others are refused one by one). */
export const ContentFiltersVar = z.record(z.string(), z.array(z.unknown()));

export interface ContentFilter {
  name: string;
  action: FilterAction;
  /** Compiled with "g" added (matchAll); reset by each use. */
  regex: RegExp;
  input: boolean;
  output: boolean;
}

export interface ContentFilters {
  byRoute: ReadonlyMap<PromptRoute, readonly ContentFilter[]>;
  /** Why each refused filter was refused (start-up log lines; the tests read them too). */
  refused: readonly { route: string; index: number; reason: string }[];
  /** The whole var was unusable (not JSON, wrong shape). */
  error: string | null;
}

export const NO_CONTENT_FILTERS: ContentFilters = { byRoute: new Map(), refused: [], error: null };

/**
 * A quantified group that itself contains a quantifier ("(a+)+", "(\w*)*", "(x{2,})+"), an
 * alternation under a quantifier ("(a|aa)*"), or a back-reference: the shapes whose matching time
 * can grow exponentially with the input. Approximate on purpose: it refuses some safe patterns
 * (the operator can rewrite them) and is backed by the windowed matching either way.
 */
const NESTED_QUANTIFIER = /\((?:[^()\\]|\\.)*(?:[+*}]|\|)(?:[^()\\]|\\.)*\)(?:[+*]|\{\d+,\d*\})/;
const BACKREFERENCE = /\\[1-9]|\\k</;

export function compileFilter(spec: ContentFilterSpec, name: string): ContentFilter | string {
  if (spec.pattern.length > MAX_PATTERN_CHARS) return `pattern longer than ${MAX_PATTERN_CHARS} characters`;
  const flags = spec.flags ?? "";
  if (!/^[imsu]*$/.test(flags) || new Set(flags).size !== flags.length)
    return `flags "${flags}" are not from "imsu"`;
  if (NESTED_QUANTIFIER.test(spec.pattern)) return "nested quantifier (catastrophic backtracking)";
  if (BACKREFERENCE.test(spec.pattern)) return "back-reference (catastrophic backtracking)";
  let regex: RegExp;
  try {
    regex = new RegExp(spec.pattern, `${flags}g`);
  } catch (err) {
    return `not a valid regular expression (${err instanceof Error ? err.message : String(err)})`;
  }
  if (regex.test("")) return "matches the empty string";
  regex.lastIndex = 0;
  const on = spec.on ?? "both";
  return { name, action: spec.action, regex, input: on !== "output", output: on !== "input" };
}

/** Parses and compiles the var; "*" filters apply to every route, after the route's own. */
export function parseContentFilters(raw: string | undefined): ContentFilters {
  const value = raw?.trim() ?? "";
  if (value === "") return NO_CONTENT_FILTERS;
  let parsed: ReturnType<typeof ContentFiltersVar.safeParse> | undefined;
  try {
    parsed = ContentFiltersVar.safeParse(JSON.parse(value));
  } catch {
    parsed = undefined;
  }
  if (!parsed?.success) {
    return { ...NO_CONTENT_FILTERS, error: 'not a JSON object of {"route": [{"pattern", "action"}, ...]}' };
  }
  const refused: { route: string; index: number; reason: string }[] = [];
  const compiled = new Map<string, ContentFilter[]>();
  for (const [route, specs] of Object.entries(parsed.data)) {
    if (route !== "*" && !PromptRoute.safeParse(route).success) {
      const known = `${PromptRoute.options.join(", ")} or *`;
      refused.push({ route: route.slice(0, 64), index: -1, reason: `not a route (${known})` });
      continue;
    }
    const list: ContentFilter[] = [];
    for (const [index, item] of specs.entries()) {
      if (index >= MAX_FILTERS_PER_ROUTE) {
        refused.push({ route, index, reason: `more than ${MAX_FILTERS_PER_ROUTE} filters` });
        continue;
      }
      const spec = ContentFilterSpec.safeParse(item);
      if (!spec.success) {
        const issue = spec.error.issues[0];
        refused.push({ route, index, reason: `${issue?.path.join(".") || "(filter)"}: ${issue?.message}` });
        continue;
      }
      const filter = compileFilter(spec.data, spec.data.name ?? `#${index}`);
      if (typeof filter === "string") refused.push({ route, index, reason: filter });
      else list.push(filter);
    }
    compiled.set(route, list);
  }
  const every = compiled.get("*") ?? [];
  const byRoute = new Map<PromptRoute, readonly ContentFilter[]>();
  for (const route of PromptRoute.options) {
    const list = [...(compiled.get(route) ?? []), ...every];
    if (list.length > 0) byRoute.set(route, list);
  }
  return { byRoute, refused, error: null };
}

export interface FilterMatch {
  start: number;
  end: number;
  filter: ContentFilter;
}

/**
 * Every match of `filter` in `text`, left to right and not overlapping, found window by window:
 * a match is taken from the window it starts in (before that window's overlap, or anywhere in
 * the last window); a longer match than the overlap that straddles two windows can be cut short.
 */
export function filterMatches(text: string, filter: ContentFilter): FilterMatch[] {
  const out: FilterMatch[] = [];
  const step = FILTER_WINDOW_CHARS - FILTER_OVERLAP_CHARS;
  let from = 0;
  for (let start = 0; start < text.length; start += step) {
    const last = start + FILTER_WINDOW_CHARS >= text.length;
    const window = text.slice(start, start + FILTER_WINDOW_CHARS);
    filter.regex.lastIndex = 0;
    for (const m of window.matchAll(filter.regex)) {
      const s = start + m.index;
      if (s < from) continue;
      if (!last && m.index >= step) break;
      if (m[0].length === 0) continue;
      out.push({ start: s, end: s + m[0].length, filter });
      from = s + m[0].length;
    }
    if (last) break;
  }
  return out;
}

/** The first blocking filter that matches `text`, if any. */
export function blockingFilter(text: string, filters: readonly ContentFilter[]): ContentFilter | null {
  for (const filter of filters) {
    if (filter.action === "block" && filterMatches(text, filter).length > 0) return filter;
  }
  return null;
}

/** `text` with every redacting filter's matches replaced by FILTER_REDACTION. */
export function redactFiltered(text: string, filters: readonly ContentFilter[]): string {
  let out = text;
  for (const filter of filters) {
    if (filter.action !== "redact") continue;
    const matches = filterMatches(out, filter);
    if (matches.length === 0) continue;
    let next = "";
    let at = 0;
    for (const m of matches) {
      next += out.slice(at, m.start) + FILTER_REDACTION;
      at = m.end;
    }
    out = next + out.slice(at);
  }
  return out;
}
