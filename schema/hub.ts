// The internal contract between the gateway Worker and its pools' AgentHub Durable Objects (never
// seen by callers): the dispatch request, the hub's error body, and the snapshot RPC's shape.
//
//   POST https://hub/dispatch  body: DispatchRequest (JSON)
//     -> 4xx/5xx + DispatchErrorBody (+ Retry-After) when the request cannot be served, decided
//        before anything streams: MODEL_NOT_FOUND, NO_AGENT_AVAILABLE, QUEUE_FULL, QUEUE_TIMEOUT,
//        GATEWAY_TIMEOUT, or an agent failure before the first chunk (after up to
//        DISPATCH_MAX_ATTEMPTS attempts on different agents).
//     -> 200 with the caller's answer, rendered by the hub (gateway/render/) in the shape
//        DispatchRequest.response names, which the Worker passes on untouched. Streamed: from the
//        first chunk on, SSE written as the agent's frames arrive, ending with the API's done or
//        error messages; cancelling the body cancels the generation on the agent. Not streamed:
//        once the agent is done, the whole JSON answer (a failure is still an error status).
//        Headers: Content-Type, X-Orchard-Model (the model that answers) and X-Orchard-Fallback
//        (the requested model, when a fallback answers); for a request a rollout assigned (a
//        canary, an A/B test: schema/rollouts.ts), X-Orchard-Variant and X-Orchard-Experiment, on
//        its error answers too.
//   GET  https://hub/connect   (Upgrade: websocket, X-Orchard-Agent-Id/-Name, X-Orchard-Pool,
//                               X-Orchard-Token-Exp)
//     -> 101, the agent's socket accepted with the hibernation API.
//   RPC  snapshot()            -> HubSnapshot (agents, models, queue, counters).
import { z } from "zod";
import { BreakerState, ErrorCode } from "./api.ts";
import {
  ChatMessage,
  EngineInfo,
  EngineName,
  HealthFrame,
  ModelInfo,
  ModelName,
  OutputFormat,
  SamplingParams,
} from "./protocol.ts";

export const DEFAULT_POOL = "default";

export const HubHeader = {
  agentId: "X-Orchard-Agent-Id",
  agentName: "X-Orchard-Agent-Name",
  pool: "X-Orchard-Pool",
  /** The agent token's `exp` (epoch seconds): the hub closes the socket with UNAUTHORIZED then. */
  tokenExp: "X-Orchard-Token-Exp",
  model: "X-Orchard-Model",
  fallback: "X-Orchard-Fallback",
} as const;

export const ResponseShape = z.object({
  /** /generate (Orchard's API) or /v1/chat/completions (OpenAI's). */
  api: z.enum(["generate", "chat"]),
  stream: z.boolean(),
  /** Chat streams: stream_options.include_usage (a last chunk with the usage). */
  includeUsage: z.boolean(),
  /** The id the caller knows the request by (X-Request-Id), which the body repeats. */
  requestId: z.string(),
  /** When the Worker received the request (epoch ms): latency_ms, and chat's `created`. */
  receivedAt: z.number(),
});
export type ResponseShape = z.infer<typeof ResponseShape>;

/** The largest rate limit anything accepts (requests, tokens or concurrent requests per subject). */
export const MAX_RATE_LIMIT = 1_000_000_000_000;
const RateLimitValue = z.number().int().positive().max(MAX_RATE_LIMIT);

/** Some of a subject's limits: a token's claim, an admin's overrides, a model's limits. */
export const PartialRateLimits = z.object({
  rpm: RateLimitValue.optional(),
  tpm: RateLimitValue.optional(),
  concurrency: RateLimitValue.optional(),
});
export type PartialRateLimits = z.infer<typeof PartialRateLimits>;

/**
 * What the Worker asks of the rate limiter for one request (gateway/ratelimit/): the subject, the
 * limits its role and token give it, and what to reserve. Without `id`, the hub receiving the
 * dispatch is the limiter's home (the default pool's hub) and admits it there; with `id`, the home
 * already admitted it by RPC and the serving hub settles that reservation when the request ends.
 */
export const RateLimitAsk = z.object({
  id: z.string().min(1).max(64).optional(),
  /** The token's `sub`: whose limits these are. */
  subject: z.string().min(1).max(128),
  role: z.string().min(1).max(32),
  /** The role's limits from RATE_LIMITS. */
  limits: z.object({ rpm: RateLimitValue, tpm: RateLimitValue, concurrency: RateLimitValue }),
  /** The token's `rate_limits` claim. */
  claim: PartialRateLimits.optional(),
  /** The requested model's own limits (RATE_LIMITS models), under the key that matched. */
  model: z.object({ key: z.string().min(1).max(128), limits: PartialRateLimits }).optional(),
  /** The prompt's tokens as estimated (ceil(chars / 4), gateway/ratelimit/ask.ts). */
  promptTokens: z.number().int().nonnegative(),
  /** Tokens reserved: promptTokens + max_tokens. */
  tokens: z.number().int().positive(),
  /** The request's X-Orchard-Timeout-Ms: an unsettled reservation expires after that deadline. */
  timeoutMs: z.number().int().positive().optional(),
  /** The first pool the request is sent to, and its API: the refusal metric's labels. */
  pool: z.string().min(1).max(64),
  route: z.string().min(1).max(32),
});
export type RateLimitAsk = z.infer<typeof RateLimitAsk>;

