// One link's session: says hello with the agent's protocol range and capabilities, keeps what the
// hub's welcome negotiated, and turns the hub's frames into work — a generate admitted to the
// in-flight table or refused with a stable code, cancel, load and unload (registry-loads.ts).
import { isModelId, type ModelId } from "../schema/model-id.ts";
import {
  type Capability,
  enforcesFormat,
  type GenerateFrame,
  type HostFacts,
  knownCapabilities,
  type LoadFrame,
  MIN_PROTOCOL_VERSION,
  parseGatewayFrame,
  type WelcomeFrame,
} from "../schema/protocol.ts";
import { errorFrame, sendFrame } from "./agent-frames.ts";
import type { Link } from "./connection.ts";
import type { Drain } from "./drain.ts";
import type { Engine } from "./engines/engine.ts";
import type { GenerationRunner } from "./generation-runner.ts";
import type { HealthReporter } from "./health-reporter.ts";
import type { InFlightTable } from "./in-flight.ts";
import { errorMessage, type Logger } from "./log.ts";
import type { RegistryLoads } from "./registry-loads.ts";

/**
 * What this agent can offer in hello whatever its engines. `artifacts` only with an artifact cache
 * (see offeredCapabilities); `structured_output` only when an engine enforces `format` (see hello).
 */
export const AGENT_CAPABILITIES: readonly Capability[] = ["load", "duplicate_answer", "artifacts"];

/** The capabilities an agent offers: all it has, less `artifacts` when it has no artifact cache. */
export function offeredCapabilities(hasArtifactCache: boolean): Capability[] {
  return AGENT_CAPABILITIES.filter((c) => c !== "artifacts" || hasArtifactCache);
}

export interface AgentStats {
  /** Gateway frames that failed validation and were ignored. */
  malformedFrames: number;
  generationsStarted: number;
  generationsFinished: number;
  refusedBusy: number;
  refusedDraining: number;
  /** `generate` frames for an id still in flight, answered with DUPLICATE_REQUEST (protocol v2+). */
  refusedDuplicate: number;
}

/** What every session of one agent shares. */
export interface SessionContext {
  /** `protocol`: the newest version offered in hello (see AgentOptions.maxProtocol). */
  identity: { agentId: string; name?: string; agentVersion: string; capacity: number; protocol: number };
  gatewayUrl: string;
  engine: Engine;
  loads: RegistryLoads;
  /** What hello offers (offeredCapabilities), structured_output aside. */
  capabilities: readonly Capability[];
  /** Offer structured_output when an engine enforces `format` (false: --structured-output off). */
  structuredOutput: boolean;
  table: InFlightTable;
  runner: GenerationRunner;
  health: HealthReporter;
  drain: Drain;
  stats: AgentStats;
  hostFacts: () => HostFacts;
  /** The hub welcomed this link: start heartbeats every `heartbeatIntervalMs`. */
  welcomed: (heartbeatIntervalMs: number) => void;
  log: Logger;
}

/** What the hub's welcome settled. Before it arrives a session reads as v1 with nothing: the safe side. */
interface Negotiated {
  protocol: number;
  capabilities: ReadonlySet<Capability>;
}

export class Session {
  private negotiated: Negotiated = { protocol: MIN_PROTOCOL_VERSION, capabilities: new Set() };
  /** What this session's hello offered. */
  private offered: readonly Capability[];

  constructor(
    readonly link: Link,
    private readonly ctx: SessionContext,
  ) {
    this.offered = ctx.capabilities;
  }

