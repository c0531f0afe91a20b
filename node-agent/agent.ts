// The node agent: wires the reconnecting connection to one session per link, the in-flight table,
// the generation runner, the health reporter and drain, and offers start / drain / stop. Each of
// those lives in its own module; this one only decides how they are put together.
import { readFileSync } from "node:fs";
import { type HostFacts, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION } from "../schema/protocol.ts";
import { ArtifactCache, type ArtifactCacheOptions } from "./artifacts/artifact-cache.ts";
import { type BackoffOptions, Connection, type ConnectionEnd, ExitCode, type Link } from "./connection.ts";
import { Drain } from "./drain.ts";
import type { Engine } from "./engines/engine.ts";
import { GenerationRunner } from "./generation-runner.ts";
import { HealthReporter } from "./health-reporter.ts";
import { HostFactsSampler } from "./host-facts.ts";
import { InFlightTable } from "./in-flight.ts";
import { type Logger, silentLogger } from "./log.ts";
import { gatewayHttpUrlOf, RegistryLoads } from "./registry-loads.ts";
import { type AgentStats, offeredCapabilities, Session, type SessionContext } from "./session.ts";

/** Kept importable from here: it used to live in this module. */
export { ChunkCoalescer } from "./chunk-coalescer.ts";
export type { AgentStats } from "./session.ts";

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
  /**
   * The newest protocol version to offer in hello (MIN_PROTOCOL_VERSION..PROTOCOL_VERSION, default
   * the newest): a gateway older than this agent refuses a version it does not speak.
   */
  maxProtocol?: number;
  /** Coalescing window for chunk frames, from the first unflushed piece. Default 16. */
  flushMs?: number;
  /** Flush a chunk as soon as this many bytes are buffered. Default 4096. */
  flushBytes?: number;
  /** Stop pulling from the engine while the socket buffers more than this. Default 1 MiB. */
  maxBufferedBytes?: number;
  /**
   * Enforce a request's `format` in the engine where it can (llama.cpp's grammar, Ollama's format)
   * and offer structured_output. False: engines never see `format` and the gateway's validation and
   * retries stand alone (how tests exercise them with a real model). Default true.
   */
  structuredOutput?: boolean;
  /** How long drain() waits for in-flight work before aborting it. Default 30000. */
  drainTimeoutMs?: number;
  backoff?: BackoffOptions;
  /** A connection up this long after `welcome` resets the backoff. Default 10000. */
  stableAfterMs?: number;
  handshakeTimeoutMs?: number;
  /** Drop and redial a socket the hub has not welcomed this long after it opened. Default 10000. */
  welcomeTimeoutMs?: number;
  logger?: Logger;
  /**
   * The registry's artifact cache; without it the agent does not offer `artifacts` (it still
   * loads its own models on `load`).
   */
  artifacts?: {
    dir: string;
    budgetBytes: number;
    /** http(s)://host[/prefix] artifact paths are appended to. Default: derived from gatewayUrl. */
    gatewayHttpUrl?: string;
    /** Free memory in bytes; a load needs 1.2 x the weights. Default availableMemoryBytes (health.ts). */
    freeMemoryBytes?: () => number;
    download?: ArtifactCacheOptions["download"];
  };
  /** Host facts for hello/health. Default: HostFactsSampler. */
  hostFacts?: () => HostFacts;
  random?: () => number;
}

export type AgentExit = ConnectionEnd;

export class Agent {
  readonly stats: AgentStats = {
    malformedFrames: 0,
    generationsStarted: 0,
    generationsFinished: 0,
    refusedBusy: 0,
    refusedDraining: 0,
    refusedDuplicate: 0,
  };

  private readonly connection: Connection;
  private readonly table: InFlightTable;
  private readonly health: HealthReporter;
  private readonly drainer: Drain;
  private readonly context: SessionContext;
  private readonly sessions = new Map<Link, Session>();
  private currentLink: Link | undefined;
  private started: Promise<AgentExit> | undefined;