export const DispatchRequest = z
  .object({
    requestId: z.string().min(1).max(100),
    /** Omitted: the pool's default model (DEFAULT_MODEL, else the first model any agent serves). */
    model: ModelName.optional(),
    prompt: z.string().optional(),
    messages: z.array(ChatMessage).min(1).optional(),
    params: SamplingParams,
    /**
     * Structured output the agent is asked to enforce (the gateway validates the answer itself);
     * the hub prefers agents that announce `structured_output` for such a request.
     */
    format: OutputFormat.optional(),
    /** The request's deadline from now (queue wait + generation); omitted: REQUEST_TIMEOUT_MS. */
    timeoutMs: z.number().int().positive().optional(),
    /** What the caller gets back: which API, streamed or not. */
    response: ResponseShape,
    /**
     * The end user, for sticky rollout assignment: the OpenAI `user` field, else X-Orchard-User,
     * else the token's `sub` (one service token often fronts many people).
     */
    subject: z.string().min(1).max(256),
    /** The token's `sub`: who may give feedback on this request. */
    caller: z.string().min(1).max(128),
    /** The rate limiter's reservation (absent: limits are off). */
    reservation: RateLimitAsk.optional(),
  })
  .refine((r) => (r.prompt === undefined) !== (r.messages === undefined), {
    message: "exactly one of prompt or messages",
  });
export type DispatchRequest = z.infer<typeof DispatchRequest>;

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);
const isString = (v: unknown, min: number, max: number): v is string =>
  typeof v === "string" && v.length >= min && v.length <= max;
const isOptional = <T>(v: unknown, check: (v: unknown) => v is T) => v === undefined || check(v);
const isPositiveInt = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;
const isNumber = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$/;
const isModelName = (v: unknown): v is string => isString(v, 1, 128) && MODEL_NAME.test(v);

function isMessages(v: unknown): boolean {
  if (!Array.isArray(v) || v.length === 0) return false;
  for (const m of v) {
    if (!isObject(m) || typeof m.content !== "string") return false;
    if (m.role !== "system" && m.role !== "user" && m.role !== "assistant") return false;
  }
  return true;
}

function isParams(v: unknown): boolean {
  if (!isObject(v) || !isPositiveInt(v.maxTokens)) return false;
  const { temperature, topP, seed, stop } = v;
  if (temperature !== undefined && !(isNumber(temperature) && temperature >= 0 && temperature <= 2))
    return false;
  if (topP !== undefined && !(isNumber(topP) && topP > 0 && topP <= 1)) return false;
  if (seed !== undefined && !Number.isSafeInteger(seed)) return false;
  if (stop === undefined) return true;
  return (
    Array.isArray(stop) && stop.length <= 8 && stop.every((s) => isString(s, 1, Number.MAX_SAFE_INTEGER))
  );
}

function isResponseShape(v: unknown): boolean {
  return (
    isObject(v) &&
    (v.api === "generate" || v.api === "chat") &&
    typeof v.stream === "boolean" &&
    typeof v.includeUsage === "boolean" &&
    typeof v.requestId === "string" &&
    isNumber(v.receivedAt)
  );
}

/**
 * The hub's check of a DispatchRequest, accepting exactly what DispatchRequest accepts (a test
 * compares the two on generated cases). Only this Worker's routes build one, from a body they
 * already validated, and zod 4 without code generation (Workers forbid `new Function`) cost ~4% of
 * workerd's CPU per request here, so the hub runs this instead of the schema.
 */
export function isDispatchRequest(value: unknown): value is DispatchRequest {
  if (!isObject(value)) return false;
  const r = value;
  return (
    isString(r.requestId, 1, 100) &&
    isOptional(r.model, isModelName) &&
    (r.prompt === undefined || typeof r.prompt === "string") &&
    (r.messages === undefined || isMessages(r.messages)) &&
    (r.prompt === undefined) !== (r.messages === undefined) &&
    isOptional(r.timeoutMs, isPositiveInt) &&
    isParams(r.params) &&
    (r.format === undefined || r.format === "json" || isObject(r.format)) &&
    isResponseShape(r.response) &&
    isString(r.subject, 1, 256) &&
    isString(r.caller, 1, 128) &&
    isOptional(r.reservation, isRateLimitAsk)
  );
}

const isRateLimit = (v: unknown): v is number =>
  Number.isSafeInteger(v) && (v as number) > 0 && (v as number) <= MAX_RATE_LIMIT;

export function isPartialRateLimits(v: unknown): v is PartialRateLimits {
  return (
    isObject(v) &&
    isOptional(v.rpm, isRateLimit) &&
    isOptional(v.tpm, isRateLimit) &&
    isOptional(v.concurrency, isRateLimit)
  );
}

