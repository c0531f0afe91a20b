// The harness of the agent's session tests: a scripted test hub (a local `ws` server that speaks
// the hub's side of the protocol as each test scripts it) and a scripted test engine (a double that
// yields the pieces a test asks for and records the AbortSignals it was given). Real sockets, real
// timers, small intervals.
import { createServer, type RequestListener, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { expect, vi } from "vitest";
import { type WebSocket, WebSocketServer } from "ws";
import { Agent, type AgentOptions } from "../../node-agent/agent.ts";
import {
  type Engine,
  EngineError,
  type Generation,
  type GenerationPiece,
  type GenerationRequest,
  type GenerationResult,
} from "../../node-agent/engines/engine.ts";
import { createLogger } from "../../node-agent/log.ts";
import {
  type AgentFrame,
  type GatewayFrame,
  HEARTBEAT_PING,
  HEARTBEAT_PONG,
  type ModelInfo,
  PROTOCOL_VERSION,
} from "../../schema/protocol.ts";

// ---- scripted test hub ----

export interface HubOptions {
  /** Answer HEARTBEAT_PING with HEARTBEAT_PONG (the real hub's auto-response). Default true. */
  answerPings?: boolean;
  /** Reply to `hello` with `welcome`. Default true. */
  welcome?: boolean;
  heartbeatIntervalMs?: number;
  healthIntervalMs?: number;
  /** Refuse the upgrade with this HTTP status. */
  refuseUpgrade?: number;
  /** The negotiated version `welcome` names. Default PROTOCOL_VERSION. */
  protocol?: number;
  /**
   * The capabilities `welcome` says the hub will use. Default: those the hello offered, as a v2 hub
   * answers; omitted from the frame when the negotiated version is 1 (a v1 hub knows none).
   */
  capabilities?: string[];
  /**
   * Answer plain HTTP requests on the hub's port with this (the gateway's routes beside
   * /agents/connect, e.g. artifact downloads): the agent derives its HTTP base from the hub's URL.
   */
  http?: RequestListener;
}

export class HubConnection {
  readonly frames: AgentFrame[] = [];
  pings = 0;
  closed: { code: number; reason: string } | undefined;

  constructor(
    readonly ws: WebSocket,
    readonly authorization: string | undefined,
  ) {}

  send(frame: GatewayFrame | Record<string, unknown>): void {
    this.ws.send(JSON.stringify(frame));
  }

  of<T extends AgentFrame["type"]>(type: T): Extract<AgentFrame, { type: T }>[] {
    return this.frames.filter((f): f is Extract<AgentFrame, { type: T }> => f.type === type);
  }

  forId(id: string): AgentFrame[] {
    return this.frames.filter((f) => "id" in f && f.id === id);
  }

  async waitFor<T extends AgentFrame["type"]>(
    type: T,
    match: (f: Extract<AgentFrame, { type: T }>) => boolean = () => true,
  ): Promise<Extract<AgentFrame, { type: T }>> {
    return vi.waitFor(
      () => {
        const found = this.of(type).find(match);
        if (!found) throw new Error(`no ${type} frame yet`);
        return found;
      },
      { timeout: 3_000, interval: 5 },
    );
  }
}

export class ScriptedTestHub {
  readonly connections: HubConnection[] = [];
  private readonly server: WebSocketServer;

  private constructor(
    server: WebSocketServer,
    readonly options: HubOptions,
    private readonly httpServer?: Server,
  ) {
    this.server = server;
    server.on("connection", (ws, req) => {
      const conn = new HubConnection(ws, req.headers.authorization);
      this.connections.push(conn);
      ws.on("message", (data, isBinary) => {
        const text = data.toString();
        if (!isBinary && text === HEARTBEAT_PING) {
          conn.pings += 1;
          if (this.options.answerPings !== false) ws.send(HEARTBEAT_PONG);
          return;
        }
        const frame = JSON.parse(text) as AgentFrame;
        conn.frames.push(frame);
        if (frame.type === "hello" && this.options.welcome !== false) this.welcome(conn);
      });
      ws.on("close", (code, reason) => {
        conn.closed = { code, reason: reason.toString() };
      });
    });
  }

  welcome(conn: HubConnection): void {
    const hello = conn.of("hello")[0];
    const protocol = this.options.protocol ?? PROTOCOL_VERSION;
    const capabilities = this.options.capabilities ?? (protocol >= 2 ? hello?.capabilities : undefined);
    conn.send({
      type: "welcome",
      protocol,
      ...(capabilities === undefined ? {} : { capabilities }),
      agentId: hello?.agentId ?? "unknown",
      sessionId: `session-${this.connections.indexOf(conn) + 1}`,
      pool: "default",
      heartbeatIntervalMs: this.options.heartbeatIntervalMs ?? 10_000,
      healthIntervalMs: this.options.healthIntervalMs ?? 10_000,
    });
  }

  static async start(options: HubOptions = {}): Promise<ScriptedTestHub> {
    const verify = options.refuseUpgrade
      ? {
          verifyClient: (_info: unknown, done: (ok: boolean, code?: number) => void) =>
            done(false, options.refuseUpgrade),
        }
      : {};
    if (options.http) {
      const httpServer = createServer(options.http);
      const server = new WebSocketServer({ server: httpServer, path: "/agents/connect", ...verify });
      await new Promise<void>((resolve) => httpServer.listen(0, "127.0.0.1", () => resolve()));
      return new ScriptedTestHub(server, options, httpServer);
    }
    const server = new WebSocketServer({ port: 0, host: "127.0.0.1", path: "/agents/connect", ...verify });
    await new Promise<void>((resolve) => server.once("listening", () => resolve()));
    return new ScriptedTestHub(server, options);
  }

  get url(): string {
    const address = (this.httpServer ?? this.server).address() as AddressInfo;
    return `ws://127.0.0.1:${address.port}/agents/connect`;
  }

  async connection(index: number): Promise<HubConnection> {
    return vi.waitFor(
      () => {
        const conn = this.connections[index];
        if (!conn || conn.of("hello").length === 0) throw new Error(`no connection #${index} with hello yet`);
        return conn;
      },
      { timeout: 3_000, interval: 5 },
    );
  }

  async close(): Promise<void> {
    for (const client of this.server.clients) client.terminate();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.httpServer) {
      this.httpServer.closeAllConnections();
      await new Promise<void>((resolve) => this.httpServer?.close(() => resolve()));
    }
  }
}

