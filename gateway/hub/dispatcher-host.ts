// What the Dispatcher needs from the AgentHub that owns it: settings, the pool's breakers,
// counters and connections, and the I/O (frames, closes, alarms, the clock) it must not do itself.

import type { ErrorCode } from "../../schema/api.ts";
import type { DispatchRequest, RequestOutcome } from "../../schema/hub.ts";
import type { ModelId } from "../../schema/model-id.ts";
import type { CloseCode, GatewayFrame } from "../../schema/protocol.ts";
import type { RoutingTable } from "../../schema/registry.ts";
import type { GatewayConfig } from "../config.ts";
import type { AgentConnection } from "./agent-connection.ts";
import type { CircuitBreakers } from "./circuit-breakers.ts";
import type { HubCounters } from "./hub-metrics.ts";
import type { InferenceJob } from "./inference-job.ts";
import type { RolloutAssignment } from "./routing-table.ts";

export type DispatcherConfig = Pick<
  GatewayConfig,
  | "queueMax"
  | "queueTimeoutMs"
  | "defaultModel"
  | "dispatchMaxAttempts"
  | "requestTimeoutMs"
  | "requestTimeoutMaxMs"
  | "firstChunkTimeoutMs"
  | "idleChunkTimeoutMs"
  | "streamBufferMaxBytes"
  | "modelFallbacks"
  | "security"
>;

export interface DispatcherHost {
  config: DispatcherConfig;
  breakers: CircuitBreakers;
  counters: HubCounters;
  /** Every connection of the pool, ready or not. */
  connections(): Iterable<AgentConnection>;
  /** The current connection of an agent id, if any. */
  connection(agentId: string): AgentConnection | undefined;
  knownModels(): { has(model: ModelId): boolean };
  /** The registry's routing table as the hub holds it now (routing-table.ts). */
  routingTable(): RoutingTable;
  /** The pool's Prometheus counters (retries and fallbacks per model; the rest on finished()). */
  telemetry: { retry(model: string): void; fallback(model: string): void };
  /** A request refused before it became a job (404, 503 with no agent): counted in metrics. */
  refused(request: DispatchRequest, outcome: RequestOutcome, code: ErrorCode, now: number): void;
  /** A request ended (any outcome): live metrics per version, rollout statistics per arm. */
  finished(job: InferenceJob, outcome: RequestOutcome, now: number): void;
  /**
   * A rollout assigned a request to an arm (counted for the sample-ratio check); `counted` false
   * when another arm or a fallback serves it instead, so it stays out of the arm's statistics.
   */
  rolloutAssigned(assignment: RolloutAssignment, counted: boolean): void;
  /**
   * The assigned arm could not take a request because every breaker for its version is open: the
   * request it would have failed counts as that arm's error (served by the other arm meanwhile).
   */
  rolloutShed(assignment: RolloutAssignment, subject: string): void;
  /** Sends a frame; false when the socket failed (the host then reports the agent lost). */
  send(agent: AgentConnection, frame: GatewayFrame): boolean;
  /** Closes an agent that broke the protocol; the host then reports it lost (agentLost()). */
  close(agent: AgentConnection, code: CloseCode, reason: string): void;
  /** Asks to be woken (expire()) no later than `at`. */
  wakeAt(at: number): void;
  now(): number;
}
