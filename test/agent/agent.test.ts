// The agent's session logic against a scripted test hub (a local `ws` server that speaks the hub's
// side of the protocol as each test scripts it) and a scripted test engine (a double that yields
// the pieces a test asks for and records the AbortSignals it was given). Real sockets, real timers,
// small intervals.
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { availableParallelism, totalmem } from "node:os";
import { afterEach, describe, expect, it, vi } from "vitest";
import { type WebSocket, WebSocketServer } from "ws";
import {
  AGENT_VERSION,
  Agent,
  type AgentOptions,
  ChunkCoalescer as ChunkCoalescerFromAgent,
} from "../../node-agent/agent.ts";
import { ChunkCoalescer } from "../../node-agent/chunk-coalescer.ts";
import { ExitCode } from "../../node-agent/connection.ts";
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
  CancelFrame,
  CloseCode,
  type GatewayFrame,
  HEARTBEAT_PING,
  HEARTBEAT_PONG,
  MIN_PROTOCOL_VERSION,
  type ModelInfo,
  PROTOCOL_VERSION,
} from "../../schema/protocol.ts";

// ---- scripted test hub ----

interface HubOptions {
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
}

class HubConnection {
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

class ScriptedTestHub {
  readonly connections: HubConnection[] = [];
  private readonly server: WebSocketServer;