  constructor(options: AgentOptions) {
    if (options.capacity !== undefined && !(Number.isInteger(options.capacity) && options.capacity > 0)) {
      throw new RangeError("capacity must be a positive integer");
    }
    const { engine } = options;
    const log = options.logger ?? silentLogger;
    const capacity = options.capacity ?? 4;
    const host = hostFactsOf(options.hostFacts, log);
    const artifacts = options.artifacts;
    const cache = artifacts
      ? new ArtifactCache({
          dir: artifacts.dir,
          budgetBytes: artifacts.budgetBytes,
          inUse: () => loads.inUse(),
          log,
          ...(artifacts.download ? { download: artifacts.download } : {}),
        })
      : undefined;
    const loads = new RegistryLoads({
      engine,
      ...(cache ? { cache } : {}),
      gatewayHttpUrl: artifacts?.gatewayHttpUrl ?? gatewayHttpUrlOf(options.gatewayUrl),
      token: options.token,
      ...(artifacts?.freeMemoryBytes ? { freeMemoryBytes: artifacts.freeMemoryBytes } : {}),
      log,
    });
    this.table = new InFlightTable(capacity);
    this.health = new HealthReporter({
      engine,
      hostFacts: host.fresh,
      inFlight: () => this.table.size,
    });
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
        logger: log,
      },
      {
        onOpen: (link) => this.opened(link),
        onFrame: (data, link) => this.sessions.get(link)?.onFrame(data),
        onClose: ({ link }) => this.closed(link),
      },
    );
    this.drainer = new Drain({
      deadlineMs: options.drainTimeoutMs ?? 30_000,
      table: this.table,
      connection: this.connection,
      currentLink: () => this.currentLink,
      log,
    });
    this.context = {
      identity: {
        agentId: options.agentId,
        ...(options.name === undefined ? {} : { name: options.name }),
        agentVersion: options.agentVersion ?? AGENT_VERSION,
        capacity,
        protocol: offeredProtocol(options.maxProtocol),
      },
      gatewayUrl: options.gatewayUrl,
      engine,
      loads,
      capabilities: offeredCapabilities(cache !== undefined),
      structuredOutput: options.structuredOutput ?? true,
      table: this.table,
      runner: new GenerationRunner({
        engine,
        log,
        flushMs: options.flushMs ?? 16,
        flushBytes: options.flushBytes ?? 4096,
        maxBufferedBytes: options.maxBufferedBytes ?? 1024 * 1024,
        passFormat: options.structuredOutput ?? true,
        onFinished: (generation) => this.health.generationFinished(generation),
      }),
      health: this.health,
      drain: this.drainer,
      stats: this.stats,
      hostFacts: host.latest,
      welcomed: (heartbeatIntervalMs) => this.connection.welcomed(heartbeatIntervalMs),
      log,
    };
  }

  get inFlight(): number {
    return this.table.size;
  }

  get draining(): boolean {
    return this.drainer.active;
  }

  /** Connects and serves until drained, stopped, or refused for good. */
  start(): Promise<AgentExit> {
    this.started ??= this.connection.start().then((end) => {
      this.health.stop();
      this.table.abortAll("stop");
      return end;
    });
    return this.started;
  }

  /**
   * Graceful leave: tell the hub, refuse new work, give in-flight generations drainTimeoutMs,
   * abort the rest, then close with DRAINED.
   */
  drain(): Promise<AgentExit> {
    return this.drainer.run();
  }

  /** Immediate leave: abort everything and close normally. */
  async stop(): Promise<AgentExit> {
    this.drainer.refuseWork();
    this.table.abortAll("stop");
    const end = await this.connection.stop(1000, "agent stopping", ExitCode.OK);
    await this.table.settled(1_000);
    return end;
  }

  private opened(link: Link): void {
    const session = new Session(link, this.context);
    this.sessions.set(link, session);
    this.currentLink = link;
    void session.hello();
  }

  private closed(link: Link): void {
    if (this.currentLink === link) this.currentLink = undefined;
    this.sessions.get(link)?.closed();
    this.sessions.delete(link);
  }
}

/**
 * Host facts for hello (the latest, without waiting) and for health (the OS read afresh for each
 * report): the given function for both, else a HostFactsSampler's.
 */
function hostFactsOf(
  given: (() => HostFacts) | undefined,
  log: Logger,
): { latest: () => HostFacts; fresh: () => HostFacts | Promise<HostFacts> } {
  if (given) return { latest: given, fresh: given };
  const sampler = new HostFactsSampler({ log });
  return { latest: () => sampler.sample(), fresh: () => sampler.fresh() };
}

/** The newest protocol version to offer: the given one when it is one this agent speaks. */
function offeredProtocol(maxProtocol: number | undefined): number {
  if (maxProtocol === undefined) return PROTOCOL_VERSION;
  if (
    !Number.isInteger(maxProtocol) ||
    maxProtocol < MIN_PROTOCOL_VERSION ||
    maxProtocol > PROTOCOL_VERSION
  ) {
    throw new RangeError(
      `maxProtocol must be an integer from ${MIN_PROTOCOL_VERSION} to ${PROTOCOL_VERSION}, got ${maxProtocol}`,
    );
  }
  return maxProtocol;
}