/** RateLimitAsk by hand, as isDispatchRequest (a test compares the two on generated cases). */
export function isRateLimitAsk(v: unknown): v is RateLimitAsk {
  if (!isObject(v)) return false;
  const { limits, model } = v;
  return (
    isOptional(v.id, (id): id is string => isString(id, 1, 64)) &&
    isString(v.subject, 1, 128) &&
    isString(v.role, 1, 32) &&
    isObject(limits) &&
    isRateLimit(limits.rpm) &&
    isRateLimit(limits.tpm) &&
    isRateLimit(limits.concurrency) &&
    isOptional(v.claim, isPartialRateLimits) &&
    (model === undefined ||
      (isObject(model) && isString(model.key, 1, 128) && isPartialRateLimits(model.limits))) &&
    Number.isSafeInteger(v.promptTokens) &&
    (v.promptTokens as number) >= 0 &&
    isPositiveInt(v.tokens) &&
    isOptional(v.timeoutMs, isPositiveInt) &&
    isString(v.pool, 1, 64) &&
    isString(v.route, 1, 32)
  );
}

export const DispatchErrorBody = z.object({ code: ErrorCode, message: z.string() });
export type DispatchErrorBody = z.infer<typeof DispatchErrorBody>;

// ---- snapshot() ----

export const RequestOutcome = z.enum([
  "ok",
  "upstream_error",
  "cancelled",
  "queue_full",
  "queue_timeout",
  "timeout",
  "slow_consumer",
  "no_agent",
  "model_not_found",
]);
export type RequestOutcome = z.infer<typeof RequestOutcome>;

export const OutcomeCounts = z.record(RequestOutcome, z.number().int().nonnegative());
export const TokenCounts = z.object({ prompt: z.number().int(), completion: z.number().int() });

/** A pool's counters since it was created: persisted, so an eviction does not reset them. */
export const HubMetrics = z.object({
  requests: OutcomeCounts,
  /** Attempts after the first, on another agent, for failures before the first chunk. */
  retries: z.number().int(),
  /** Requests served by a MODEL_FALLBACKS model. */
  fallbacks: z.number().int(),
  tokens: TokenCounts,
  /** The same per model that answered (bounded: see MAX_COUNTED_MODELS in gateway/hub). */
  byModel: z.record(z.string(), z.object({ requests: OutcomeCounts, tokens: TokenCounts })),
});
export type HubMetrics = z.infer<typeof HubMetrics>;

/** The latest failure an agent reported, for admins (callers only ever see the stable code). */
export const AgentErrorReport = z.object({
  at: z.string(),
  requestId: z.string(),
  code: z.string(),
  message: z.string(),
});

export const AgentSummary = z.object({
  id: z.string(),
  name: z.string(),
  pool: z.string(),
  sessionId: z.string(),
  /** False until the agent's `hello` arrived. */
  ready: z.boolean(),
  agentVersion: z.string().nullable(),
  /** The protocol version negotiated with this agent (null before hello). */
  protocol: z.number().int().nullable(),
  /** The agent's optional features the hub uses (Capability in protocol.ts). */
  capabilities: z.array(z.string()),
  engines: z.array(EngineName),
  /** Each engine's capabilities and quantizations, as the agent's hello said (empty: it did not say). */
  engineInfo: z.array(EngineInfo),
  /** What the agent announced (hello, health, loaded/unloaded), sorted by name. */
  models: z.array(ModelInfo),
  capacity: z.number().int(),
  /** Requests the hub has on this agent now. */
  inFlight: z.number().int(),
  /** Requests cancelled but not yet answered by the agent: they still take a slot (of capacity). */
  cancelling: z.number().int(),
  draining: z.boolean(),
  /** The agent-level circuit breaker (per-model ones: GET /circuit-breaker/status). */
  breaker: BreakerState,
  connectedAt: z.string(),
  /** When the agent's token expires and the hub closes the socket (null: not known). */
  tokenExpiresAt: z.string().nullable(),
  latencyMs: z.number().nullable(),
  /** Frames the hub handled from this agent since the connection (or the hub) woke. */
  framesReceived: z.number().int(),
  /** The agent's latest `health` frame as received, and when. */
  lastHealth: z.object({ at: z.string(), frame: HealthFrame }).nullable(),
  lastError: AgentErrorReport.nullable(),
});
export type AgentSummary = z.infer<typeof AgentSummary>;

export const HubSnapshot = z.object({
  pool: z.string(),
  agents: z.array(AgentSummary),
  /** Models some connected, non-draining agent serves, with when the pool first saw them. */
  models: z.array(z.object({ id: z.string(), firstSeenAt: z.number() })),
  queue: z.object({ total: z.number().int(), byModel: z.record(z.string(), z.number().int()) }),
  metrics: HubMetrics,
});
export type HubSnapshot = z.infer<typeof HubSnapshot>;
