// One connected agent as the hub sees it: identity and capabilities (mirrored in the socket's
// attachment so they survive hibernation) plus live state that only matters while awake.

import type { AgentSummary } from "../../schema/hub.ts";
import { isModelId, type ModelId } from "../../schema/model-id.ts";
import type {
  Capability,
  EngineInfo,
  EngineName,
  HealthFrame,
  HelloFrame,
  HostFacts,
  ModelInfo,
} from "../../schema/protocol.ts";
import type { BreakerState } from "./circuit-breaker.ts";
import type { AgentLoad } from "./scheduling.ts";

export interface AgentIdentity {
  agentId: string;
  name: string;
  pool: string;
  sessionId: string;
  connectedAt: number;
  /** When the agent's token expires (epoch ms): the hub closes the socket then. Null: unknown. */
  tokenExpiresAt: number | null;
}

export interface AgentCapabilities {
  /** The protocol version negotiated in hello/welcome. */
  protocol: number;
  /** The agent's optional features this hub uses. */
  capabilities: Capability[];
  agentVersion: string;
  name: string | undefined;
  engines: EngineName[];
  /** Absent in attachments written before hello carried it. */
  engineInfo?: EngineInfo[];
  models: ModelInfo[];
  capacity: number;
  host: HostFacts;
  helloAt: number;
}

/**
 * What a socket carries through hibernation. Workers cap an attachment at 16 KiB; capabilities
 * that do not fit (hundreds of models) go to Durable Object storage under `caps:<sessionId>`.
 */
export interface AgentAttachment extends AgentIdentity {
  caps: AgentCapabilities | null;
  capsInStorage: boolean;
  draining: boolean;
}

export const capsStorageKey = (sessionId: string) => `caps:${sessionId}`;

export class AgentConnection implements AgentLoad {
  caps: AgentCapabilities | null;
  draining: boolean;
  capsInStorage: boolean;
  /** Request ids this agent is working on. */
  readonly requests = new Set<string>();
  /**
   * Request ids the hub cancelled but the agent may still be winding down, with when the hub stops
   * waiting for the agent's `done`/`error` for them. They hold a slot: the agent counts them until
   * it answers, and refuses work beyond its capacity.
   */
  readonly releasing = new Map<string, number>();
  /** Last frame of any kind (pings are answered without waking us: see lastActivity()). */
  lastFrameAt: number;
  latencyMs: number | null = null;
  lastHealth: { at: number; frame: HealthFrame } | null = null;
  lastSeenWrittenAt = 0;
  /** Frames handled since this connection (or the hub) woke; lets operators see a stuck agent. */
  framesReceived = 0;
  /** Set once the hub forgot this connection (closed, superseded, timed out). */
  lost = false;
  /** The latest failure the agent reported or the hub saw, with its detail: for admins only. */
  lastError: AgentSummary["lastError"] = null;
  #models: Set<ModelId>;

  constructor(
    public ws: WebSocket,
    readonly identity: AgentIdentity,
    restored: Partial<Pick<AgentAttachment, "caps" | "draining" | "capsInStorage">> = {},
    now = Date.now(),
  ) {
    // An attachment written before protocol negotiation existed reads as protocol 1, no features.
    const caps = restored.caps ?? null;
    this.caps =
      caps === null ? null : { ...caps, protocol: caps.protocol ?? 1, capabilities: caps.capabilities ?? [] };
    this.draining = restored.draining ?? false;
    this.capsInStorage = restored.capsInStorage ?? false;
    this.lastFrameAt = now;
    this.#models = modelNames(this.caps);
  }

  get id(): string {
    return this.identity.agentId;
  }

  get sessionId(): string {
    return this.identity.sessionId;
  }

  /** Agents are schedulable only after `hello`. */
  get ready(): boolean {
    return this.caps !== null;
  }

  get models(): ReadonlySet<ModelId> {
    return this.#models;
  }

  get capacity(): number {
    return this.caps?.capacity ?? 0;
  }

  /** Slots taken, as the agent counts them: live requests plus cancelled ones not yet answered. */
  get inFlight(): number {
    return this.requests.size + this.releasing.size;
  }

  applyHello(
    hello: HelloFrame,
    negotiated: { protocol: number; capabilities: Capability[] },
    now: number,
  ): void {
    this.caps = {
      protocol: negotiated.protocol,
      capabilities: negotiated.capabilities,
      agentVersion: hello.agentVersion,
      name: hello.name,
      engines: hello.engines,
      engineInfo: hello.engineInfo ?? [],
      models: hello.models,
      capacity: hello.capacity,
      host: hello.host,
      helloAt: now,
    };
    this.#models = modelNames(this.caps);
  }

  setModels(models: ModelInfo[]): void {
    if (this.caps === null) return;
    this.caps = { ...this.caps, models };
    this.#models = modelNames(this.caps);
  }

  can(capability: Capability): boolean {
    return this.caps?.capabilities.includes(capability) ?? false;
  }

  /** Remembers a failure's detail for GET /agents (never shown to callers). */
  recordError(requestId: string, code: string, message: string, now: number): void {
    this.lastError = { at: new Date(now).toISOString(), requestId, code, message: message.slice(0, 500) };
  }

  attachment(): AgentAttachment {
    return { ...this.identity, caps: this.caps, capsInStorage: false, draining: this.draining };
  }

  summary(breaker: BreakerState): AgentSummary {
    return {
      id: this.id,
      name: this.caps?.name ?? this.identity.name,
      pool: this.identity.pool,
      sessionId: this.sessionId,
      ready: this.ready,
      agentVersion: this.caps?.agentVersion ?? null,
      protocol: this.caps?.protocol ?? null,
      capabilities: this.caps?.capabilities ?? [],
      engines: this.caps?.engines ?? [],
      engineInfo: this.caps?.engineInfo ?? [],
      models: [...(this.caps?.models ?? [])].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
      capacity: this.capacity,
      inFlight: this.requests.size,
      cancelling: this.releasing.size,
      draining: this.draining,
      breaker,
      connectedAt: new Date(this.identity.connectedAt).toISOString(),
      tokenExpiresAt:
        this.identity.tokenExpiresAt === null ? null : new Date(this.identity.tokenExpiresAt).toISOString(),
      latencyMs: this.latencyMs === null ? null : Math.round(this.latencyMs),
      framesReceived: this.framesReceived,
      lastHealth:
        this.lastHealth === null
          ? null
          : { at: new Date(this.lastHealth.at).toISOString(), frame: this.lastHealth.frame },
      lastError: this.lastError,
    };
  }
}

/** The models an agent serves; a name that is no model id (see model-id.ts) cannot be requested. */
function modelNames(caps: AgentCapabilities | null): Set<ModelId> {
  const names = new Set<ModelId>();
  for (const { name } of caps?.models ?? []) if (isModelId(name)) names.add(name);
  return names;
}
