// The security vars (wrangler.toml [vars]) as one typed value: INJECTION_POLICY and its run-time
// cache, CONTENT_FILTERS, OUTPUT_REDACTION, CORS_ORIGINS and CORS_CREDENTIALS. Each var is parsed
// once per isolate and value (a cache of a pure function of the var, as config.ts does), and a bad
// value is logged then and replaced by its safe default: never a crash, never a silent setting.
import { log } from "../log.ts";
import { type ContentFilters, NO_CONTENT_FILTERS, parseContentFilters } from "./content-filters.ts";
import { type PolicyEntry, type PromptRoute, parseInjectionPolicy } from "./injection-policy.ts";
import type { OutputPolicy } from "./output-sanitizer.ts";

export interface CorsConfig {
  /** Allowed origins ("https://app.example"); empty: no CORS headers at all. */
  origins: ReadonlySet<string>;
  /** CORS_ORIGINS is "*": any origin, never with credentials. */
  anyOrigin: boolean;
  /** Access-Control-Allow-Credentials (only with a list of origins). */
  credentials: boolean;
}

export interface SecurityConfig {
  /** INJECTION_POLICY's lines (the admin's, from D1, sit over them). */
  injectionPolicy: readonly PolicyEntry[];
  /** How long an isolate reuses the admins' lines read from D1 (INJECTION_POLICY_CACHE_MS). */
  injectionPolicyCacheMs: number;
  contentFilters: ContentFilters;
  /** Credentials in generated text are redacted (OUTPUT_REDACTION, default on). */
  outputRedaction: boolean;
  cors: CorsConfig;
}

export const DEFAULT_INJECTION_POLICY_CACHE_MS = 5_000;

type Vars = Partial<Record<string, unknown>>;

export function readSecurityConfig(bindings: object): SecurityConfig {
  const env = bindings as Vars;
  return {
    injectionPolicy: cached("INJECTION_POLICY", env, injectionPolicy),
    injectionPolicyCacheMs: cached("INJECTION_POLICY_CACHE_MS", env, cacheMs),
    contentFilters: cached("CONTENT_FILTERS", env, contentFilters),
    outputRedaction: cached("OUTPUT_REDACTION", env, outputRedaction),
    cors: corsConfig(env),
  };
}

/** The output side of a route: what the hub's sanitizer does with its answers. */
export function outputPolicy(config: SecurityConfig, route: PromptRoute): OutputPolicy {
  const filters = (config.contentFilters.byRoute.get(route) ?? []).filter((f) => f.output);
  return { redactSecrets: config.outputRedaction, filters };
}

/** The route's content filters that apply to prompts. */
export function inputFilters(config: SecurityConfig, route: PromptRoute) {
  return (config.contentFilters.byRoute.get(route) ?? []).filter((f) => f.input);
}

// A per-isolate cache of pure functions of the vars (the parse and its log line run once per value).
const parsed = new Map<string, { raw: string | undefined; value: unknown }>();

function cached<T>(name: string, env: Vars, parse: (raw: string | undefined) => T): T {
  const raw = typeof env[name] === "string" ? (env[name] as string).trim() || undefined : undefined;
  const hit = parsed.get(name);
  if (hit !== undefined && hit.raw === raw) return hit.value as T;
  const value = parse(raw);
  parsed.set(name, { raw, value });
  return value;
}

function injectionPolicy(raw: string | undefined): PolicyEntry[] {
  const { entries, error } = parseInjectionPolicy(raw);
  if (error !== null) {
    log("error", "INJECTION_POLICY is not a mode nor a JSON array of {mode, route?, model?}; using flag", {
      error,
    });
  }
  return entries;
}

function cacheMs(raw: string | undefined): number {
  if (raw === undefined) return DEFAULT_INJECTION_POLICY_CACHE_MS;
  const value = Number(raw);
  if (Number.isSafeInteger(value) && value >= 0 && value <= 300_000) return value;
  log("warn", "INJECTION_POLICY_CACHE_MS is not an integer 0-300000; using the default", {
    fallback: DEFAULT_INJECTION_POLICY_CACHE_MS,
  });
  return DEFAULT_INJECTION_POLICY_CACHE_MS;
}

function contentFilters(raw: string | undefined): ContentFilters {
  const filters = parseContentFilters(raw);
  if (filters.error !== null) {
    log("error", "CONTENT_FILTERS is not usable; no content filter applies", { error: filters.error });
    return NO_CONTENT_FILTERS;
  }
  for (const refused of filters.refused) {
    log("error", "CONTENT_FILTERS: a filter was refused and is ignored", refused);
  }
  return filters;
}

function outputRedaction(raw: string | undefined): boolean {
  if (raw === undefined) return true;
  const value = raw.toLowerCase();
  if (["on", "true", "1", "yes"].includes(value)) return true;
  if (["off", "false", "0", "no"].includes(value)) return false;
  log("error", 'OUTPUT_REDACTION is not "on" or "off"; redacting (the default)');
  return true;
}

let parsedCors: { key: string; value: CorsConfig } | undefined;

function corsConfig(env: Vars): CorsConfig {
  const origins = typeof env.CORS_ORIGINS === "string" ? env.CORS_ORIGINS.trim() : "";
  const credentials = typeof env.CORS_CREDENTIALS === "string" ? env.CORS_CREDENTIALS.trim() : "";
  const key = `${origins}\n${credentials}`;
  if (parsedCors?.key !== key) parsedCors = { key, value: parseCors(origins, credentials) };
  return parsedCors.value;
}

/**
 * CORS_ORIGINS: "" (no browser origins), "*" (any origin, without credentials), or origins
 * separated by commas or spaces, each scheme://host[:port] exactly as a browser sends it.
 * CORS_CREDENTIALS "true" with "*" is refused (logged; credentials stay off): a browser would
 * send cookies to any site's requests, and the spec forbids the combination anyway.
 */
export function parseCors(originsVar: string, credentialsVar: string): CorsConfig {
  let credentials = ["true", "on", "1", "yes"].includes(credentialsVar.toLowerCase());
  if (originsVar === "") return { origins: new Set(), anyOrigin: false, credentials: false };
  if (originsVar === "*") {
    if (credentials) log("error", 'CORS_CREDENTIALS is refused with CORS_ORIGINS "*"; credentials stay off');
    return { origins: new Set(), anyOrigin: true, credentials: false };
  }
  const origins = new Set<string>();
  for (const item of originsVar.split(/[\s,]+/).filter((o) => o !== "")) {
    const origin = canonicalOrigin(item);
    if (origin === null) {
      log("error", "CORS_ORIGINS: not an origin (scheme://host[:port]); ignored", {
        origin: item.slice(0, 200),
      });
      continue;
    }
    origins.add(origin);
  }
  if (origins.size === 0) credentials = false;
  return { origins, anyOrigin: false, credentials };
}

function canonicalOrigin(value: string): string | null {
  if (value === "*") return null;
  try {
    const url = new URL(value);
    if (url.origin === "null" || url.origin !== value.replace(/\/$/, "")) return null;
    return url.origin;
  } catch {
    return null;
  }
}
