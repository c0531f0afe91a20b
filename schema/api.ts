// Public HTTP bodies of the gateway (zod). Types are inferred from these; nothing restates them.
import { z } from "zod";
import { ModelName } from "./protocol.ts";

/** Documented input limits (README "Limits"). Requests beyond them are 4xx with a stable code. */
export const Limits = {
  maxBodyBytes: 1024 * 1024,
  maxPromptChars: 200_000,
  maxMessages: 256,
  maxTokens: 4096,
  maxStopSequences: 4,
  maxStopChars: 64,
} as const;

/** Stable error codes returned by the gateway. Callers branch on these, never on messages. */
export const ErrorCode = z.enum([
  "UNAUTHORIZED",
  "TOKEN_EXPIRED",
  "FORBIDDEN",
  "INVALID_JSON",
  "INVALID_REQUEST",
  "PAYLOAD_TOO_LARGE",
  "UNSUPPORTED_MEDIA_TYPE",
  "NOT_FOUND",
  "METHOD_NOT_ALLOWED",
  "MODEL_NOT_FOUND",
  "NO_AGENT_AVAILABLE",
  "QUEUE_FULL",
  "QUEUE_TIMEOUT",
  "RATE_LIMITED",
  "AGENT_REVOKED",
  "UPGRADE_REQUIRED",
  "UPSTREAM_ERROR",
  "GATEWAY_TIMEOUT",
  "CONTEXT_OVERFLOW",
  "BREAKER_NOT_FOUND",
  "SLOW_CONSUMER",
  "INTERNAL",
]);
export type ErrorCode = z.infer<typeof ErrorCode>;

export const ErrorBody = z.object({
  error: z.object({ code: ErrorCode, message: z.string(), requestId: z.string() }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;

/** The OpenAI error body used on /v1/*. `code` carries the same stable code as ErrorBody. */
export const OpenAIErrorBody = z.object({
  error: z.object({
    message: z.string(),
    type: z.string(),
    param: z.string().nullable(),
    code: ErrorCode,
  }),
});

const stop = z.union([
  z.string().min(1).max(Limits.maxStopChars),
  z.array(z.string().min(1).max(Limits.maxStopChars)).max(Limits.maxStopSequences),
]);

// ---- POST /generate ----

export const GenerateRequest = z.strictObject({
  prompt: z.string().min(1).max(Limits.maxPromptChars),
  model: ModelName.optional(),
  max_tokens: z.number().int().min(1).max(Limits.maxTokens).default(128),
  temperature: z.number().min(0).max(2).optional(),
  top_p: z.number().gt(0).max(1).optional(),
  seed: z.number().int().optional(),
  stop: stop.optional(),
  stream: z.boolean().default(false),
});
export type GenerateRequest = z.infer<typeof GenerateRequest>;

export const GenerateResponse = z.object({
  text: z.string(),
  tokens_generated: z.number().int(),
  prompt_tokens: z.number().int(),
  finish_reason: z.enum(["stop", "length", "cancelled"]),
  latency_ms: z.number(),
  model_name: z.string(),
  request_id: z.string(),
});
export type GenerateResponse = z.infer<typeof GenerateResponse>;

// ---- POST /v1/chat/completions (OpenAI-compatible) ----

/** OpenAI content may be a string or an array of parts; only text parts are supported. */
const ChatContent = z.union([
  z.string().max(Limits.maxPromptChars),
  z
    .array(z.object({ type: z.literal("text"), text: z.string().max(Limits.maxPromptChars) }))
    .max(64)
    .transform((parts) => parts.map((p) => p.text).join("")),
]);

export const ChatCompletionMessage = z.object({
  role: z.enum(["system", "developer", "user", "assistant"]),
  content: ChatContent.nullable().transform((c) => c ?? ""),
  name: z.string().max(64).optional(),
});

/**
 * Unknown fields are accepted and ignored (OpenAI clients send many optional ones); fields whose
 * meaning Orchard cannot honour (n > 1, tools) are rejected rather than silently ignored.
 */
export const ChatCompletionRequest = z
  .object({
    model: ModelName,
    messages: z.array(ChatCompletionMessage).min(1).max(Limits.maxMessages),
    max_tokens: z.number().int().min(1).max(Limits.maxTokens).nullish(),
    max_completion_tokens: z.number().int().min(1).max(Limits.maxTokens).nullish(),
    temperature: z.number().min(0).max(2).nullish(),
    top_p: z.number().gt(0).max(1).nullish(),
    stop: stop.nullish(),
    seed: z.number().int().nullish(),
    n: z.literal(1).nullish(),
    stream: z.boolean().nullish(),
    stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
    user: z.string().max(256).optional(),
    tools: z.undefined({ message: "tools are not supported" }).optional(),
  })
  .loose()
  .refine((r) => r.messages.reduce((n, m) => n + m.content.length, 0) <= Limits.maxPromptChars, {
    message: `messages exceed ${Limits.maxPromptChars} characters in total`,
    path: ["messages"],
  });
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

// ---- GET /health, /ready, /agents ----

export const HealthResponse = z.object({
  status: z.enum(["ok", "degraded"]),
  version: z.string(),
  d1: z.enum(["ok", "error"]),
  agentsConnected: z.number().int(),
});

// ---- /circuit-breaker (role admin) ----

export const BreakerState = z.enum(["closed", "open", "half_open"]);

export const BreakerStatusResponse = z.object({
  breakers: z.array(
    z.object({
      agentId: z.string(),
      /** null: the agent's own breaker (disconnects, timeouts); else the agent+model breaker. */
      model: z.string().nullable(),
      state: BreakerState,
      /** Counts within the rolling window (BREAKER_WINDOW_MS). */
      failures: z.number().int(),
      successes: z.number().int(),
      calls: z.number().int(),
      failureRate: z.number(),
      /** Epoch ms. */
      openedAt: z.number().nullable(),
      lastTransitionAt: z.number(),
      nextAttemptAt: z.number().nullable(),
    }),
  ),
});
export type BreakerStatusResponse = z.infer<typeof BreakerStatusResponse>;

/** {} resets every breaker; {agentId} that agent's (its own and its per-model ones); {agentId, model} one. */
export const BreakerResetRequest = z
  .strictObject({ agentId: z.string().min(1).max(128).optional(), model: ModelName.optional() })
  .refine((r) => r.model === undefined || r.agentId !== undefined, {
    message: "model requires agentId",
    path: ["model"],
  });
export type BreakerResetRequest = z.infer<typeof BreakerResetRequest>;

export const BreakerResetResponse = z.object({ reset: z.number().int() });