// ---- scripted test engine ----

export interface Script {
  pieces?: string[];
  /** Wait this long before each piece; 0 yields back to back. */
  delayMs?: number;
  /** After the pieces, hold the generation open until it is aborted. */
  holdUntilAborted?: boolean;
  /** Throw this after the pieces. */
  error?: unknown;
  /** Keep yielding this piece forever (until aborted), yielding to the event loop in between. */
  endless?: string;
  /** After an abort, keep the generation running this long before it ends (a slow engine). */
  windDownMs?: number;
}

export class ScriptedTestEngine implements Engine {
  readonly name = "synthetic" as const;
  readonly signals: AbortSignal[] = [];
  readonly requests: GenerationRequest[] = [];
  piecesPulled = 0;
  script: Script = { pieces: ["hello"] };
  loaded: string[] = [];
  unloaded: string[] = [];

  async listModels(): Promise<ModelInfo[]> {
    return [{ name: "test-model", engine: "synthetic", loaded: true, contextLength: 256 }];
  }

  async load(model: string): Promise<ModelInfo> {
    if (model === "broken") throw new EngineError("MODEL_LOAD_FAILED", "cannot load");
    this.loaded.push(model);
    return { name: model, engine: "synthetic", loaded: true };
  }

  async unload(model: string): Promise<void> {
    this.unloaded.push(model);
  }

  async close(): Promise<void> {}

