// Typed view of the Worker's vars (wrangler.toml [vars]); one place that knows their defaults.
import { z } from "zod";
import { DEFAULT_POOL } from "../schema/hub.ts";
import { isModelId, parseModelId } from "../schema/model-id.ts";
import { AlertThresholds } from "../schema/monitoring.ts";
import { ModelName } from "../schema/protocol.ts";
import type { BreakerPolicy } from "./hub/circuit-breaker.ts";
import { log } from "./log.ts";
import { readSecurityConfig, type SecurityConfig } from "./security/config.ts";

export interface GatewayConfig {
  version: string;
  jwtIssuer: string | undefined;
  jwtAudience: string | undefined;
  /** Seconds a token's `nbf` may lie in the future (the issuer's clock ahead of ours); `exp` is exact. */
  jwtClockToleranceS: number;
  /** An identity provider's key set (JWT_JWKS_URL), or why its settings are refused; undefined: none. */
  jwks: JwksConfig | { invalid: string } | undefined;
  /** How long an isolate trusts its copy of the token deny-list before it reads D1 again (ms). */
  tokenRevocationRefreshMs: number;
  /** Queued requests per model in one pool. */
  queueMax: number;
  /** How long a request may wait in the queue for an agent. */
  queueTimeoutMs: number;
  /** Model for POST /generate when the body names none; undefined = first model any agent serves. */
  defaultModel: string | undefined;
  /** How long an agent has after the upgrade to send `hello`. */
  helloTimeoutMs: number;
  /** How often agents send HEARTBEAT_PING (announced in `welcome`). */
  heartbeatIntervalMs: number;
  /** An agent silent (no frame, no ping) for this long is closed with HEARTBEAT_TIMEOUT. */
  heartbeatTimeoutMs: number;
  /** How often agents send `health` (announced in `welcome`). */
  healthIntervalMs: number;
  /** Attempts per request (the first plus retries on other agents) for failures before the first chunk. */
  dispatchMaxAttempts: number;
  /** Per-agent and per-agent+model circuit breakers. */
  breaker: BreakerPolicy;
  /** Deadline of a request (queue wait + generation) unless X-Orchard-Timeout-Ms sets one. */
  requestTimeoutMs: number;
  /** Largest X-Orchard-Timeout-Ms honoured; larger values are capped to it. */
  requestTimeoutMaxMs: number;
  /** An agent that sends no chunk within this long after `generate` has failed the attempt. */
  firstChunkTimeoutMs: number;
  /** A stream with no chunk for this long after the previous one ends with GATEWAY_TIMEOUT. */
  idleChunkTimeoutMs: number;
  /** Unread bytes the hub buffers per streaming request before it gives up on a slow caller. */
  streamBufferMaxBytes: number;
  /** Models to serve instead when none of the requested model's agents can (in order). */
  modelFallbacks: ReadonlyMap<string, readonly string[]>;
  /** The agent pools (one AgentHub each) and which models each serves. */
  pools: Pools;
  /** How long /health and /ready reuse one observation of D1 and the hubs (0: not at all). */
  healthCacheMs: number;
  /** How often each hub rolls its live per-version traffic into the registry's history (ms). */
  liveMetricsFlushMs: number;
  /** How often a hub writes its Prometheus counters and open traffic windows to storage (ms). */
  metricsFlushMs: number;
  /** How often a running deployment's controller observes, judges and steps (ms, at least 100). */
  rolloutTickMs: number;
  /** GET /alerts/active and the health score: ALERT_THRESHOLDS over the defaults. */
  alertThresholds: AlertThresholds;
  /** Prompt injection, content filters, output redaction, CORS (gateway/security/config.ts). */
  security: SecurityConfig;
}

/** Signature algorithms a JWKS key may use: asymmetric only (never `none`, never HS* with a public key). */
export const JWKS_ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
  "Ed25519",
] as const;
export const DEFAULT_JWKS_ALGORITHMS = ["RS256", "ES256", "EdDSA"] as const;