  async hello(): Promise<void> {
    const { identity, engine, log } = this.ctx;
    let models: Awaited<ReturnType<Engine["listModels"]>> = [];
    try {
      models = (await engine.listModels()).slice(0, 256);
    } catch (err) {
      log.error("engine could not list its models", { error: errorMessage(err) });
    }
    const engineInfo = await engine.describe?.().catch((err: unknown) => {
      log.warn("engine could not describe itself", { error: errorMessage(err) });
      return undefined;
    });
    // structured_output: some engine enforces a frame's format while generating (the hub then
    // prefers this agent for structured requests); the gateway validates every output regardless.
    const enforcing = this.ctx.structuredOutput && (engineInfo ?? []).some(enforcesFormat);
    this.offered = enforcing ? [...this.ctx.capabilities, "structured_output"] : this.ctx.capabilities;
    sendFrame(this.link, {
      type: "hello",
      protocol: identity.protocol,
      minProtocol: MIN_PROTOCOL_VERSION,
      capabilities: [...this.offered],
      agentId: identity.agentId,
      ...(identity.name ? { name: identity.name.slice(0, 128) } : {}),
      agentVersion: identity.agentVersion,
      engines: engineInfo ? engineInfo.map((e) => e.name).slice(0, 8) : [engine.name],
      ...(engineInfo ? { engineInfo: engineInfo.slice(0, 8) } : {}),
      models,
      capacity: identity.capacity,
      host: this.ctx.hostFacts(),
    });
    // Reconnected while draining: the hub must not route anything new here.
    if (this.ctx.drain.active)
      sendFrame(this.link, { type: "draining", deadlineMs: this.ctx.drain.deadlineMs });
  }

  onFrame(data: string | ArrayBuffer): void {
    const { table, stats, log } = this.ctx;
    const parsed = parseGatewayFrame(data);
    if (!parsed.ok) {
      // A newer hub may cancel for a reason this agent does not know yet (the reasons are a closed
      // enum in the schema). Stopping is still right; ignoring it would leak the generation.
      const cancelId = cancelledRequestId(data);
      const entry = cancelId === undefined ? undefined : table.onLink(cancelId, this.link);
      if (entry) {
        log.info("cancel with a reason this agent does not know", { id: cancelId, reason: parsed.reason });
        entry.abort("cancel");
        return;
      }
      stats.malformedFrames += 1;
      log.warn("ignored malformed gateway frame", { reason: parsed.reason });
      return;
    }
    const frame = parsed.frame;
    switch (frame.type) {
      case "welcome":
        this.onWelcome(frame);
        return;
      case "generate":
        this.onGenerate(frame);
        return;
      case "cancel": {
        const entry = table.onLink(frame.id, this.link);
        if (entry) entry.abort("cancel");
        else log.debug("cancel for a request not in flight", { id: frame.id });
        return;
      }
      case "load":
        this.onLoad(frame);
        return;
      case "unload": {
        const id = this.modelId(frame.model, "model unload failed");
        if (!id) return;
        this.ctx.loads.unload(id).then(
          () => sendFrame(this.link, { type: "unloaded", model: id }),
          (err) => log.warn("model unload failed", { model: id, error: errorMessage(err) }),
        );
        return;
      }
    }
  }

  /** The link closed: its generations have nobody to answer to any more. */
  closed(): void {
    this.ctx.health.stop();
    this.ctx.table.abortAll("disconnect", this.link);
  }

  private onWelcome(frame: WelcomeFrame): void {
    const { log } = this.ctx;
    if (frame.protocol < MIN_PROTOCOL_VERSION || frame.protocol > this.ctx.identity.protocol) {
      log.warn("hub chose a protocol version this agent does not speak", {
        hub: frame.protocol,
        agent: { min: MIN_PROTOCOL_VERSION, max: this.ctx.identity.protocol },
      });
    }
    // A v1 hub sends no capabilities: it uses none. Only what this agent offered can be in use.
    const capabilities = new Set(
      knownCapabilities(frame.capabilities).filter((c) => this.offered.includes(c)),
    );
    this.negotiated = { protocol: frame.protocol, capabilities };
    this.ctx.welcomed(frame.heartbeatIntervalMs);
    const cache = capabilities.has("artifacts") ? () => this.ctx.loads.cacheReport() : undefined;
    this.ctx.health.start(this.link, frame.healthIntervalMs, cache);
    log.info("connected", {
      agentId: frame.agentId,
      sessionId: frame.sessionId,
      pool: frame.pool,
      protocol: frame.protocol,
      capabilities: [...capabilities],
      gateway: this.ctx.gatewayUrl,
      heartbeatIntervalMs: frame.heartbeatIntervalMs,
    });
  }

