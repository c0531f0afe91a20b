// The agent's session logic: turns gateway frames into engine calls and engine output into
// coalesced `chunk` frames, keeps the in-flight table (capacity, cancel, deadlines), reports
// health, and drains gracefully. The socket itself lives in connection.ts.
import { readFileSync } from "node:fs";
import { isModelId, type ModelId } from "../schema/model-id.ts";
import {
  type AgentErrorCode,
  type AgentFrame,
  type Capability,
  CloseCode,
  type ErrorFrame,
  type GenerateFrame,
  type HostFacts,
  knownCapabilities,
  MIN_PROTOCOL_VERSION,
  PROTOCOL_VERSION,
  parseGatewayFrame,
  type Usage,
  type WelcomeFrame,
} from "../schema/protocol.ts";
import { ChunkCoalescer } from "./chunk-coalescer.ts";
import { type BackoffOptions, Connection, type ConnectionEnd, ExitCode, type Link } from "./connection.ts";
import { type Engine, EngineError, type GenerationResult } from "./engines/engine.ts";
import { HostFactsSampler } from "./health.ts";
import { errorMessage, type Logger, silentLogger } from "./log.ts";

/** Kept importable from here: it used to live in this module. */
export { ChunkCoalescer } from "./chunk-coalescer.ts";

export const AGENT_VERSION: string = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
      version?: unknown;
    };
    return typeof pkg.version === "string" ? pkg.version : "0.0.0";
  } catch {
    return "0.0.0";
  }
})();

export interface AgentOptions {
  engine: Engine;
  /** ws(s)://…/agents/connect */
  gatewayUrl: string;
  token: string;
  /** The token's `sub`. */
  agentId: string;
  name?: string;
  agentVersion?: string;
  /** Concurrent generations; one more is refused with AGENT_BUSY. Default 4. */
  capacity?: number;
  /** Coalescing window for chunk frames, from the first unflushed piece. Default 16. */
  flushMs?: number;
  /** Flush a chunk as soon as this many bytes are buffered. Default 4096. */
  flushBytes?: number;
  /** Stop pulling from the engine while the socket buffers more than this. Default 1 MiB. */
  maxBufferedBytes?: number;
  /** How long drain() waits for in-flight work before aborting it. Default 30000. */
  drainTimeoutMs?: number;
  backoff?: BackoffOptions;
  /** A connection up this long after `welcome` resets the backoff. Default 10000. */
  stableAfterMs?: number;
  handshakeTimeoutMs?: number;
  /** Drop and redial a socket the hub has not welcomed this long after it opened. Default 10000. */
  welcomeTimeoutMs?: number;
  logger?: Logger;
  /** Host facts for hello/health. Default: HostFactsSampler. */
  hostFacts?: () => HostFacts;
  random?: () => number;
}

export type AgentExit = ConnectionEnd;

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

/** What this agent offers in hello. llama.cpp cannot enforce a JSON schema yet: no structured_output. */
const CAPABILITIES: readonly Capability[] = ["load", "duplicate_answer"];

/** What the hub's welcome settled for one link. Before welcome: v1 and nothing, the safe reading. */
interface Negotiated {
  protocol: number;
  capabilities: ReadonlySet<Capability>;
}

/** Why a generation was aborted; decides what, if anything, the agent still sends for it. */
type AbortCause = "cancel" | "deadline" | "disconnect" | "drain" | "stop";

interface InFlight {
  id: string;
  link: Link;
  controller: AbortController;
  cause?: AbortCause;
  aborted: Promise<void>;
}