  generate(request: GenerationRequest, signal: AbortSignal): Generation {
    this.requests.push(request);
    this.signals.push(signal);
    const script = this.script;
    let settle!: (r: GenerationResult) => void;
    let fail!: (e: unknown) => void;
    const result = new Promise<GenerationResult>((resolve, reject) => {
      settle = resolve;
      fail = reject;
    });
    const engine = this;
    async function* run(): AsyncGenerator<GenerationPiece> {
      let tokens = 0;
      try {
        for (const text of script.pieces ?? []) {
          if (signal.aborted) break;
          if (script.delayMs) await sleep(script.delayMs);
          engine.piecesPulled += 1;
          tokens += 1;
          yield { text, tokens: 1 };
        }
        while (script.endless !== undefined && !signal.aborted) {
          await new Promise((resolve) => setImmediate(resolve));
          engine.piecesPulled += 1;
          tokens += 1;
          yield { text: script.endless, tokens: 1 };
        }
        if (script.holdUntilAborted && !signal.aborted) {
          await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
        }
        if (script.error !== undefined && !signal.aborted) throw script.error;
        if (script.windDownMs && signal.aborted) await sleep(script.windDownMs);
      } catch (err) {
        fail(err);
        throw err;
      } finally {
        settle({
          finishReason: signal.aborted ? "cancelled" : "stop",
          usage: { promptTokens: 3, completionTokens: tokens },
        });
      }
    }
    const iterator = run();
    return { result, [Symbol.asyncIterator]: () => iterator };
  }
}

// ---- harness ----

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export const TOKEN = "header.payload.signature";
let cleanups: Array<() => Promise<unknown>> = [];

/** Stops every agent and hub that setup() started; each test file runs it in its afterEach. */
export async function cleanUp(): Promise<void> {
  for (const cleanup of cleanups.reverse()) await cleanup();
  cleanups = [];
}

export async function setup(hubOptions: HubOptions = {}, agentOptions: Partial<AgentOptions> = {}) {
  const hub = await ScriptedTestHub.start(hubOptions);
  const engine = new ScriptedTestEngine();
  const logLines: Array<Record<string, unknown>> = [];
  const agent = new Agent({
    engine,
    gatewayUrl: hub.url,
    token: TOKEN,
    agentId: "mini-01",
    name: "test-mini",
    capacity: 2,
    backoff: { baseMs: 5, maxMs: 20 },
    handshakeTimeoutMs: 2_000,
    logger: createLogger({ level: "debug", write: (line) => logLines.push(JSON.parse(line)) }),
    ...agentOptions,
  });
  const exit = agent.start();
  cleanups.push(async () => {
    await agent.stop();
    await hub.close();
  });
  return { hub, engine, agent, exit, logLines };
}

export function generate(id: string, extra: Record<string, unknown> = {}) {
  return { type: "generate", id, model: "test-model", prompt: "hi", params: { maxTokens: 64 }, ...extra };
}

let barriers = 0;

/**
 * Sends a generate and waits for its done. Frames on one socket arrive in order, so whatever the
 * agent sent on `conn` before that done has arrived by then: a negative check made after a barrier
 * cannot pass merely because a frame is still on its way.
 */
export async function barrier(conn: HubConnection, engine: ScriptedTestEngine): Promise<void> {
  const script = engine.script;
  const id = `barrier-${++barriers}`;
  engine.script = { pieces: ["barrier"] };
  conn.send(generate(id));
  await conn.waitFor("done", (d) => d.id === id);
  engine.script = script;
}

/**
 * Starts `id` on the first session, then drops the socket while the engine is slow to stop, so the
 * id outlives its session in the agent's in-flight table. Returns the agent's next session.
 */
export async function strandOnReconnect(hub: ScriptedTestHub, engine: ScriptedTestEngine, id: string) {
  const first = await hub.connection(0);
  engine.script = { pieces: ["x"], holdUntilAborted: true, windDownMs: 1_500 };
  first.send(generate(id));
  await first.waitFor("chunk", (c) => c.id === id);
  first.ws.terminate();
  const second = await hub.connection(1);
  await vi.waitFor(() => expect(engine.signals[0]?.aborted).toBe(true));
  return second;
}

export const text = (conn: HubConnection, id: string) =>
  conn
    .of("chunk")
    .filter((c) => c.id === id)
    .map((c) => c.text)
    .join("");
