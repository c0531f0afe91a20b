// The internal interface between the Worker and its pool's AgentHub (never seen by callers).
//
//   POST https://hub/dispatch  body: DispatchRequest (JSON)
//     -> 4xx/5xx + DispatchErrorBody (+ Retry-After) when the request cannot be served, decided
//        before anything streams: MODEL_NOT_FOUND, NO_AGENT_AVAILABLE, QUEUE_FULL, QUEUE_TIMEOUT,
//        GATEWAY_TIMEOUT, or an agent failure before the first chunk (after up to
//        DISPATCH_MAX_ATTEMPTS attempts on different agents).
//     -> 200 with the caller's answer, rendered by the hub (inference/render.ts) in the shape
//        DispatchRequest.response names, which the Worker passes on untouched. Streamed: from the
//        first chunk on, SSE written as the agent's frames arrive, ending with the API's done or
//        error messages; cancelling the body cancels the generation on the agent. Not streamed:
//        once the agent is done, the whole JSON answer (a failure is still an error status).
//        Headers: Content-Type, X-Orchard-Model (the model that answers) and X-Orchard-Fallback
//        (the requested model, when a fallback answers).
//   GET  https://hub/connect   (Upgrade: websocket, X-Orchard-Agent-Id/-Name, X-Orchard-Pool)
//     -> 101, the agent's socket accepted with the hibernation API.
//   RPC  snapshot()            -> HubSnapshot (agents, models, queue, counters).
import { z } from "zod";
import { ErrorCode } from "../../schema/api.ts";
import {
  ChatMessage,
  type EngineName,
  type HealthFrame,
  type ModelInfo,
  ModelName,
  SamplingParams,
} from "../../schema/protocol.ts";
import { ResponseShape } from "../inference/render.ts";

export const DispatchRequest = z
  .object({
    requestId: z.string().min(1).max(100),
    /** Omitted: the pool's default model (DEFAULT_MODEL, else the first model any agent serves). */
    model: ModelName.optional(),
    prompt: z.string().optional(),
    messages: z.array(ChatMessage).min(1).optional(),
    params: SamplingParams,
    /** The request's deadline from now (queue wait + generation); omitted: REQUEST_TIMEOUT_MS. */
    timeoutMs: z.number().int().positive().optional(),
    /** What the caller gets back: which API, streamed or not. */
    response: ResponseShape,
  })
  .refine((r) => (r.prompt === undefined) !== (r.messages === undefined), {
    message: "exactly one of prompt or messages",
  });
export type DispatchRequest = z.infer<typeof DispatchRequest>;

/**
 * The hub's check of a DispatchRequest: only this Worker's routes build one, from a body they
 * already validated, so the hub checks the shape it relies on instead of running the schema again
 * (zod 4 without code generation, as in Workers, cost ~4% of workerd's CPU per request here).
 * A request from a Worker of another version fails here with a clear 400, not deeper inside.
 */
export function isDispatchRequest(value: unknown): value is DispatchRequest {
  if (typeof value !== "object" || value === null) return false;
  const r = value as Record<string, unknown>;
  const response = r.response as Record<string, unknown> | null | undefined;
  const params = r.params as Record<string, unknown> | null | undefined;
  return (
    typeof r.requestId === "string" &&
    r.requestId.length > 0 &&
    (r.model === undefined || typeof r.model === "string") &&
    (typeof r.prompt === "string") !== Array.isArray(r.messages) &&
    (r.timeoutMs === undefined || (Number.isSafeInteger(r.timeoutMs) && (r.timeoutMs as number) > 0)) &&
    typeof params === "object" &&
    params !== null &&
    Number.isSafeInteger(params.maxTokens) &&
    typeof response === "object" &&
    response !== null &&
    (response.api === "generate" || response.api === "chat") &&
    typeof response.stream === "boolean" &&
    typeof response.includeUsage === "boolean" &&
    typeof response.requestId === "string" &&
    typeof response.receivedAt === "number"
  );
}

export const DispatchErrorBody = z.object({ code: ErrorCode, message: z.string() });
export type DispatchErrorBody = z.infer<typeof DispatchErrorBody>;

export const HubHeader = {
  agentId: "X-Orchard-Agent-Id",
  agentName: "X-Orchard-Agent-Name",
  pool: "X-Orchard-Pool",
  /** The agent token's `exp` (epoch seconds): the hub closes the socket with UNAUTHORIZED then. */
  tokenExp: "X-Orchard-Token-Exp",
  model: "X-Orchard-Model",
  fallback: "X-Orchard-Fallback",
} as const;

export const DEFAULT_POOL = "default";

export interface AgentSummary {
  id: string;
  name: string;
  pool: string;
  sessionId: string;
  /** False until the agent's `hello` arrived. */
  ready: boolean;
  agentVersion: string | null;
  engines: EngineName[];
  /** What the agent announced (hello, health, loaded/unloaded), sorted by name. */
  models: ModelInfo[];
  capacity: number;
  /** Requests the hub has on this agent now. */
  inFlight: number;
  /** Requests cancelled but not yet answered by the agent: they still take a slot (of capacity). */
  cancelling: number;
  draining: boolean;
  /** The agent-level circuit breaker (per-model ones: GET /circuit-breaker/status). */
  breaker: "closed" | "open" | "half_open";
  connectedAt: string;
  latencyMs: number | null;
  /** Frames the hub handled from this agent since the connection (or the hub) woke. */
  framesReceived: number;
  /** The agent's latest `health` frame as received, and when. */
  lastHealth: { at: string; frame: HealthFrame } | null;
}

export interface HubSnapshot {
  agents: AgentSummary[];
  /** Models some connected, non-draining agent serves, with when the pool first saw them. */
  models: { id: string; firstSeenAt: number }[];
  queue: { total: number; byModel: Record<string, number> };
  metrics: HubMetrics;
}

export interface HubMetrics {
  requests: Record<RequestOutcome, number>;
  /** Attempts after the first, on another agent, for failures before the first chunk. */
  retries: number;
  /** Requests served by a MODEL_FALLBACKS model. */
  fallbacks: number;
  tokens: { prompt: number; completion: number };
}

export type RequestOutcome =
  | "ok"
  | "upstream_error"
  | "cancelled"
  | "queue_full"
  | "queue_timeout"
  | "timeout"
  | "slow_consumer"
  | "no_agent"
  | "model_not_found";