/** JWT_JWKS_*: where an identity provider publishes its keys, and how tokens it signs are read. */
export interface JwksConfig {
  url: URL;
  /** JWT_JWKS_ALGORITHMS: the allow-list for tokens verified with a JWKS key. */
  algorithms: readonly string[];
  /** jose's fetch timeout: a JWKS that does not answer within it fails the request with AUTH_UNAVAILABLE. */
  timeoutMs: number;
  /** An unknown `kid` refetches the set at most this often (jose's cooldownDuration). */
  cooldownMs: number;
  /** The set is refetched once it is this old (jose's cacheMaxAge). */
  maxAgeMs: number;
  /** JWT_ROLE_CLAIM: the claim that carries the role in the provider's tokens (default `role`). */
  roleClaim: string;
}

/** One agent pool: an AgentHub Durable Object and the agents whose D1 row names it. */
export interface PoolConfig {
  name: string;
  /** Where the pool's Durable Object is created (near its lab's agents), if configured. */
  locationHint: LocationHint | undefined;
  /** Models listed for this pool in POOLS. */
  models: readonly string[];
}

export interface Pools {
  /** Every configured pool, `default` first (it always exists), then in POOLS order. */
  byName: ReadonlyMap<string, PoolConfig>;
  /** The pools that list each model; a model listed nowhere is served by the default pool. */
  byModel: ReadonlyMap<string, readonly string[]>;
}

/**
 * The pools that serve `model`: those that list it, else those that list its name (a request for
 * `name:version` or `name@alias` goes where `name` is served), else the default pool.
 */
export function poolsForModel(pools: Pools, model: string): readonly string[] {
  const listed = pools.byModel.get(model);
  if (listed !== undefined) return listed;
  const at = model.lastIndexOf("@");
  const unaliased = at > 0 ? model.slice(0, at) : model;
  const name = isModelId(unaliased) ? parseModelId(unaliased).name : unaliased;
  return pools.byModel.get(name) ?? DEFAULT_POOL_ONLY;
}

const DEFAULT_POOL_ONLY: readonly string[] = [DEFAULT_POOL];

/**
 * Reads the vars with defaults. A malformed number is logged and replaced by its default rather
 * than failing every request: these are tuning knobs, not security settings.
 */
