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
  "UNSUPPORTED_PARAMETER",
  "AGENT_NOT_FOUND",
  "POOL_NOT_CONFIGURED",
  // the model registry (/models)
  "INVALID_MODEL_NAME",
  "INVALID_VERSION",
  "INVALID_MODEL_ID",
  "INVALID_ALIAS",
  "INVALID_TAG",
  "INVALID_METRICS",
  "INVALID_TIME",
  "METADATA_TOO_LARGE",
  "PARENT_NOT_FOUND",
  "VERSION_NOT_FOUND",
  "ALIAS_NOT_FOUND",
  "VERSION_EXISTS",
  "VERSION_ARCHIVED",
  "VERSION_ACTIVE",
  "NO_PREVIOUS_VERSION",
  "ACTIVATION_NOT_READY",
  "SOURCE_NOT_ARTIFACT",
  "ARTIFACT_EXISTS",
  "ARTIFACT_NOT_FOUND",
  "ARTIFACT_SIZE_MISMATCH",
  "ARTIFACT_HASH_MISMATCH",
  "ARTIFACT_TOO_LARGE",
  "RANGE_NOT_SATISFIABLE",
  "MODEL_ARCHIVED",
  // deployments and A/B tests (/deployments, /ab-tests, /feedback)
  "ROLLOUT_IN_PROGRESS",
  "NOTHING_TO_DEPLOY",
  "VERSION_NOT_ACTIVE",
  "DEPLOYMENT_NOT_FOUND",
  "DEPLOYMENT_NOT_RUNNING",
  "DEPLOYMENT_NOT_PAUSED",
  "COMMAND_NOT_ALLOWED",
  "AB_TEST_NOT_FOUND",
  "AB_TEST_EXISTS",
  "AB_TEST_NOT_RUNNING",
  "REQUEST_NOT_FOUND",
  "FEEDBACK_FORBIDDEN",
  "FEEDBACK_EXISTS",
  // input and output security (gateway/security): a prompt the injection rules or a content filter refuse
  "PROMPT_INJECTION",
  "CONTENT_FILTERED",
  // authentication: token revocation (/tokens) and key sources (JWKS)
  "TOKEN_REVOKED",
  "AUTH_UNAVAILABLE",
  "REVOCATION_NOT_FOUND",
  "TOO_MANY_REVOCATIONS",
  // structured outputs and tools (/generate/structured, response_format, tools, /schemas)
  "INVALID_SCHEMA",
  "UNSUPPORTED_SCHEMA_KEYWORD",
  "SCHEMA_REMOTE_REF",
  "SCHEMA_TOO_LARGE",
  "SCHEMA_NOT_FOUND",
  "SCHEMA_EXISTS",
  "UNKNOWN_TOOL",
  "TOOL_CALL_MISMATCH",
  "STRUCTURED_OUTPUT_INVALID",
  "INTERNAL",
]);
export type ErrorCode = z.infer<typeof ErrorCode>;

/**
 * A schema's issue that carries its own stable code (the json-body middleware answers with it
 * instead of INVALID_REQUEST): `ctx.addIssue({ code: "custom", message, params: { code } })`.
 */
export interface CodedIssueParams {
  code: ErrorCode;
}

/** The `role` claim of a token: `user` (inference), `admin` (control plane, and all a user may), `agent`. */
export const Role = z.enum(["user", "admin", "agent"]);
export type Role = z.infer<typeof Role>;

