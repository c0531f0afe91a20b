// The frames the agent writes for one request's failure, and the one way it writes any frame.
import type { AgentErrorCode, AgentFrame, ErrorFrame } from "../schema/protocol.ts";
import type { Link } from "./connection.ts";
import { agentErrorCode, EngineError } from "./engines/engine.ts";

export function sendFrame(link: Link, frame: AgentFrame): void {
  link.send(JSON.stringify(frame));
}

export function errorFrame(
  id: string,
  code: AgentErrorCode,
  message: string,
  retryable: boolean,
): ErrorFrame {
  return { type: "error", id, code, message: message.slice(0, 2000), retryable };
}

/** Engine errors keep their stable code and message; anything else becomes a generic ENGINE_ERROR. */
export function toErrorFrame(id: string, err: unknown): ErrorFrame {
  if (err instanceof EngineError) return errorFrame(id, agentErrorCode(err.code), err.message, err.retryable);
  return errorFrame(id, "ENGINE_ERROR", "the engine failed while generating", false);
}