export function readConfig(bindings: object): GatewayConfig {
  const env = bindings as Partial<Record<string, unknown>>;
  const heartbeatIntervalMs = positiveInt(env, "HEARTBEAT_INTERVAL_MS", 15_000);
  return {
    version: text(env.ORCHARD_VERSION) ?? "0.0.0",
    jwtIssuer: text(env.JWT_ISSUER),
    jwtAudience: text(env.JWT_AUDIENCE),
    jwtClockToleranceS: Math.min(300, nonNegativeInt(env, "JWT_CLOCK_TOLERANCE_S", 30)),
    jwks: jwks(env),
    tokenRevocationRefreshMs: Math.min(
      60_000,
      Math.max(500, nonNegativeInt(env, "TOKEN_REVOCATION_REFRESH_MS", 5_000)),
    ),
    queueMax: positiveInt(env, "QUEUE_MAX", 64),
    queueTimeoutMs: positiveInt(env, "QUEUE_TIMEOUT_MS", 30_000),
    defaultModel: text(env.DEFAULT_MODEL),
    helloTimeoutMs: positiveInt(env, "HELLO_TIMEOUT_MS", 10_000),
    heartbeatIntervalMs,
    heartbeatTimeoutMs: 3 * heartbeatIntervalMs,
    healthIntervalMs: positiveInt(env, "HEALTH_INTERVAL_MS", 30_000),
    dispatchMaxAttempts: positiveInt(env, "DISPATCH_MAX_ATTEMPTS", 3),
    breaker: {
      windowMs: positiveInt(env, "BREAKER_WINDOW_MS", 60_000),
      minCalls: positiveInt(env, "BREAKER_MIN_CALLS", 5),
      failureRate: fraction(env, "BREAKER_FAILURE_RATE", 0.5),
      cooldownMs: positiveInt(env, "BREAKER_COOLDOWN_MS", 30_000),
      halfOpenProbes: positiveInt(env, "BREAKER_HALF_OPEN_PROBES", 1),
    },
    requestTimeoutMs: positiveInt(env, "REQUEST_TIMEOUT_MS", 120_000),
    requestTimeoutMaxMs: positiveInt(env, "REQUEST_TIMEOUT_MAX_MS", 600_000),
    firstChunkTimeoutMs: positiveInt(env, "FIRST_CHUNK_TIMEOUT_MS", 30_000),
    idleChunkTimeoutMs: positiveInt(env, "IDLE_CHUNK_TIMEOUT_MS", 30_000),
    streamBufferMaxBytes: positiveInt(env, "STREAM_BUFFER_MAX_BYTES", 1024 * 1024),
    modelFallbacks: modelFallbacks(env.MODEL_FALLBACKS),
    pools: pools(env.POOLS),
    healthCacheMs: nonNegativeInt(env, "HEALTH_CACHE_MS", 2_000),
    liveMetricsFlushMs: Math.max(1_000, nonNegativeInt(env, "LIVE_METRICS_FLUSH_MS", 60_000)),
    metricsFlushMs: Math.max(1_000, nonNegativeInt(env, "METRICS_FLUSH_MS", 10_000)),
    rolloutTickMs: Math.max(100, nonNegativeInt(env, "ROLLOUT_TICK_MS", 5_000)),
    alertThresholds: alertThresholds(env.ALERT_THRESHOLDS),
    security: readSecurityConfig(env),
  };
}

/** The vars jwks() reads, in order. */
const JWKS_VARS = [
  "JWT_JWKS_URL",
  "JWT_JWKS_ALGORITHMS",
  "JWT_ROLE_CLAIM",
  "JWT_JWKS_TIMEOUT_MS",
  "JWT_JWKS_COOLDOWN_MS",
  "JWT_JWKS_MAX_AGE_MS",
] as const;

/** Like parsedFallbacks: a per-isolate cache of a pure function of the vars (compared as given). */
let parsedJwks: { raw: unknown[]; value: JwksConfig | { invalid: string } } | undefined;

/**
 * JWT_JWKS_URL and the settings that go with it. These are security settings: a malformed one is not
 * replaced by a default but refused ({invalid}), and the auth middleware then fails closed.
 */
function jwks(env: Partial<Record<string, unknown>>): JwksConfig | { invalid: string } | undefined {
  const url = text(env.JWT_JWKS_URL);
  if (url === undefined) return undefined;
  const raw = JWKS_VARS.map((name) => env[name]);
  if (parsedJwks === undefined || raw.some((value, i) => value !== parsedJwks?.raw[i])) {
    parsedJwks = {
      raw,
      value: parseJwks(url, text(env.JWT_JWKS_ALGORITHMS), {
        roleClaim: text(env.JWT_ROLE_CLAIM) ?? "role",
        timeoutMs: Math.max(100, nonNegativeInt(env, "JWT_JWKS_TIMEOUT_MS", 5_000)),
        cooldownMs: nonNegativeInt(env, "JWT_JWKS_COOLDOWN_MS", 30_000),
        maxAgeMs: Math.max(1_000, nonNegativeInt(env, "JWT_JWKS_MAX_AGE_MS", 600_000)),
      }),
    };
  }
  return parsedJwks.value;
}