  private onGenerate(frame: GenerateFrame): void {
    const { table, stats, log } = this.ctx;
    const { id } = frame;
    if (this.ctx.drain.active) {
      stats.refusedDraining += 1;
      sendFrame(this.link, errorFrame(id, "AGENT_DRAINING", "agent is draining", true));
      return;
    }
    const admission = table.admit(id, this.link);
    if ("refused" in admission) {
      if (admission.refused === "busy") {
        stats.refusedBusy += 1;
        // The hub should never do this (it tracks our capacity); say so where operators look.
        log.warn("refused a generate beyond capacity", { id, capacity: table.capacity });
        sendFrame(this.link, errorFrame(id, "AGENT_BUSY", "agent is at capacity", true));
      } else if (this.answersDuplicates()) {
        // Typically an older link's generation still aborting after a reconnect, and the hub failing
        // the request over to this new session: the hub retries elsewhere at once.
        stats.refusedDuplicate += 1;
        log.warn("refused a generate with a request id already in flight", { id });
        const message = "a generation with this request id is still winding down on this agent";
        sendFrame(this.link, errorFrame(id, "DUPLICATE_REQUEST", message, true));
      } else {
        // A v1 hub cannot parse DUPLICATE_REQUEST; it gets what v1 agents always did: silence.
        log.warn("ignored generate with a request id already in flight", { id });
      }
      return;
    }
    const { entry } = admission;
    stats.generationsStarted += 1;
    log.info("generation started", { id, model: frame.model, inFlight: table.size });
    void this.ctx.runner
      .run(frame, entry)
      .catch((err) => log.error("generation bookkeeping failed", { id, error: errorMessage(err) }))
      .finally(() => {
        table.finish(entry);
        stats.generationsFinished += 1;
      });
  }

  /**
   * Loads from the frame's source and answers `loaded`; a failure is logged, and answered with
   * `load_failed` when the hub agreed to `artifacts` (an older hub knows no such frame).
   */
  private onLoad(frame: LoadFrame): void {
    const { log } = this.ctx;
    const id = this.modelId(frame.model, "model load failed");
    if (!id) return;
    const started = performance.now();
    void this.ctx.loads.load(id, frame).then((outcome) => {
      if (outcome.ok) {
        log.info("model loaded", {
          model: id,
          source: frame.source?.kind ?? "agent-local",
          ms: Math.round(performance.now() - started),
          footprintBytes: outcome.model.footprintBytes,
        });
        sendFrame(this.link, { type: "loaded", model: outcome.model });
        return;
      }
      log.warn("model load failed", { model: id, code: outcome.code, error: outcome.message });
      if (this.negotiated.capabilities.has("artifacts")) {
        sendFrame(this.link, {
          type: "load_failed",
          model: id,
          code: outcome.code,
          message: outcome.message,
        });
      }
    });
  }

  private answersDuplicates(): boolean {
    const { protocol, capabilities } = this.negotiated;
    return protocol >= 2 || capabilities.has("duplicate_answer");
  }

  /** The frame's model as a ModelId; logs `failure` for a valid ModelName that is none (`a:1:2`). */
  private modelId(model: string, failure: string): ModelId | undefined {
    if (isModelId(model)) return model;
    this.ctx.log.warn(failure, { model, error: "not a model id (name or name:version)" });
    return undefined;
  }
}

/** The request id of a frame that is a `cancel` but failed validation (e.g. an unknown reason). */
function cancelledRequestId(data: string | ArrayBuffer): string | undefined {
  if (typeof data !== "string") return undefined;
  try {
    const frame = JSON.parse(data) as { type?: unknown; id?: unknown } | null;
    return frame?.type === "cancel" && typeof frame.id === "string" ? frame.id : undefined;
  } catch {
    return undefined;
  }
}