/** How long a cancelled generation's usage is awaited before the agent reports its own count. */
const CANCEL_USAGE_GRACE_MS = 2_000;
/** setTimeout's largest delay; longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class Agent {
  readonly stats: AgentStats = {
    malformedFrames: 0,
    generationsStarted: 0,
    generationsFinished: 0,
    refusedBusy: 0,
    refusedDraining: 0,
    refusedDuplicate: 0,
  };

  private readonly engine: Engine;
  private readonly connection: Connection;
  private readonly log: Logger;
  private readonly capacity: number;
  private readonly flushMs: number;
  private readonly flushBytes: number;
  private readonly maxBufferedBytes: number;
  private readonly drainTimeoutMs: number;
  private readonly hostFacts: () => HostFacts;

  private readonly inFlightTable = new Map<string, InFlight>();
  private readonly slotWaiters = new Set<() => void>();
  private currentLink: Link | undefined;
  private readonly negotiated = new WeakMap<Link, Negotiated>();
  private healthTimer: NodeJS.Timeout | undefined;
  private tokensSinceHealth = 0;
  private lastHealthAt = performance.now();
  private drainPromise: Promise<AgentExit> | undefined;
  private isDraining = false;
  private started: Promise<AgentExit> | undefined;

  constructor(private readonly options: AgentOptions) {
    if (options.capacity !== undefined && !(Number.isInteger(options.capacity) && options.capacity > 0)) {
      throw new RangeError("capacity must be a positive integer");
    }
    this.engine = options.engine;
    this.log = options.logger ?? silentLogger;
    this.capacity = options.capacity ?? 4;
    this.flushMs = options.flushMs ?? 16;
    this.flushBytes = options.flushBytes ?? 4096;
    this.maxBufferedBytes = options.maxBufferedBytes ?? 1024 * 1024;
    this.drainTimeoutMs = options.drainTimeoutMs ?? 30_000;
    this.hostFacts = options.hostFacts ?? sampler();
    this.connection = new Connection(
      {
        url: options.gatewayUrl,
        token: options.token,
        ...(options.backoff ? { backoff: options.backoff } : {}),
        ...(options.stableAfterMs === undefined ? {} : { stableAfterMs: options.stableAfterMs }),
        ...(options.handshakeTimeoutMs === undefined
          ? {}
          : { handshakeTimeoutMs: options.handshakeTimeoutMs }),
        ...(options.welcomeTimeoutMs === undefined ? {} : { welcomeTimeoutMs: options.welcomeTimeoutMs }),
        ...(options.random ? { random: options.random } : {}),
        logger: this.log,
      },
      {
        onOpen: (link) => void this.sayHello(link),
        onFrame: (data, link) => this.onFrame(data, link),
        onClose: ({ link }) => this.onClose(link),
      },
    );
  }

  get inFlight(): number {
    return this.inFlightTable.size;
  }

  get draining(): boolean {
    return this.isDraining;
  }

  /** Connects and serves until drained, stopped, or refused for good. */
  start(): Promise<AgentExit> {
    this.started ??= this.connection.start().then((end) => {
      this.stopHealth();
      for (const entry of this.inFlightTable.values()) this.abort(entry, "stop");
      return end;
    });
    return this.started;
  }

  /**
   * Graceful leave: tell the hub, refuse new work, give in-flight generations drainTimeoutMs,
   * abort the rest, then close with DRAINED.
   */
  drain(): Promise<AgentExit> {
    this.drainPromise ??= this.runDrain();
    return this.drainPromise;
  }

  /** Immediate leave: abort everything and close normally. */
  async stop(): Promise<AgentExit> {
    this.isDraining = true;
    for (const entry of this.inFlightTable.values()) this.abort(entry, "stop");
    const end = await this.connection.stop(1000, "agent stopping", ExitCode.OK);
    await this.settled(1_000);
    return end;
  }

  private async runDrain(): Promise<AgentExit> {
    this.isDraining = true;
    this.log.info("draining", { inFlight: this.inFlight, deadlineMs: this.drainTimeoutMs });
    // In-flight work only ever lives on the current link: a closed link's generations are aborted.
    if (this.currentLink) this.send(this.currentLink, { type: "draining", deadlineMs: this.drainTimeoutMs });
    const finished = await this.settled(this.drainTimeoutMs);
    if (!finished) {
      this.log.warn("drain deadline reached; aborting in-flight work", { inFlight: this.inFlight });
      for (const entry of this.inFlightTable.values()) this.abort(entry, "drain");
      await this.settled(CANCEL_USAGE_GRACE_MS);
    }
    const end = await this.connection.stop(CloseCode.DRAINED, "drained", ExitCode.OK);
    this.log.info("drained", { exitCode: end.exitCode });
    return end;
  }

  /** Waits until nothing is in flight or `timeoutMs` passed; true if nothing is in flight. */
  private async settled(timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    while (this.inFlightTable.size > 0) {
      const left = deadline - performance.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.slotWaiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        this.slotWaiters.add(wake);
      });
    }
    return true;
  }

  private async sayHello(link: Link): Promise<void> {
    this.currentLink = link;
    let models: Awaited<ReturnType<Engine["listModels"]>> = [];
    try {
      models = (await this.engine.listModels()).slice(0, 256);
    } catch (err) {
      this.log.error("engine could not list its models", { error: errorMessage(err) });
    }
    this.send(link, {
      type: "hello",
      protocol: PROTOCOL_VERSION,
      minProtocol: MIN_PROTOCOL_VERSION,
      capabilities: [...CAPABILITIES],
      agentId: this.options.agentId,
      ...(this.options.name ? { name: this.options.name.slice(0, 128) } : {}),
      agentVersion: this.options.agentVersion ?? AGENT_VERSION,
      engines: [this.engine.name],
      models,
      capacity: this.capacity,
      host: this.hostFacts(),
    });
    // Reconnected while draining: the hub must not route anything new here.
    if (this.isDraining) this.send(link, { type: "draining", deadlineMs: this.drainTimeoutMs });
  }

  private onFrame(data: string | ArrayBuffer, link: Link): void {
    const parsed = parseGatewayFrame(data);
    if (!parsed.ok) {
      // A newer hub may cancel for a reason this agent does not know yet (the reasons are a closed
      // enum in the schema). Stopping is still right; ignoring it would leak the generation.
      const cancelId = cancelledRequestId(data);
      const entry = cancelId === undefined ? undefined : this.inFlightTable.get(cancelId);
      if (entry && entry.link === link) {
        this.log.info("cancel with a reason this agent does not know", {
          id: cancelId,
          reason: parsed.reason,
        });
        this.abort(entry, "cancel");
        return;
      }
      this.stats.malformedFrames += 1;
      this.log.warn("ignored malformed gateway frame", { reason: parsed.reason });
      return;
    }
    const frame = parsed.frame;
    switch (frame.type) {
      case "welcome":
        this.onWelcome(frame, link);
        return;
      case "generate":
        this.onGenerate(frame, link);
        return;
      case "cancel": {
        const entry = this.inFlightTable.get(frame.id);
        if (entry && entry.link === link) this.abort(entry, "cancel");
        else this.log.debug("cancel for a request not in flight", { id: frame.id });
        return;
      }
      case "load": {
        const id = this.modelId(frame.model, "model load failed");
        if (!id) return;
        this.engine.load(id).then(
          (model) => this.send(link, { type: "loaded", model }),
          (err) => this.log.warn("model load failed", { model: id, error: errorMessage(err) }),
        );
        return;
      }
      case "unload": {
        const id = this.modelId(frame.model, "model unload failed");
        if (!id) return;
        this.engine.unload(id).then(
          () => this.send(link, { type: "unloaded", model: id }),
          (err) => this.log.warn("model unload failed", { model: id, error: errorMessage(err) }),
        );
        return;
      }
    }
  }

  /** The frame's model as a ModelId; logs `failure` for a valid ModelName that is none (`a:1:2`). */
  private modelId(model: string, failure: string): ModelId | undefined {
    if (isModelId(model)) return model;
    this.log.warn(failure, { model, error: "not a model id (name or name:version)" });
    return undefined;
  }

  private onWelcome(frame: WelcomeFrame, link: Link): void {
    if (frame.protocol < MIN_PROTOCOL_VERSION || frame.protocol > PROTOCOL_VERSION) {
      this.log.warn("hub chose a protocol version this agent does not speak", {
        hub: frame.protocol,
        agent: { min: MIN_PROTOCOL_VERSION, max: PROTOCOL_VERSION },
      });
    }
    // A v1 hub sends no capabilities: it uses none. Only what we offered can be in use.
    const capabilities = new Set(
      knownCapabilities(frame.capabilities).filter((c) => CAPABILITIES.includes(c)),
    );
    this.negotiated.set(link, { protocol: frame.protocol, capabilities });
    this.connection.welcomed(frame.heartbeatIntervalMs);
    this.stopHealth();
    this.tokensSinceHealth = 0;
    this.lastHealthAt = performance.now();
    this.healthTimer = setInterval(() => void this.sendHealth(link), frame.healthIntervalMs);
    this.log.info("connected", {
      agentId: frame.agentId,
      sessionId: frame.sessionId,
      pool: frame.pool,
      protocol: frame.protocol,
      capabilities: [...capabilities],
      gateway: this.options.gatewayUrl,
      heartbeatIntervalMs: frame.heartbeatIntervalMs,
    });
  }

  private async sendHealth(link: Link): Promise<void> {
    const now = performance.now();
    const seconds = (now - this.lastHealthAt) / 1000;
    const tokensPerSecond = seconds > 0 ? Math.round((this.tokensSinceHealth / seconds) * 100) / 100 : 0;
    this.tokensSinceHealth = 0;
    this.lastHealthAt = now;
    let models: Awaited<ReturnType<Engine["listModels"]>> | undefined;
    try {
      models = (await this.engine.listModels()).slice(0, 256);
    } catch {
      models = undefined;
    }
    this.send(link, {
      type: "health",
      inFlight: this.inFlight,
      queued: 0, // the agent refuses work beyond capacity instead of queueing it; the hub queues
      tokensPerSecond,
      ...(models ? { models } : {}),
      host: this.hostFacts(),
    });
  }

  private stopHealth(): void {
    clearInterval(this.healthTimer);
    this.healthTimer = undefined;
  }

  private onClose(link: Link): void {
    if (this.currentLink === link) this.currentLink = undefined;
    this.stopHealth();
    for (const entry of this.inFlightTable.values()) {
      if (entry.link === link) this.abort(entry, "disconnect");
    }
  }

  private onGenerate(frame: GenerateFrame, link: Link): void {
    if (this.isDraining) {
      this.stats.refusedDraining += 1;
      this.send(link, errorFrame(frame.id, "AGENT_DRAINING", "agent is draining", true));
      return;
    }
    if (this.inFlightTable.has(frame.id)) {
      // Typically an older link's generation still aborting after a reconnect, and the hub failing
      // the request over to this new session. From v2 the hub can read the answer and retries
      // elsewhere at once; a v1 hub cannot parse the code, so it gets today's silence.
      if (this.answersDuplicates(link)) {
        this.stats.refusedDuplicate += 1;
        this.log.warn("refused a generate with a request id already in flight", { id: frame.id });
        this.send(
          link,
          errorFrame(
            frame.id,
            "DUPLICATE_REQUEST",
            "a generation with this request id is still winding down on this agent",
            true,
          ),
        );
      } else {
        this.log.warn("ignored generate with a request id already in flight", { id: frame.id });
      }
      return;
    }
    if (this.inFlightTable.size >= this.capacity) {
      this.stats.refusedBusy += 1;
      // The hub should never do this (it tracks our capacity); say so where operators look.
      this.log.warn("refused a generate beyond capacity", { id: frame.id, capacity: this.capacity });
      this.send(link, errorFrame(frame.id, "AGENT_BUSY", "agent is at capacity", true));
      return;
    }
    const controller = new AbortController();
    const entry: InFlight = {
      id: frame.id,
      link,
      controller,
      aborted: new Promise((resolve) =>
        controller.signal.addEventListener("abort", () => resolve(), { once: true }),
      ),
    };
    this.inFlightTable.set(frame.id, entry);
    this.stats.generationsStarted += 1;
    this.log.info("generation started", { id: frame.id, model: frame.model, inFlight: this.inFlight });
    void this.generate(frame, entry)
      .catch((err) =>
        this.log.error("generation bookkeeping failed", { id: frame.id, error: errorMessage(err) }),
      )
      .finally(() => {
        this.inFlightTable.delete(frame.id);
        this.stats.generationsFinished += 1;
        for (const wake of [...this.slotWaiters]) wake();
      });
  }

  private answersDuplicates(link: Link): boolean {
    const negotiated = this.negotiated.get(link);
    if (!negotiated) return false;
    return negotiated.protocol >= 2 || negotiated.capabilities.has("duplicate_answer");
  }

  private abort(entry: InFlight, cause: AbortCause): void {
    if (entry.controller.signal.aborted) return;
    entry.cause = cause;
    entry.controller.abort(new Error(`generation ${cause}`));
  }

  private async generate(frame: GenerateFrame, entry: InFlight): Promise<void> {
    const { id, link } = entry;
    const signal = entry.controller.signal;
    const startedAt = performance.now();
    let firstTokenMs: number | null = null;
    let completionTokens = 0;
    const coalescer = new ChunkCoalescer(
      (text, tokens) => this.send(link, { type: "chunk", id, text, tokens }),
      {
        flushMs: this.flushMs,
        maxBytes: this.flushBytes,
      },
    );
    // timeoutMs is relative, so a Mac whose clock is off does not stop work early or late; the
    // absolute deadline is the fallback for hubs that do not send it.
    const timeLeftMs =
      frame.timeoutMs ?? (frame.deadline === undefined ? undefined : frame.deadline - Date.now());
    const deadlineTimer =
      timeLeftMs === undefined
        ? undefined
        : setTimeout(() => this.abort(entry, "deadline"), clampDelay(timeLeftMs));
    const timings = () => ({ firstTokenMs, totalMs: round1(performance.now() - startedAt) });

    let result: Promise<GenerationResult> | undefined;
    try {
      const generation = this.engine.generate(
        {
          model: frame.model,
          ...(frame.prompt === undefined ? {} : { prompt: frame.prompt }),
          ...(frame.messages === undefined ? {} : { messages: frame.messages }),
          params: frame.params,
        },
        signal,
      );
      result = generation.result;
      result.catch(() => {}); // awaited below; never an unhandled rejection if iteration throws first
      for await (const piece of generation) {
        if (signal.aborted) break;
        firstTokenMs ??= round1(performance.now() - startedAt);
        completionTokens += piece.tokens;
        this.tokensSinceHealth += piece.tokens;
        coalescer.push(piece);
        if (link.bufferedAmount > this.maxBufferedBytes) {
          // Backpressure: a slow hub must not make the agent buffer without bound.
          await Promise.race([link.whenWritable(this.maxBufferedBytes), entry.aborted]);
          if (signal.aborted) break;
        }
      }
      if (!signal.aborted) {
        coalescer.flush();
        const { finishReason, usage } = await result;
        this.send(link, { type: "done", id, finishReason, usage, timings: timings() });
        this.log.info("generation done", { id, finishReason, completionTokens: usage.completionTokens });
        return;
      }
    } catch (err) {
      if (!signal.aborted) {
        coalescer.flush();
        this.send(link, toErrorFrame(id, err));
        this.log.warn("generation failed", {
          id,
          error: errorMessage(err),
          code: (err as { code?: unknown }).code,
        });
        return;
      }
    } finally {
      clearTimeout(deadlineTimer);
      coalescer.discard();
    }
    await this.reportAborted(entry, result, completionTokens, timings);
  }

  /** After an abort: `done` cancelled for cancel/deadline, a retryable error for drain, else nothing. */
  private async reportAborted(
    entry: InFlight,
    result: Promise<GenerationResult> | undefined,
    completionTokens: number,
    timings: () => { firstTokenMs: number | null; totalMs: number },
  ): Promise<void> {
    const { id, link, cause } = entry;
    this.log.info("generation aborted", { id, cause });
    switch (cause) {
      case "cancel":
      case "deadline": {
        const usage = await usageAfterAbort(result, completionTokens);
        this.send(link, { type: "done", id, finishReason: "cancelled", usage, timings: timings() });
        return;
      }
      case "drain":
        this.send(link, errorFrame(id, "AGENT_DRAINING", "agent drain deadline reached", true));
        return;
      default: // disconnect / stop: the socket is gone or going; nobody is listening for this id
        return;
    }
  }

  private send(link: Link, frame: AgentFrame): void {
    link.send(JSON.stringify(frame));
  }
}