function parseJwks(
  rawUrl: string,
  rawAlgorithms: string | undefined,
  rest: Omit<JwksConfig, "url" | "algorithms">,
): JwksConfig | { invalid: string } {
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    return { invalid: "JWT_JWKS_URL is not a URL" };
  }
  // Keys fetched in the clear could be swapped on the way: https, except on this machine (tests, dev).
  const loopback = ["localhost", "127.0.0.1", "[::1]"].includes(url.hostname);
  if (url.protocol !== "https:" && !(url.protocol === "http:" && loopback)) {
    return { invalid: "JWT_JWKS_URL must be https (http only for localhost)" };
  }
  const algorithms =
    rawAlgorithms === undefined
      ? [...DEFAULT_JWKS_ALGORITHMS]
      : rawAlgorithms.split(",").map((a) => a.trim());
  const refused = algorithms.filter((a) => !(JWKS_ALGORITHMS as readonly string[]).includes(a));
  if (refused.length > 0 || algorithms.length === 0) {
    return {
      invalid: `JWT_JWKS_ALGORITHMS may list only ${JWKS_ALGORITHMS.join(", ")} (refused: ${refused.join(", ") || "an empty list"})`,
    };
  }
  return { url, algorithms: [...new Set(algorithms)], ...rest };
}

/** MODEL_FALLBACKS: {"model-a": ["model-b", "model-c"]}. */
export const ModelFallbacks = z.record(ModelName, z.array(ModelName).max(16));

/**
 * readConfig() runs on every request; the parse (and its warning) runs once per isolate and value.
 * A cache of a pure function of the var, not state that differs between isolates.
 */
let parsedFallbacks: { raw: string; value: ReadonlyMap<string, readonly string[]> } | undefined;

function modelFallbacks(raw: unknown): ReadonlyMap<string, readonly string[]> {
  const value = text(raw);
  if (value === undefined) return new Map();
  if (parsedFallbacks?.raw !== value) parsedFallbacks = { raw: value, value: parseFallbacks(value) };
  return parsedFallbacks.value;
}

function parseFallbacks(value: string): ReadonlyMap<string, readonly string[]> {
  let parsed: ReturnType<typeof ModelFallbacks.safeParse> | undefined;
  try {
    parsed = ModelFallbacks.safeParse(JSON.parse(value));
  } catch {
    parsed = undefined;
  }
  if (!parsed?.success) {
    log("warn", 'MODEL_FALLBACKS is not a JSON object of {"model": ["fallback", ...]}; ignoring it');
    return new Map();
  }
  return new Map(
    Object.entries(parsed.data).map(([model, fallbacks]) => [model, fallbacks.filter((f) => f !== model)]),
  );
}

const DEFAULT_ALERT_THRESHOLDS: AlertThresholds = AlertThresholds.parse({});

/** Like parsedFallbacks: a per-isolate cache of a pure function of the var (and its warning). */
let parsedThresholds: { raw: string; value: AlertThresholds } | undefined;

/** ALERT_THRESHOLDS: any subset of AlertThresholds as JSON, e.g. {"errorRate": 0.05}. */
function alertThresholds(raw: unknown): AlertThresholds {
  const value = text(raw);
  if (value === undefined) return DEFAULT_ALERT_THRESHOLDS;
  if (parsedThresholds?.raw !== value) parsedThresholds = { raw: value, value: parseThresholds(value) };
  return parsedThresholds.value;
}

