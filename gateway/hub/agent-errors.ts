// What a caller is told when an agent fails, and what the failure counts against. Agents' own
// messages carry details of the Mac (model file paths, engine internals) and agent ids name the
// fleet's machines: callers get the stable code with a fixed message per failure, and the detail
// goes to the log line with the request id and to admins through GET /agents (lastError).
import type { ErrorCode } from "../../schema/api.ts";
import type { AgentErrorCode } from "../../schema/protocol.ts";
import type { AttemptOutcome } from "./circuit-breaker.ts";

/** Agent error codes as the caller sees them. */
export function publicCodeFor(code: AgentErrorCode): ErrorCode {
  switch (code) {
    case "CONTEXT_OVERFLOW":
      return "CONTEXT_OVERFLOW";
    case "INVALID_REQUEST":
      return "INVALID_REQUEST";
    case "MODEL_NOT_FOUND":
      return "MODEL_NOT_FOUND";
    default:
      return "UPSTREAM_ERROR";
  }
}

/** The one message a caller sees for an agent's error code. */
export function publicMessageFor(code: AgentErrorCode): string {
  switch (code) {
    case "CONTEXT_OVERFLOW":
      return "the prompt does not fit the model's context window";
    case "INVALID_REQUEST":
      return "the model server refused the request as invalid";
    case "MODEL_NOT_FOUND":
      return "the model is not available on the agent that was chosen";
    case "MODEL_LOAD_FAILED":
      return "the model could not be loaded";
    case "AGENT_BUSY":
    case "AGENT_DRAINING":
    case "DUPLICATE_REQUEST":
      return "no agent could take the request";
    case "CANCELLED":
      return "the generation was cancelled by the agent";
    case "ENGINE_ERROR":
      return "the model server failed while generating";
  }
}

/** Fixed messages for failures the hub observes itself (no agent ids, no agent text). */
export const PublicMessage = {
  agentLostMidStream: "the agent serving this request disconnected mid-stream",
  agentLostBeforeAnswer: "the agent serving this request disconnected before answering",
  firstChunkTimeout: "the agent did not start answering in time",
  idleTimeout: "the agent stopped sending output",
  limitExceeded: "the agent sent more output than the request allows",
  deadline: "the request's deadline passed",
  deadlineQueued: "the request's deadline passed while it was queued",
} as const;

/**
 * Which breaker an agent's error counts against: model trouble counts toward agent+model; a busy
 * or draining agent, a cancelled request, a duplicate and the caller's own mistakes say nothing
 * about health.
 */
export function breakerOutcomeFor(code: AgentErrorCode): AttemptOutcome {
  switch (code) {
    case "MODEL_LOAD_FAILED":
    case "ENGINE_ERROR":
    case "MODEL_NOT_FOUND":
      return "model_failure";
    default:
      return "neutral";
  }
}