/** Engine errors keep their stable code and message; anything else becomes a generic ENGINE_ERROR. */
export function toErrorFrame(id: string, err: unknown): ErrorFrame {
  if (err instanceof EngineError) return errorFrame(id, err.code, err.message, err.retryable);
  return errorFrame(id, "ENGINE_ERROR", "the engine failed while generating", false);
}

function errorFrame(id: string, code: AgentErrorCode, message: string, retryable: boolean): ErrorFrame {
  return { type: "error", id, code, message: message.slice(0, 2000), retryable };
}

async function usageAfterAbort(
  result: Promise<GenerationResult> | undefined,
  completionTokens: number,
): Promise<Usage> {
  const counted: Usage = { promptTokens: 0, completionTokens };
  if (!result) return counted;
  let timer: NodeJS.Timeout | undefined;
  const grace = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), CANCEL_USAGE_GRACE_MS);
  });
  try {
    const settled = await Promise.race([result, grace]);
    return settled?.usage ?? counted;
  } catch {
    return counted;
  } finally {
    clearTimeout(timer);
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

function sampler(): () => HostFacts {
  const s = new HostFactsSampler();
  return () => s.sample();
}

function clampDelay(ms: number): number {
  return Math.min(MAX_TIMER_MS, Math.max(0, ms));
}

function round1(ms: number): number {
  return Math.round(ms * 10) / 10;
}
