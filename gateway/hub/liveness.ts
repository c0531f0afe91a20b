// Whether a connected agent must be closed now, and with which code: its token expired, it never
// said hello, or it went silent past the heartbeat timeout. Pure; the AgentHub closes what it says.
import { CloseCode } from "../../schema/protocol.ts";

export interface LivenessConfig {
  helloTimeoutMs: number;
  heartbeatTimeoutMs: number;
}

export interface AgentLiveness {
  ready: boolean;
  connectedAt: number;
  /** Epoch ms; null when unknown. */
  tokenExpiresAt: number | null;
  /** The last frame or answered ping. */
  lastActivity: number;
}

export function livenessVerdict(
  agent: AgentLiveness,
  now: number,
  config: LivenessConfig,
): { code: CloseCode; reason: string } | null {
  if (agent.tokenExpiresAt !== null && agent.tokenExpiresAt <= now) {
    return { code: CloseCode.UNAUTHORIZED, reason: "token expired" };
  }
  if (!agent.ready) {
    return now - agent.connectedAt >= config.helloTimeoutMs
      ? { code: CloseCode.HELLO_TIMEOUT, reason: `no hello within ${config.helloTimeoutMs} ms` }
      : null;
  }
  // At the timeout itself, not after it: the alarm is set for exactly that moment (next-alarm.ts).
  return now - agent.lastActivity >= config.heartbeatTimeoutMs
    ? { code: CloseCode.HEARTBEAT_TIMEOUT, reason: "heartbeat timeout" }
    : null;
}