export const ErrorBody = z.object({
  error: z.object({
    code: ErrorCode,
    message: z.string(),
    requestId: z.string(),
    /** Facts about the failure for programs (STRUCTURED_OUTPUT_INVALID: errors, raw, attempts). */
    details: z.record(z.string(), z.unknown()).optional(),
  }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;

/** The OpenAI error body used on /v1/*. `code` carries the same stable code as ErrorBody. */
export const OpenAIErrorBody = z.object({
  error: z.object({
    message: z.string(),
    type: z.string(),
    param: z.string().nullable(),
    code: ErrorCode,
    /** As ErrorBody's (STRUCTURED_OUTPUT_INVALID: errors, raw, attempts); the SDKs keep it in `error`. */
    details: z.record(z.string(), z.unknown()).optional(),
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

/** OpenAI's rule for a function's name (tools, tool_choice, tool calls). */
export const FUNCTION_NAME_PATTERN = /^[a-zA-Z0-9_-]{1,64}$/;
const FunctionName = z.string().regex(FUNCTION_NAME_PATTERN, `must match ${FUNCTION_NAME_PATTERN.source}`);

/** A JSON Schema as the caller sent it; the gateway checks it (gateway/structured/schema-check.ts). */
const JsonSchemaObject = z.record(z.string(), z.unknown());

/** The most tools one request may define (README "Structured outputs and tools"). */
export const MAX_TOOLS = 128;

/** A call the model made, as an assistant message of the conversation carries it. */
export const ChatToolCall = z.object({
  id: z.string().min(1).max(256),
  type: z.literal("function"),
  function: z.object({
    name: FunctionName,
    /** The arguments as JSON text (OpenAI's shape); rendered to the model as they are. */
    arguments: z.string().max(Limits.maxPromptChars),
  }),
});
export type ChatToolCall = z.infer<typeof ChatToolCall>;

/**
 * One message of a chat. Assistant messages may carry the `tool_calls` the model made (their
 * content may then be null); `tool` messages answer one of those calls by its `tool_call_id`.
 */
export const ChatCompletionMessage = z
  .object({
    role: z.enum(["system", "developer", "user", "assistant", "tool"]),
    content: ChatContent.nullable().transform((c) => c ?? ""),
    name: z.string().max(64).optional(),
    tool_calls: z.array(ChatToolCall).max(MAX_TOOLS).nullish(),
    tool_call_id: z.string().min(1).max(256).nullish(),
  })
  .superRefine((m, ctx) => {
    if (m.role === "tool" && m.tool_call_id == null) {
      ctx.addIssue({
        code: "custom",
        message: "a tool message needs the tool_call_id it answers",
        path: ["tool_call_id"],
      });
    }
    if (m.role !== "tool" && m.tool_call_id != null) {
      ctx.addIssue({
        code: "custom",
        message: "only tool messages answer a tool call",
        path: ["tool_call_id"],
      });
    }
    if (m.role !== "assistant" && m.tool_calls != null) {
      ctx.addIssue({
        code: "custom",
        message: "only assistant messages make tool calls",
        path: ["tool_calls"],
      });
    }
  });
export type ChatCompletionMessage = z.infer<typeof ChatCompletionMessage>;

/** `response_format`: free text, any JSON object, or JSON valid against the caller's schema. */
export const ChatResponseFormat = z.discriminatedUnion("type", [
  z.object({ type: z.literal("text") }),
  z.object({ type: z.literal("json_object") }),
  z.object({
    type: z.literal("json_schema"),
    json_schema: z.object({
      name: FunctionName,
      description: z.string().max(4096).nullish(),
      /** Absent: any JSON object, as with json_object. */
      schema: JsonSchemaObject.nullish(),
      /** Accepted either way: Orchard always validates, and enforces where the engine can. */
      strict: z.boolean().nullish(),
    }),
  }),
]);
export type ChatResponseFormat = z.infer<typeof ChatResponseFormat>;

export const ChatTool = z.object({
  type: z.string().superRefine((type, ctx) => {
    if (type !== "function") {
      ctx.addIssue({
        code: "custom",
        message: `only function tools are supported, not ${JSON.stringify(type.slice(0, 32))}`,
        params: { code: "UNSUPPORTED_PARAMETER" } satisfies CodedIssueParams,
      });
    }
  }),
  function: z.object({
    name: FunctionName,
    description: z.string().max(4096).nullish(),
    /** The arguments' JSON Schema; absent: a function without parameters (an empty object). */
    parameters: JsonSchemaObject.nullish(),
    strict: z.boolean().nullish(),
  }),
});
export type ChatTool = z.infer<typeof ChatTool>;

export const ChatToolChoice = z.union([
  z.enum(["none", "auto", "required"]),
  z.object({ type: z.literal("function"), function: z.object({ name: z.string().max(256) }) }),
]);
export type ChatToolChoice = z.infer<typeof ChatToolChoice>;

/**
 * A field that changes what a chat request means and that Orchard does not implement yet. Its
 * absence, null, or a value that asks for nothing (`neutral`) is accepted; anything else is
 * UNSUPPORTED_PARAMETER, never silently dropped: a caller that asked for JSON, tool calls or
 * log probabilities must not get unconstrained text back as if it had.
 */
function unsupported(message: string, neutral: (value: unknown) => boolean = () => false) {
  return z
    .unknown()
    .superRefine((value, ctx) => {
      if (value === null || neutral(value)) return;
      ctx.addIssue({
        code: "custom",
        message,
        params: { code: "UNSUPPORTED_PARAMETER" } satisfies CodedIssueParams,
      });
    })
    .optional();
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);
const isEmptyObject = (v: unknown) => isObject(v) && Object.keys(v).length === 0;

/**
 * Fields Orchard cannot honour yet, with the value that means "none of it". Each is rejected with
 * UNSUPPORTED_PARAMETER naming it (README "Endpoints").
 */
const UnsupportedChatFields = {
  functions: unsupported("the legacy function calling is not supported (use tools)"),
  function_call: unsupported(
    'only "none" is supported (the legacy function calling is not: use tool_choice)',
    (v) => v === "none",
  ),
  logprobs: unsupported("log probabilities are not supported", (v) => v === false),
  top_logprobs: unsupported("log probabilities are not supported"),
  audio: unsupported("audio output is not supported"),
  modalities: unsupported(
    'only ["text"] is supported',
    (v) => Array.isArray(v) && v.every((m) => m === "text"),
  ),
  prediction: unsupported("predicted outputs are not supported"),
  logit_bias: unsupported("logit bias is not supported", isEmptyObject),
  web_search_options: unsupported("web search is not supported"),
};

/**
 * Unknown fields are accepted and ignored (OpenAI clients send many optional ones, most of them
 * bookkeeping like `store` or `metadata`); fields that change the request's meaning and that
 * Orchard cannot honour yet (UnsupportedChatFields, n > 1) are rejected, never silently ignored.
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
    n: z
      .number()
      .int()
      .min(1)
      .nullish()
      .superRefine((n, ctx) => {
        if (n != null && n > 1) {
          ctx.addIssue({
            code: "custom",
            message: "only 1 choice per request is supported",
            params: { code: "UNSUPPORTED_PARAMETER" } satisfies CodedIssueParams,
          });
        }
      }),
    stream: z.boolean().nullish(),
    stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
    user: z.string().max(256).optional(),
    response_format: ChatResponseFormat.nullish(),
    tools: z.array(ChatTool).max(MAX_TOOLS).nullish(),
    tool_choice: ChatToolChoice.nullish(),
    parallel_tool_calls: z.boolean().nullish(),
    ...UnsupportedChatFields,
  })
  .loose()
  .refine((r) => chatChars(r.messages) <= Limits.maxPromptChars, {
    message: `messages exceed ${Limits.maxPromptChars} characters in total`,
    path: ["messages"],
  })
  .superRefine(checkToolReferences);
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

function chatChars(messages: readonly ChatCompletionMessage[]): number {
  let n = 0;
  for (const m of messages) {
    n += m.content.length;
    for (const call of m.tool_calls ?? []) n += call.function.name.length + call.function.arguments.length;
  }
  return n;
}

/**
 * What refers to something else must find it: tool names are unique, a named tool_choice is one
 * of `tools` (UNKNOWN_TOOL), "required" needs tools, and a tool message answers a call an earlier
 * assistant message made (TOOL_CALL_MISMATCH, param messages.N.tool_call_id).
 */
function checkToolReferences(
  r: { tools?: ChatTool[] | null; tool_choice?: ChatToolChoice | null; messages: ChatCompletionMessage[] },
  ctx: z.RefinementCtx,
): void {
  const names = new Set<string>();
  for (const [i, tool] of (r.tools ?? []).entries()) {
    if (names.has(tool.function.name)) {
      ctx.addIssue({
        code: "custom",
        message: `the function ${tool.function.name} is defined twice`,
        path: ["tools", i, "function", "name"],
      });
    }
    names.add(tool.function.name);
  }
  const choice = r.tool_choice;
  if (typeof choice === "object" && choice !== null && !names.has(choice.function.name)) {
    ctx.addIssue({
      code: "custom",
      message: `tool_choice names the function ${JSON.stringify(choice.function.name.slice(0, 64))}, which tools does not define`,
      path: ["tool_choice", "function", "name"],
      params: { code: "UNKNOWN_TOOL" } satisfies CodedIssueParams,
    });
  }
  if (choice === "required" && names.size === 0) {
    ctx.addIssue({ code: "custom", message: 'tool_choice "required" needs tools', path: ["tool_choice"] });
  }
  const called = new Set<string>();
  for (const [i, m] of r.messages.entries()) {
    for (const call of m.tool_calls ?? []) called.add(call.id);
    if (m.role === "tool" && m.tool_call_id != null && !called.has(m.tool_call_id)) {
      ctx.addIssue({
        code: "custom",
        message: `no earlier assistant message made the tool call ${JSON.stringify(m.tool_call_id.slice(0, 64))}`,
        path: ["messages", i, "tool_call_id"],
        params: { code: "TOOL_CALL_MISMATCH" } satisfies CodedIssueParams,
      });
    }
  }
}

// ---- circuit breakers: GET /agents (each agent's own) and /circuit-breaker ----

/** The one definition of a breaker's state (the hub's breakers, /agents, /circuit-breaker/status). */
export const BreakerState = z.enum(["closed", "open", "half_open"]);
export type BreakerState = z.infer<typeof BreakerState>;

// ---- GET /health, /ready (no token) ----

export const HealthResponse = z.object({
  /** "degraded" when D1 or any configured pool's hub did not answer. */
  status: z.enum(["ok", "degraded"]),
  version: z.string(),
  d1: z.enum(["ok", "error"]),
  /** Agents that said hello, over every pool. */
  agentsConnected: z.number().int(),
  /** The fleet's health score, 0-100 (GET /performance/report says what lowers it). */
  healthScore: z.number().int().min(0).max(100).optional(),
  /** Per configured pool: whether its hub answered, its own score, what it serves and with how many agents. */
  pools: z
    .array(
      z.object({
        pool: z.string(),
        reachable: z.boolean(),
        /** null when the pool's hub did not report its numbers. */
        healthScore: z.number().int().min(0).max(100).nullable(),
        /** Models the pool's ready, not draining agents serve, each with how many serve it. */
        models: z.array(z.object({ id: z.string(), agents: z.number().int() })),
      }),
    )
    .optional(),
});
export type HealthResponse = z.infer<typeof HealthResponse>;

export const ReadyResponse = z.object({
  /** D1 answers and at least one pool has a connected agent serving a model. */
  ready: z.boolean(),
  /** Why not, when not. */
  reason: z.string().optional(),
  d1: z.enum(["ok", "error"]),
  /** Models served now, over every pool (sorted, each once). */
  models: z.array(z.string()),
  pools: z.array(
    z.object({
      pool: z.string(),
      /** False when the pool's hub did not answer (its models are then unknown, not absent). */
      reachable: z.boolean(),
      models: z.array(z.string()),
    }),
  ),
});
export type ReadyResponse = z.infer<typeof ReadyResponse>;

// ---- /agents/:id/revoke, /restore, /events (role admin) ----

/** An agent id as the path names it: its token's `sub`. */
export const AgentId = z.string().min(1).max(128);

/** Optional body of POST /agents/:id/revoke and /restore (no body: no reason). */
export const AgentRevocationRequest = z.strictObject({
  reason: z.string().trim().min(1).max(256).optional(),
});
export type AgentRevocationRequest = z.infer<typeof AgentRevocationRequest>;

export const AgentRevocation = z.object({
  agentId: z.string(),
  revoked: z.boolean(),
  /** When the agent was first revoked (a repeated revoke keeps it); null when not revoked. */
  revokedAt: z.string().nullable(),
  /** The admin (token `sub`) who revoked it. */
  revokedBy: z.string().nullable(),
  reason: z.string().nullable(),
});
export type AgentRevocation = z.infer<typeof AgentRevocation>;

export const AgentRevokeResponse = AgentRevocation.extend({
  /** Whether a live connection of the agent was closed (REVOKED, 4002). */
  disconnected: z.boolean(),
});
export type AgentRevokeResponse = z.infer<typeof AgentRevokeResponse>;

/** One row of the audit trail (D1 audit_log), newest first. */
export const AuditEvent = z.object({
  id: z.number().int(),
  at: z.string(),
  actor: z.string(),
  actorRole: z.string(),
  /** "<kind>.<verb>": "agent.revoke", "model.activate", "token.revoke" (gateway/middleware/audit/actions.ts). */
  action: z.string(),
  /** "<kind>:<id>": "agent:mini-3", "model:llama:1.0.0", "deployment:<id>". */
  target: z.string(),
  requestId: z.string(),
  detail: z.record(z.string(), z.unknown()),
});
export type AuditEvent = z.infer<typeof AuditEvent>;

export const AgentEventsResponse = z.object({
  agentId: z.string(),
  /** The agent's row as it stands. */
  agent: AgentRevocation.extend({ pool: z.string(), lastSeenAt: z.string().nullable() }),
  events: z.array(AuditEvent),
});
export type AgentEventsResponse = z.infer<typeof AgentEventsResponse>;

// ---- /circuit-breaker (role admin) ----

export const BreakerStatusResponse = z.object({
  breakers: z.array(
    z.object({
      /** The pool whose hub keeps the breaker. */
      pool: z.string(),
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
  /** Pools whose hub did not answer: their breakers are missing. */
  unreachablePools: z.array(z.string()).optional(),
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

export const BreakerResetResponse = z.object({
  reset: z.number().int(),
  /** Pools whose hub did not answer: their breakers were not reset (the reset can be repeated). */
  unreachablePools: z.array(z.string()).optional(),
});

// ---- /tokens (role admin): revoking user tokens before they expire ----

/** A token's `jti` as the deny-list keeps it. */
export const TokenId = z.string().min(1).max(256);

/** POST /tokens/revoke: exactly one of `jti` (one token) or `sub` (every token of a subject). */
export const TokenRevokeRequest = z
  .strictObject({
    jti: TokenId.optional(),
    sub: z.string().min(1).max(128).optional(),
    reason: z.string().trim().min(1).max(256).optional(),
    /** When the revocation lapses by itself (ISO 8601, in the future); absent: until lifted. */
    until: z.iso.datetime({ offset: true }).optional(),
  })
  .refine((r) => (r.jti === undefined) !== (r.sub === undefined), {
    message: "give exactly one of jti and sub",
    path: ["jti"],
  });
export type TokenRevokeRequest = z.infer<typeof TokenRevokeRequest>;

export const TokenRevocation = z.object({
  id: z.number().int(),
  /** The revoked token's id; null for a subject's revocation. */
  jti: z.string().nullable(),
  /** The revoked subject; null for one token's revocation. */
  sub: z.string().nullable(),
  reason: z.string().nullable(),
  /** When it lapses by itself; null: until lifted (DELETE /tokens/revoked/{id}). */
  until: z.string().nullable(),
  revokedAt: z.string(),
  /** The admin (token `sub`) who revoked it. */
  revokedBy: z.string(),
});
export type TokenRevocation = z.infer<typeof TokenRevocation>;

export const TokenRevokeResponse = TokenRevocation.extend({
  /** True when the same jti or sub was already revoked: this revocation replaced that one. */
  replaced: z.boolean(),
  /** Every isolate of the gateway refuses the token at most this long after the answer. */
  effectiveWithinMs: z.number().int(),
});
export type TokenRevokeResponse = z.infer<typeof TokenRevokeResponse>;

export const TokenRevocationList = z.object({
  /** Revocations in force, newest first. */
  revocations: z.array(TokenRevocation),
  /** Pass as `before` for the next page; null on the last. */
  nextBefore: z.number().int().nullable(),
});
export type TokenRevocationList = z.infer<typeof TokenRevocationList>;

export const TokenRevocationLifted = z.object({ lifted: TokenRevocation });
export type TokenRevocationLifted = z.infer<typeof TokenRevocationLifted>;

// ---- GET /audit (role admin) ----

export const AuditList = z.object({
  /** Newest first. */
  events: z.array(AuditEvent),
  /** Pass as `before` for the next page; null on the last. */
  nextBefore: z.number().int().nullable(),
});
export type AuditList = z.infer<typeof AuditList>;

/** A page of a newest-first list: at most `limit` rows with an id below `before`. */
const Page = {
  limit: z.coerce.number().int().min(1).max(500).default(50),
  before: z.coerce.number().int().min(1).optional(),
};

/** GET /tokens/revoked's query. */
export const TokenRevocationQuery = z.strictObject(Page);

/** GET /audit's query: a page, optionally of one target's, actor's or action's rows. */
export const AuditQuery = z.strictObject({
  ...Page,
  target: z.string().min(1).max(300).optional(),
  actor: z.string().min(1).max(128).optional(),
  action: z.string().min(1).max(64).optional(),
});