function parseThresholds(value: string): AlertThresholds {
  let parsed: ReturnType<typeof AlertThresholds.safeParse> | undefined;
  try {
    parsed = AlertThresholds.safeParse(JSON.parse(value));
  } catch {
    parsed = undefined;
  }
  if (parsed?.success) return parsed.data;
  log("warn", "ALERT_THRESHOLDS is not a JSON object of known thresholds in range; using the defaults", {
    issues: parsed?.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`) ?? ["not JSON"],
  });
  return DEFAULT_ALERT_THRESHOLDS;
}

/** A pool's name: its AgentHub's Durable Object name and the agents.pool value of its agents. */
export const PoolName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/);

/** POOLS: {"lab-a": {"locationHint": "wnam", "models": ["llama3"]}, "default": {}}. */
export const PoolsVar = z.record(
  PoolName,
  z.strictObject({ locationHint: z.string().optional(), models: z.array(ModelName).max(1024).optional() }),
);

/**
 * The location hints Durable Objects accept. Declared here rather than taken from workers-types'
 * global DurableObjectLocationHint, because Node code (the bench) imports this module too; poolHub()
 * (inference/hub-client.ts) assigns one to the other, so the compiler keeps the two in step.
 */
export const LOCATION_HINTS = [
  "wnam",
  "enam",
  "sam",
  "weur",
  "eeur",
  "apac",
  "apac-ne",
  "apac-se",
  "oc",
  "afr",
  "me",
] as const;
export type LocationHint = (typeof LOCATION_HINTS)[number];
const isLocationHint = (hint: string): hint is LocationHint =>
  (LOCATION_HINTS as readonly string[]).includes(hint);

/** Like parsedFallbacks: a per-isolate cache of a pure function of the var. */
let parsedPools: { raw: string | undefined; value: Pools } | undefined;

function pools(raw: unknown): Pools {
  const value = text(raw);
  if (parsedPools === undefined || parsedPools.raw !== value) {
    parsedPools = { raw: value, value: parsePools(value) };
  }
  return parsedPools.value;
}

function parsePools(value: string | undefined): Pools {
  let entries: [string, { locationHint?: string; models?: string[] }][] = [];
  if (value !== undefined) {
    let parsed: ReturnType<typeof PoolsVar.safeParse> | undefined;
    try {
      parsed = PoolsVar.safeParse(JSON.parse(value));
    } catch {
      parsed = undefined;
    }
    if (parsed?.success) entries = Object.entries(parsed.data);
    else {
      log(
        "error",
        'POOLS is not a JSON object of {"pool": {"locationHint"?: "...", "models"?: [...]}}; only the default pool is configured',
      );
    }
  }
  const byName = new Map<string, PoolConfig>([
    [DEFAULT_POOL, { name: DEFAULT_POOL, locationHint: undefined, models: [] }],
  ]);
  const byModel = new Map<string, string[]>();
  for (const [name, pool] of entries) {
    let locationHint: LocationHint | undefined;
    if (pool.locationHint !== undefined) {
      if (isLocationHint(pool.locationHint)) locationHint = pool.locationHint;
      else
        log("warn", "POOLS: unknown locationHint; ignoring it", {
          pool: name,
          locationHint: pool.locationHint,
        });
    }
    const models = [...new Set(pool.models ?? [])];
    byName.set(name, { name, locationHint, models });
    for (const model of models) byModel.set(model, [...(byModel.get(model) ?? []), name]);
  }
  return { byName, byModel };
}

function text(value: unknown): string | undefined {
  return typeof value === "string" && value.trim() !== "" ? value.trim() : undefined;
}

function fraction(env: Partial<Record<string, unknown>>, name: string, fallback: number): number {
  const raw = text(env[name]);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (Number.isFinite(value) && value > 0 && value <= 1) return value;
  log("warn", "config var is not a number in (0, 1]; using the default", { var: name, fallback });
  return fallback;
}

function nonNegativeInt(env: Partial<Record<string, unknown>>, name: string, fallback: number): number {
  const raw = text(env[name]);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (Number.isSafeInteger(value) && value >= 0) return value;
  log("warn", "config var is not a non-negative integer; using the default", { var: name, fallback });
  return fallback;
}

function positiveInt(env: Partial<Record<string, unknown>>, name: string, fallback: number): number {
  const raw = text(env[name]);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (Number.isSafeInteger(value) && value > 0) return value;
  log("warn", "config var is not a positive integer; using the default", { var: name, fallback });
  return fallback;
}