  private constructor(
    server: WebSocketServer,
    readonly options: HubOptions,
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
    const server = new WebSocketServer({
      port: 0,
      host: "127.0.0.1",
      path: "/agents/connect",
      ...(options.refuseUpgrade ? { verifyClient: (_info, done) => done(false, options.refuseUpgrade) } : {}),
    });
    await new Promise<void>((resolve) => server.once("listening", () => resolve()));
    return new ScriptedTestHub(server, options);
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.server.address() as AddressInfo).port}/agents/connect`;
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
  }
}

// ---- scripted test engine ----

interface Script {
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

class ScriptedTestEngine implements Engine {
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

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const TOKEN = "header.payload.signature";
let cleanups: Array<() => Promise<unknown>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  cleanups = [];
});

async function setup(hubOptions: HubOptions = {}, agentOptions: Partial<AgentOptions> = {}) {
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

function generate(id: string, extra: Record<string, unknown> = {}) {
  return { type: "generate", id, model: "test-model", prompt: "hi", params: { maxTokens: 64 }, ...extra };
}

let barriers = 0;

/**
 * Sends a generate and waits for its done. Frames on one socket arrive in order, so whatever the
 * agent sent on `conn` before that done has arrived by then: a negative check made after a barrier
 * cannot pass merely because a frame is still on its way.
 */
async function barrier(conn: HubConnection, engine: ScriptedTestEngine): Promise<void> {
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
async function strandOnReconnect(hub: ScriptedTestHub, engine: ScriptedTestEngine, id: string) {
  const first = await hub.connection(0);
  engine.script = { pieces: ["x"], holdUntilAborted: true, windDownMs: 1_500 };
  first.send(generate(id));
  await first.waitFor("chunk", (c) => c.id === id);
  first.ws.terminate();
  const second = await hub.connection(1);
  await vi.waitFor(() => expect(engine.signals[0]?.aborted).toBe(true));
  return second;
}

const text = (conn: HubConnection, id: string) =>
  conn
    .of("chunk")
    .filter((c) => c.id === id)
    .map((c) => c.text)
    .join("");

// ---- tests ----

describe("Agent session", () => {
  it("says hello with its identity, engine, models, capacity and host facts, then logs connected", async () => {
    const { hub, logLines } = await setup();
    const conn = await hub.connection(0);
    expect(conn.authorization).toBe(`Bearer ${TOKEN}`);
    const hello = conn.of("hello")[0];
    expect(hello).toMatchObject({
      type: "hello",
      protocol: PROTOCOL_VERSION,
      minProtocol: MIN_PROTOCOL_VERSION,
      // llama.cpp cannot enforce a JSON schema yet, so structured_output is not offered.
      capabilities: ["load", "duplicate_answer"],
      agentId: "mini-01",
      name: "test-mini",
      agentVersion: AGENT_VERSION,
      engines: ["synthetic"],
      models: [{ name: "test-model", engine: "synthetic", loaded: true }],
      capacity: 2,
      host: { platform: process.platform, arch: process.arch },
    });
    expect(hello?.host.memoryTotalBytes).toBe(totalmem());
    expect(AGENT_VERSION).toMatch(/^\d+\.\d+\.\d+/);
    expect(AGENT_VERSION).toBe(JSON.parse(readFileSync("package.json", "utf8")).version);
    await vi.waitFor(() => expect(logLines.find((l) => l.msg === "connected")).toBeDefined());
    expect(logLines.find((l) => l.msg === "connected")).toMatchObject({
      level: "info",
      agentId: "mini-01",
      sessionId: "session-1",
      pool: "default",
      protocol: PROTOCOL_VERSION,
      capabilities: ["duplicate_answer", "load"],
    });
  });

  it("uses only the capabilities it offered and the hub's welcome names, and logs the negotiated version", async () => {
    const { logLines } = await setup({
      protocol: 1,
      capabilities: ["load", "structured_output", "capability-from-the-future"],
    });
    await vi.waitFor(() => expect(logLines.find((l) => l.msg === "connected")).toBeDefined());
    expect(logLines.find((l) => l.msg === "connected")).toMatchObject({
      protocol: 1,
      capabilities: ["load"],
    });
    expect(logLines.filter((l) => l.level === "warn")).toEqual([]);
  });

  it("coalesces pieces that come fast into few chunks, sends the first at once, and ends with done", async () => {
    const { hub, engine, agent } = await setup();
    const conn = await hub.connection(0);
    const pieces = Array.from({ length: 200 }, (_, i) => `w${i} `);
    engine.script = { pieces };
    conn.send(generate("r1"));
    const done = await conn.waitFor("done", (d) => d.id === "r1");
    const chunks = conn.of("chunk").filter((c) => c.id === "r1");
    expect(chunks.length).toBeGreaterThanOrEqual(2);
    expect(chunks.length).toBeLessThan(pieces.length / 10);
    expect(chunks[0]).toEqual({ type: "chunk", id: "r1", text: "w0 ", tokens: 1 });
    expect(text(conn, "r1")).toBe(pieces.join(""));
    expect(chunks.reduce((n, c) => n + c.tokens, 0)).toBe(200);
    expect(done).toMatchObject({
      finishReason: "stop",
      usage: { promptTokens: 3, completionTokens: 200 },
    });
    expect(done.timings.firstTokenMs).not.toBeNull();
    expect(done.timings.totalMs).toBeGreaterThanOrEqual(done.timings.firstTokenMs ?? 0);
    expect(conn.forId("r1").at(-1)?.type).toBe("done");
    expect(agent.inFlight).toBe(0);
    expect(engine.requests[0]).toEqual({ model: "test-model", prompt: "hi", params: { maxTokens: 64 } });
  });

  it("flushes on the coalescing window when pieces trickle in", async () => {
    const { hub, engine } = await setup({}, { flushMs: 16 });
    const conn = await hub.connection(0);
    const pieces = Array.from({ length: 24 }, (_, i) => `t${i}`);
    engine.script = { pieces, delayMs: 3 };
    conn.send(generate("r2"));
    await conn.waitFor("done", (d) => d.id === "r2");
    const chunks = conn.of("chunk").filter((c) => c.id === "r2");
    expect(chunks.length).toBeGreaterThan(2);
    expect(chunks.length).toBeLessThan(pieces.length);
    expect(text(conn, "r2")).toBe(pieces.join(""));
  });

  it("cancel aborts the engine, answers done/cancelled, and frees the slot", async () => {
    const { hub, engine, agent } = await setup();
    const conn = await hub.connection(0);
    engine.script = { pieces: ["a", "b"], holdUntilAborted: true };
    conn.send(generate("r3"));
    await conn.waitFor("chunk", (c) => c.id === "r3");
    expect(agent.inFlight).toBe(1);
    conn.send({ type: "cancel", id: "r3", reason: "client_disconnected" });
    const done = await conn.waitFor("done", (d) => d.id === "r3");
    expect(engine.signals[0]?.aborted).toBe(true);
    expect(done).toMatchObject({ finishReason: "cancelled", usage: { completionTokens: 2 } });
    expect(agent.inFlight).toBe(0);
    // A cancel for something no longer in flight is ignored.
    conn.send({ type: "cancel", id: "r3", reason: "client_disconnected" });
    await barrier(conn, engine);
    expect(conn.forId("r3").map((f) => f.type)).toEqual(["chunk", "done"]);
    expect(engine.signals).toHaveLength(2);
  });

  it.each(CancelFrame.shape.reason.options)(
    "answers cancel %s with done/cancelled and frees the slot",
    async (reason) => {
      const { hub, engine, agent } = await setup();
      const conn = await hub.connection(0);
      engine.script = { pieces: ["a"], holdUntilAborted: true };
      conn.send(generate("c1"));
      await conn.waitFor("chunk", (c) => c.id === "c1");
      conn.send({ type: "cancel", id: "c1", reason });
      expect(await conn.waitFor("done", (d) => d.id === "c1")).toMatchObject({ finishReason: "cancelled" });
      expect(engine.signals[0]?.aborted).toBe(true);
      expect(agent.inFlight).toBe(0);
      expect(agent.stats.malformedFrames).toBe(0);
    },
  );

  it("stops a generation on a cancel whose reason it does not know (a newer hub's)", async () => {
    const { hub, engine, agent, logLines } = await setup();
    const conn = await hub.connection(0);
    engine.script = { pieces: ["a"], holdUntilAborted: true };
    conn.send(generate("u1"));
    await conn.waitFor("chunk", (c) => c.id === "u1");
    conn.send({ type: "cancel", id: "u1", reason: "reason-from-the-future" });
    expect(await conn.waitFor("done", (d) => d.id === "u1")).toMatchObject({ finishReason: "cancelled" });
    expect(engine.signals[0]?.aborted).toBe(true);
    expect(agent.inFlight).toBe(0);
    expect(agent.stats.malformedFrames).toBe(0);
    expect(logLines.find((l) => l.msg === "cancel with a reason this agent does not know")).toMatchObject({
      id: "u1",
    });
    // A cancel for nothing in flight, with an unknown reason, is just a malformed frame.
    conn.send({ type: "cancel", id: "nobody", reason: "reason-from-the-future" });
    await vi.waitFor(() => expect(agent.stats.malformedFrames).toBe(1));
  });

  it("logs each generation it starts, with the request id", async () => {
    const { hub, logLines } = await setup();
    const conn = await hub.connection(0);
    conn.send(generate("l1"));
    await conn.waitFor("done", (d) => d.id === "l1");
    expect(logLines.find((l) => l.msg === "generation started")).toMatchObject({
      level: "info",
      id: "l1",
      model: "test-model",
      inFlight: 1,
    });
  });

  it("aborts at the request's deadline", async () => {
    const { hub, engine, agent } = await setup();
    const conn = await hub.connection(0);
    engine.script = { pieces: ["x"], holdUntilAborted: true };
    conn.send(generate("r4", { deadline: Date.now() + 60 }));
    const done = await conn.waitFor("done", (d) => d.id === "r4");
    expect(done.finishReason).toBe("cancelled");
    expect(engine.signals[0]?.aborted).toBe(true);
    expect(agent.inFlight).toBe(0);
  });

  it("times the deadline from timeoutMs, not from a hub clock that disagrees with its own", async () => {
    const { hub, engine, agent } = await setup();
    const conn = await hub.connection(0);
    engine.script = { pieces: ["x"], holdUntilAborted: true };
    // The hub's clock is an hour behind: the absolute deadline has long passed by this clock.
    const started = Date.now();
    conn.send(generate("skew", { deadline: Date.now() - 3_600_000, timeoutMs: 150 }));
    const done = await conn.waitFor("done", (d) => d.id === "skew");
    expect(done.finishReason).toBe("cancelled");
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(agent.inFlight).toBe(0);
  });

  it("refuses work beyond capacity with a retryable AGENT_BUSY, and takes work again once a slot frees", async () => {
    const { hub, engine, agent, logLines } = await setup();
    const conn = await hub.connection(0);
    engine.script = { pieces: ["x"], holdUntilAborted: true };
    conn.send(generate("b1"));
    conn.send(generate("b2"));
    conn.send(generate("b3"));
    const busy = await conn.waitFor("error", (e) => e.id === "b3");
    expect(busy).toEqual({
      type: "error",
      id: "b3",
      code: "AGENT_BUSY",
      message: "agent is at capacity",
      retryable: true,
    });
    expect(agent.inFlight).toBe(2);
    expect(agent.stats.refusedBusy).toBe(1);
    expect(logLines.filter((l) => l.msg === "refused a generate beyond capacity")).toEqual([
      expect.objectContaining({ level: "warn", id: "b3", capacity: 2 }),
    ]);
    conn.send({ type: "cancel", id: "b1", reason: "client_disconnected" });
    await conn.waitFor("done", (d) => d.id === "b1");
    engine.script = { pieces: ["ok"] };
    conn.send(generate("b4"));
    await conn.waitFor("done", (d) => d.id === "b4" && d.finishReason === "stop");
  });

  it("maps EngineError codes, and hides unknown errors behind ENGINE_ERROR", async () => {
    const { hub, engine, agent } = await setup();
    const conn = await hub.connection(0);
    engine.script = { error: new EngineError("MODEL_NOT_FOUND", "no model named nope") };
    conn.send(generate("e1"));
    expect(await conn.waitFor("error", (e) => e.id === "e1")).toEqual({
      type: "error",
      id: "e1",
      code: "MODEL_NOT_FOUND",
      message: "no model named nope",
      retryable: false,
    });
    engine.script = { pieces: ["partial"], error: new TypeError("secret internal detail at /src/x.ts:1") };
    conn.send(generate("e2"));
    const err = await conn.waitFor("error", (e) => e.id === "e2");
    expect(err).toMatchObject({ code: "ENGINE_ERROR", retryable: false });
    expect(err.message).not.toMatch(/secret|\/src/);
    expect(text(conn, "e2")).toBe("partial");
    expect(agent.inFlight).toBe(0);
  });

  it("ignores malformed gateway frames without crashing, and counts them", async () => {
    const { hub, engine, agent } = await setup();
    const conn = await hub.connection(0);
    conn.ws.send("not json at all");
    conn.ws.send(JSON.stringify({ type: "generate", id: "m1" }));
    conn.ws.send(JSON.stringify({ type: "teleport" }));
    conn.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    await vi.waitFor(() => expect(agent.stats.malformedFrames).toBe(4));
    engine.script = { pieces: ["still here"] };
    conn.send(generate("m2"));
    await conn.waitFor("done", (d) => d.id === "m2");
    expect(conn.forId("m1")).toEqual([]);
    expect(hub.connections).toHaveLength(1);
  });

  it("answers load and unload with loaded and unloaded, and only logs a failed load", async () => {
    const { hub, engine, logLines } = await setup();
    const conn = await hub.connection(0);
    conn.send({ type: "load", model: "m-a" });
    conn.send({ type: "unload", model: "m-b" });
    conn.send({ type: "load", model: "broken" });
    expect(await conn.waitFor("loaded")).toEqual({
      type: "loaded",
      model: { name: "m-a", engine: "synthetic", loaded: true },
    });
    expect(await conn.waitFor("unloaded")).toEqual({ type: "unloaded", model: "m-b" });
    await vi.waitFor(() => expect(logLines.some((l) => l.msg === "model load failed")).toBe(true));
    expect(logLines.find((l) => l.msg === "model load failed")).toMatchObject({
      level: "warn",
      model: "broken",
      error: "cannot load",
    });
    expect(engine.loaded).toEqual(["m-a"]);
    await barrier(conn, engine);
    expect(conn.of("error")).toEqual([]);
    expect(conn.of("loaded")).toHaveLength(1);
  });

  it("loads and unloads versioned model ids, and refuses text that is no model id before the engine sees it", async () => {
    const { hub, engine, agent, logLines } = await setup();
    const conn = await hub.connection(0);
    conn.send({ type: "load", model: "m-a:1:2" });
    conn.send({ type: "unload", model: "m-b:1:2" });
    conn.send({ type: "load", model: "m-a:1.2.0" });
    conn.send({ type: "unload", model: "m-b:3" });
    expect(await conn.waitFor("loaded")).toEqual({
      type: "loaded",
      model: { name: "m-a:1.2.0", engine: "synthetic", loaded: true },
    });
    expect(await conn.waitFor("unloaded")).toEqual({ type: "unloaded", model: "m-b:3" });
    expect(engine.loaded).toEqual(["m-a:1.2.0"]);
    expect(engine.unloaded).toEqual(["m-b:3"]);
    expect(logLines.filter((l) => l.level === "warn")).toEqual([
      expect.objectContaining({
        msg: "model load failed",
        model: "m-a:1:2",
        error: expect.stringMatching(/not a model id/),
      }),
      expect.objectContaining({
        msg: "model unload failed",
        model: "m-b:1:2",
        error: expect.stringMatching(/not a model id/),
      }),
    ]);
    expect(agent.stats.malformedFrames).toBe(0);
  });

  it("sends health with in-flight count, tokens per second and host facts", async () => {
    const { hub, engine } = await setup({ healthIntervalMs: 40 });
    const conn = await hub.connection(0);
    engine.script = { pieces: ["a", "b", "c"], holdUntilAborted: true };
    conn.send(generate("h1"));
    // The three tokens come back to back, so one report window (at least ~40 ms) holds them all.
    const health = await conn.waitFor("health", (h) => h.inFlight === 1 && h.tokensPerSecond > 0);
    expect(health).toMatchObject({ queued: 0, models: [{ name: "test-model" }] });
    expect(health.tokensPerSecond).toBeLessThanOrEqual(3 / 0.035);
    expect(health.host.cpus).toBe(availableParallelism());
    expect(health.host.rssBytes).toBeGreaterThan(0);
    // Nothing is generated after them (the generation holds), so the next report counts none.
    const reported = conn.of("health").indexOf(health);
    const next = await conn.waitFor("health", (h) => conn.of("health").indexOf(h) > reported);
    expect(next).toMatchObject({ inFlight: 1, tokensPerSecond: 0 });
  });

  it("stops pulling from the engine while the socket is backed up", async () => {
    const { hub, engine } = await setup({}, { maxBufferedBytes: 64 * 1024, flushBytes: 4096 });
    const conn = await hub.connection(0);
    // The hub stops reading: the kernel buffers fill, then ws.bufferedAmount grows.
    // biome-ignore lint/suspicious/noExplicitAny: ws keeps the net.Socket private; pausing it is the point.
    (conn.ws as any)._socket.pause();
    engine.script = { endless: "x".repeat(64 * 1024) };
    conn.send(generate("bp"));
    // It pulls until the socket buffers more than its limit (64 KiB: two 64 KiB pieces), then waits.
    await vi.waitFor(() => expect(engine.piecesPulled).toBeGreaterThan(1));
    await sleep(300);
    const early = engine.piecesPulled;
    // The event loop keeps turning meanwhile: a generation that was not held back would be pulled.
    let turns = 0;
    const ticker = setInterval(() => turns++, 5);
    await sleep(300);
    clearInterval(ticker);
    expect(turns).toBeGreaterThan(5);
    expect(engine.piecesPulled).toBe(early);
    // Bounded by kernel socket buffers plus the agent's limit, far below what 600 ms of pulling yields.
    expect(early * 64 * 1024).toBeLessThan(64 * 1024 * 1024);
    // biome-ignore lint/suspicious/noExplicitAny: as above
    (conn.ws as any)._socket.resume();
    await vi.waitFor(() => expect(engine.piecesPulled).toBeGreaterThan(early + 10));
  });
});

describe("Agent connection lifecycle", () => {
  it("aborts every in-flight generation when the connection drops, then reconnects", async () => {
    const { hub, engine, agent } = await setup();
    const conn = await hub.connection(0);
    engine.script = { pieces: ["x"], holdUntilAborted: true };
    conn.send(generate("d1"));
    conn.send(generate("d2"));
    await conn.waitFor("chunk", (c) => c.id === "d2");
    expect(agent.inFlight).toBe(2);
    conn.ws.terminate();
    await vi.waitFor(() => expect(agent.inFlight).toBe(0));
    expect(engine.signals.map((s) => s.aborted)).toEqual([true, true]);
    const second = await hub.connection(1);
    expect(second.of("hello")).toHaveLength(1);
    await barrier(second, engine);
    expect(second.forId("d1")).toEqual([]);
    expect(second.forId("d2")).toEqual([]);
  });

  it("backs off exponentially while connections fail, and starts over after a stable one", async () => {
    const { hub, logLines } = await setup(
      { welcome: false },
      { backoff: { baseMs: 20, maxMs: 1_000 }, stableAfterMs: 40, random: () => 0.999_999 },
    );
    for (let i = 0; i < 3; i++) (await hub.connection(i)).ws.close(CloseCode.GOING_AWAY);
    const stable = await hub.connection(3);
    hub.welcome(stable);
    await vi.waitFor(() => expect(logLines.some((l) => l.msg === "connected")).toBe(true));
    await sleep(60);
    stable.ws.close(CloseCode.GOING_AWAY);
    await hub.connection(4);
    const delays = logLines.filter((l) => l.msg === "disconnected").map((l) => l.reconnectInMs);
    expect(delays).toEqual([19, 39, 79, 19]);
  });

  it("keeps growing the backoff while welcomed connections drop before they are stable", async () => {
    const { hub, logLines } = await setup(
      {},
      { backoff: { baseMs: 20, maxMs: 1_000 }, stableAfterMs: 10_000, random: () => 0.999_999 },
    );
    for (let i = 0; i < 3; i++) {
      const conn = await hub.connection(i);
      await vi.waitFor(() => expect(logLines.filter((l) => l.msg === "connected")).toHaveLength(i + 1));
      conn.ws.close(CloseCode.GOING_AWAY);
    }
    await hub.connection(3);
    const delays = logLines.filter((l) => l.msg === "disconnected").map((l) => l.reconnectInMs);
    expect(delays).toEqual([19, 39, 79]);
  });

  it("answers a generate for an id an older session's generation still holds with DUPLICATE_REQUEST", async () => {
    const { hub, engine, agent } = await setup();
    const second = await strandOnReconnect(hub, engine, "dup");
    expect(agent.inFlight).toBe(1);
    // The hub fails the request over to the agent's new session under the same id.
    const sentAt = performance.now();
    second.send(generate("dup"));
    const refused = await second.waitFor("error", (e) => e.id === "dup");
    // Promptly, not after the old generation wound down (and not after the hub's first-chunk timeout).
    expect(performance.now() - sentAt).toBeLessThan(1_000);
    expect(agent.inFlight).toBe(1);
    expect(refused).toEqual({
      type: "error",
      id: "dup",
      code: "DUPLICATE_REQUEST",
      message: "a generation with this request id is still winding down on this agent",
      retryable: true,
    });
    expect(engine.requests).toHaveLength(1);
    expect(agent.stats.refusedDuplicate).toBe(1);
    // Once the old generation has ended the id is free again, and nothing of it reached the new session.
    await vi.waitFor(() => expect(agent.inFlight).toBe(0), { timeout: 3_000 });
    engine.script = { pieces: ["again"] };
    second.send(generate("dup"));
    await second.waitFor("done", (d) => d.id === "dup");
    expect(second.forId("dup").map((f) => f.type)).toEqual(["error", "chunk", "done"]);
    expect(text(second, "dup")).toBe("again");
  });

  it("ignores that duplicate, as protocol v1 did, when the hub negotiated v1 (which has no DUPLICATE_REQUEST)", async () => {
    const { hub, engine, agent, logLines } = await setup({ protocol: 1 });
    const second = await strandOnReconnect(hub, engine, "dup1");
    second.send(generate("dup1"));
    await vi.waitFor(() =>
      expect(
        logLines.filter((l) => l.msg === "ignored generate with a request id already in flight"),
      ).toEqual([expect.objectContaining({ level: "warn", id: "dup1" })]),
    );
    await barrier(second, engine);
    expect(second.forId("dup1")).toEqual([]);
    expect(agent.stats.refusedDuplicate).toBe(0);
    expect(engine.requests).toHaveLength(2);
  });

  it("reconnects after a non-terminal close code", async () => {
    const { hub } = await setup();
    const conn = await hub.connection(0);
    conn.ws.close(CloseCode.GOING_AWAY, "redeploy");
    const second = await hub.connection(1);
    expect(second.of("hello")[0]?.agentId).toBe("mini-01");
  });

  it.each([
    ["SESSION_UNKNOWN", CloseCode.SESSION_UNKNOWN],
    ["LIMIT_EXCEEDED", CloseCode.LIMIT_EXCEEDED],
  ])("reconnects with backoff and says hello again after %s", async (_name, code) => {
    const { hub, logLines } = await setup({}, { random: () => 0.5 });
    const conn = await hub.connection(0);
    await vi.waitFor(() => expect(logLines.some((l) => l.msg === "connected")).toBe(true));
    conn.ws.close(code, "hub side");
    const second = await hub.connection(1);
    expect(second.of("hello")).toHaveLength(1);
    expect(logLines.filter((l) => l.msg === "disconnected")).toEqual([
      expect.objectContaining({ code, reason: "hub side", reconnectInMs: 2, attempt: 1 }),
    ]);
    expect(logLines.filter((l) => l.level === "error")).toEqual([]);
  });

  it.each([
    [CloseCode.UNAUTHORIZED, ExitCode.UNAUTHORIZED],
    [CloseCode.REVOKED, ExitCode.UNAUTHORIZED],
    [CloseCode.SUPERSEDED, ExitCode.REFUSED],
    [CloseCode.INCOMPATIBLE_VERSION, ExitCode.REFUSED],
  ])("stops for good on terminal close code %i (exit %i)", async (code, exitCode) => {
    const { hub, exit, engine, agent, logLines } = await setup();
    const conn = await hub.connection(0);
    engine.script = { pieces: ["x"], holdUntilAborted: true };
    conn.send(generate("t1"));
    await conn.waitFor("chunk");
    conn.ws.close(code, "go away");
    expect(await exit).toMatchObject({ exitCode });
    // The decision is logged when it is made: stop for good, and no reconnect was ever scheduled.
    expect(logLines.filter((l) => l.msg === "hub closed the connection for good")).toEqual([
      expect.objectContaining({ level: "error", code }),
    ]);
    expect(logLines.filter((l) => l.msg === "disconnected" || l.msg === "connecting")).toEqual([
      expect.objectContaining({ msg: "connecting", attempt: 0 }),
    ]);
    await sleep(60);
    expect(hub.connections).toHaveLength(1);
    expect(agent.inFlight).toBe(0);
  });

  it("exits with code 3 when the upgrade is refused with 401", async () => {
    const { exit, hub, logLines } = await setup({ refuseUpgrade: 401 });
    expect(await exit).toMatchObject({ exitCode: ExitCode.UNAUTHORIZED });
    expect(hub.connections).toHaveLength(0);
    const refused = logLines.filter((l) => l.level === "error");
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ msg: "gateway refused the agent token", status: 401 });
  });

  it("keeps reconnecting with backoff while the upgrade fails with 503", async () => {
    const { logLines, agent, hub } = await setup({ refuseUpgrade: 503 });
    await vi.waitFor(() =>
      expect(logLines.filter((l) => l.msg === "disconnected").length).toBeGreaterThan(2),
    );
    expect(hub.connections).toHaveLength(0);
    await agent.stop();
  });

  it("terminates a socket whose heartbeat goes unanswered, and reconnects", async () => {
    const { hub, logLines } = await setup({ answerPings: false, heartbeatIntervalMs: 30 });
    const first = await hub.connection(0);
    await vi.waitFor(() => expect(first.closed).toBeDefined(), { timeout: 2_000 });
    expect(first.pings).toBeGreaterThanOrEqual(1);
    expect(first.closed?.code).toBe(1006); // terminated, no close handshake
    expect(logLines.some((l) => l.msg === "heartbeat timeout")).toBe(true);
    await hub.connection(1);
  });

  it("detects a hub that stops answering within two heartbeat intervals, and aborts its work", async () => {
    const intervalMs = 100;
    const { hub, engine, agent } = await setup({ heartbeatIntervalMs: intervalMs });
    const conn = await hub.connection(0);
    engine.script = { pieces: ["x"], holdUntilAborted: true };
    conn.send(generate("hb1"));
    await conn.waitFor("chunk", (c) => c.id === "hb1");
    await vi.waitFor(() => expect(conn.pings).toBeGreaterThanOrEqual(2), { timeout: 2_000 });
    // From now on the hub is silent, as behind a dead NAT mapping: no pong, no frame, no FIN.
    hub.options.answerPings = false;
    const silentSince = performance.now();
    await vi.waitFor(() => expect(conn.closed).toBeDefined(), { timeout: 2_000, interval: 5 });
    const detectedAfter = performance.now() - silentSince;
    expect(detectedAfter).toBeLessThanOrEqual(2 * intervalMs + 60);
    expect(conn.closed?.code).toBe(1006);
    expect(engine.signals[0]?.aborted).toBe(true);
    await vi.waitFor(() => expect(agent.inFlight).toBe(0));
    // Nothing more is sent for the aborted request on the next session.
    const next = await hub.connection(1);
    await barrier(next, engine);
    expect(next.forId("hb1")).toEqual([]);
  });

  it("drops and redials a socket the hub never welcomes", async () => {
    const { hub, logLines } = await setup({ welcome: false }, { welcomeTimeoutMs: 40 });
    const first = await hub.connection(0);
    await vi.waitFor(() => expect(first.closed?.code).toBe(1006));
    expect(logLines.some((l) => l.msg === "no welcome from the hub")).toBe(true);
    await hub.connection(1);
  });

  it("keeps a socket whose heartbeat is answered", async () => {
    const { hub } = await setup({ heartbeatIntervalMs: 20 });
    const conn = await hub.connection(0);
    // Each interval the agent checks that its previous ping was answered before it pings again:
    // ten pings are nine checks passed, however slowly the timers run.
    await vi.waitFor(() => expect(conn.pings).toBeGreaterThanOrEqual(10), { timeout: 3_000 });
    expect(conn.pings).toBeGreaterThanOrEqual(4);
    expect(conn.closed).toBeUndefined();
    expect(hub.connections).toHaveLength(1);
  });
});

describe("Agent drain", () => {
  it("announces draining, refuses new work, finishes in-flight work, then closes with DRAINED", async () => {
    const { hub, engine, agent, exit } = await setup({}, { drainTimeoutMs: 5_000 });
    const conn = await hub.connection(0);
    engine.script = { pieces: ["one ", "two ", "three"], delayMs: 40 };
    conn.send(generate("g1"));
    await conn.waitFor("chunk", (c) => c.id === "g1");
    const drained = agent.drain();
    expect(await conn.waitFor("draining")).toEqual({ type: "draining", deadlineMs: 5_000 });
    conn.send(generate("g2"));
    expect(await conn.waitFor("error", (e) => e.id === "g2")).toMatchObject({
      code: "AGENT_DRAINING",
      retryable: true,
    });
    expect(await drained).toEqual({ exitCode: ExitCode.OK, reason: "drained" });
    expect(await exit).toEqual({ exitCode: ExitCode.OK, reason: "drained" });
    expect(conn.of("done").find((d) => d.id === "g1")).toMatchObject({ finishReason: "stop" });
    expect(text(conn, "g1")).toBe("one two three");
    await vi.waitFor(() => expect(conn.closed?.code).toBe(CloseCode.DRAINED));
    expect(hub.connections).toHaveLength(1);
  });

  it("aborts what is still running at the drain deadline with a retryable AGENT_DRAINING", async () => {
    const { hub, engine, agent, exit } = await setup({}, { drainTimeoutMs: 80 });
    const conn = await hub.connection(0);
    engine.script = { pieces: ["x"], holdUntilAborted: true };
    conn.send(generate("s1"));
    await conn.waitFor("chunk", (c) => c.id === "s1");
    await agent.drain();
    expect(await exit).toMatchObject({ exitCode: ExitCode.OK });
    expect(engine.signals[0]?.aborted).toBe(true);
    expect(conn.forId("s1").at(-1)).toMatchObject({ type: "error", code: "AGENT_DRAINING", retryable: true });
    expect(agent.inFlight).toBe(0);
    await vi.waitFor(() => expect(conn.closed?.code).toBe(CloseCode.DRAINED));
  });

  it("drains while disconnected: exits once in-flight work is gone, without waiting for a hub", async () => {
    const { hub, engine, agent, exit } = await setup(
      {},
      { drainTimeoutMs: 5_000, backoff: { baseMs: 60_000, maxMs: 60_000 }, random: () => 0.999 },
    );
    const conn = await hub.connection(0);
    engine.script = { pieces: ["x"], holdUntilAborted: true };
    conn.send(generate("dd1"));
    await conn.waitFor("chunk", (c) => c.id === "dd1");
    conn.ws.terminate(); // the agent now waits ~60 s before redialling
    await vi.waitFor(() => expect(agent.inFlight).toBe(0));
    const started = performance.now();
    expect(await agent.drain()).toEqual({ exitCode: ExitCode.OK, reason: "drained" });
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(await exit).toEqual({ exitCode: ExitCode.OK, reason: "drained" });
    expect(hub.connections).toHaveLength(1);
  });
});

describe("ChunkCoalescer", () => {
  it("is still exported from agent.ts, and what it exports coalesces", () => {
    expect(ChunkCoalescerFromAgent).toBe(ChunkCoalescer);
    vi.useFakeTimers();
    const emitted: Array<[string, number]> = [];
    const coalescer = new ChunkCoalescerFromAgent((t, n) => emitted.push([t, n]), {
      flushMs: 16,
      now: () => Date.now(),
    });
    coalescer.push({ text: "a", tokens: 1 });
    coalescer.push({ text: "b", tokens: 1 });
    expect(emitted).toEqual([["a", 1]]);
    vi.advanceTimersByTime(16);
    expect(emitted).toEqual([
      ["a", 1],
      ["b", 1],
    ]);
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  function harness(options: { flushMs?: number; maxBytes?: number } = {}) {
    vi.useFakeTimers();
    const emitted: Array<[string, number]> = [];
    const coalescer = new ChunkCoalescer((t, n) => emitted.push([t, n]), {
      ...options,
      now: () => Date.now(),
    });
    return { emitted, coalescer };
  }

  it("sends the first visible text at once and batches the rest for flushMs", () => {
    const { emitted, coalescer } = harness({ flushMs: 16 });
    coalescer.push({ text: "", tokens: 1 });
    expect(emitted).toEqual([]);
    coalescer.push({ text: "a", tokens: 1 });
    expect(emitted).toEqual([["a", 2]]);
    coalescer.push({ text: "b", tokens: 1 });
    vi.advanceTimersByTime(10);
    coalescer.push({ text: "c", tokens: 1 });
    expect(emitted).toHaveLength(1);
    vi.advanceTimersByTime(6);
    expect(emitted).toEqual([
      ["a", 2],
      ["bc", 2],
    ]);
    vi.advanceTimersByTime(100);
    expect(emitted).toHaveLength(2);
  });

  it("flushes on size, and on elapsed time even when timers cannot run", () => {
    const { emitted, coalescer } = harness({ flushMs: 16, maxBytes: 10 });
    coalescer.push({ text: "first", tokens: 1 });
    coalescer.push({ text: "12345", tokens: 1 });
    coalescer.push({ text: "67890", tokens: 1 });
    expect(emitted.at(-1)).toEqual(["1234567890", 2]);
    coalescer.push({ text: "late", tokens: 1 });
    vi.setSystemTime(Date.now() + 20); // the clock moves but no timer has fired yet
    coalescer.push({ text: "r", tokens: 1 });
    expect(emitted.at(-1)).toEqual(["later", 2]);
  });

  it("flush() empties the buffer and discard() drops it", () => {
    const { emitted, coalescer } = harness();
    coalescer.push({ text: "a", tokens: 1 });
    coalescer.push({ text: "b", tokens: 1 });
    coalescer.flush();
    coalescer.flush();
    coalescer.push({ text: "c", tokens: 1 });
    coalescer.discard();
    vi.advanceTimersByTime(100);
    expect(emitted).toEqual([
      ["a", 1],
      ["b", 1],
    ]);
  });
});
