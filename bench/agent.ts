// Benchmark agent process: node-agent's real Agent class with an engine the benchmark picks (the
// SyntheticTokenSource or the real LlamaCppEngine), connected to one or more gateways at once so the
// same agent and engine serve every path being compared. It also runs the in-process baselines on
// request (the engine alone, the Agent over a loopback WebSocket, node-llama-cpp called directly)
// and can CPU-profile itself, so none of that shares an event loop with the load generator.
//
// argv[2]: JSON BenchAgentConfig. IPC: see the `handlers` table at the bottom.
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { type AddressInfo, createServer } from "node:net";
import { WebSocketServer } from "ws";
import { Agent } from "../node-agent/agent.ts";
import type { Engine } from "../node-agent/engines/engine.ts";
import type { Logger } from "../node-agent/log.ts";
import { AgentTrace } from "./lib/agent-trace.ts";
import { closedLoop, type LoopOptions, type RequestFn } from "./lib/closed-loop.ts";
import { type SyntheticModel, SyntheticTokenSource } from "./synthetic-engine.ts";

export type EngineConfig =
  | { kind: "synthetic"; models: SyntheticModel[] }
  | { kind: "llamacpp"; modelName: string; modelPath: string; threads: number }
  /** node-agent's real OllamaEngine against an Ollama-compatible server (bench/lib/token-server.ts). */
  | { kind: "ollama"; baseUrl: string; models: { name: string; tag: string }[] };

export interface GatewayLink {
  label: string;
  /** ws://…/agents/connect (Orchard) or ws://…/?models=… (bare relay). */
  url: string;
  token: string;
  /** The newest protocol version to offer (a gateway at an older commit speaks only that). */
  maxProtocol?: number;
}

export interface BenchAgentConfig {
  id: string;
  engine: EngineConfig;
  gateways: GatewayLink[];
  /** Agent capacity (concurrent generations). */
  capacity: number;
  flushMs?: number;
  /** Also connect an Agent to an in-process loopback hub (for the "Agent path" baseline). */
  loopback?: boolean;
  /** Per-request traces and event-loop lag (bench/lib/agent-trace.ts); also BENCH_TRACE=1 in the env. */
  trace?: boolean;
}

const cfg = JSON.parse(process.argv[2] as string) as BenchAgentConfig;

/** Quiet logger: the bench measures relaying, not log writing; warnings still reach stderr. */
function benchLogger(onConnected: () => void): Logger {
  const write = (level: string, msg: string, fields?: Record<string, unknown>) =>
    process.stderr.write(`${JSON.stringify({ level, msg, agent: cfg.id, ...fields })}\n`);
  const logger: Logger = {
    level: "warn",
    debug() {},
    info(msg) {
      if (msg === "connected") onConnected();
    },
    warn: (msg, fields) => write("warn", msg, fields),
    error: (msg, fields) => write("error", msg, fields),
    child: () => logger,
  };
  return logger;
}

async function createEngine(e: EngineConfig): Promise<Engine> {
  if (e.kind === "synthetic") return new SyntheticTokenSource({ models: e.models });
  if (e.kind === "ollama") {
    const { OllamaEngine } = await import("../node-agent/engines/ollama/index.ts");
    const engine = new OllamaEngine({ baseUrl: e.baseUrl, models: e.models, discover: false });
    await engine.start();
    return engine;
  }
  const { LlamaCppEngine } = await import("../node-agent/engines/llamacpp/index.ts");
  const engine = new LlamaCppEngine({
    models: [{ name: e.modelName, path: e.modelPath }],
    capacity: 1,
    threads: e.threads,
    maxThreads: e.threads,
  });
  await engine.load(e.modelName);
  return engine;
}

function connectAgent(
  engine: Engine,
  url: string,
  token: string,
  label: string,
  maxProtocol?: number,
): Promise<Agent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${label}: not welcomed in 30 s`)), 30_000);
    const agent: Agent = new Agent({
      engine,
      gatewayUrl: url,
      token,
      agentId: cfg.id,
      name: `${cfg.id}-${label}`,
      capacity: cfg.capacity,
      ...(cfg.flushMs === undefined ? {} : { flushMs: cfg.flushMs }),
      ...(maxProtocol === undefined ? {} : { maxProtocol }),
      logger: benchLogger(() => {
        clearTimeout(timer);
        resolve(agent);
      }),
    });
    void agent.start();
  });
}

// ---- the loopback hub: the smallest possible gateway, in this very process ----

interface LoopbackHub {
  url: string;
  /** Frames received from the Agent since the last reset, by type, and requests finished. */
  stats(reset: boolean): { frames: Record<string, number>; requests: number };
  generate(
    model: string,
    prompt: string,
    maxTokens: number,
    onTokens: (n: number) => void,
  ): Promise<{ ttftMs?: number; tokens: number }>;
}

async function startLoopbackHub(): Promise<LoopbackHub> {
  // A free port first, so the Agent can be given its URL before the server accepts.
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", () => r()));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });
  const pending = new Map<
    string,
    { t0: number; ttftMs?: number; tokens: number; onTokens: (n: number) => void; done: () => void }
  >();
  let socket: import("ws").WebSocket | undefined;
  let seq = 0;
  let frames: Record<string, number> = {};
  let finished = 0;
  wss.on("connection", (ws) => {
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      const text = data.toString();
      if (text === "ping") {
        ws.send("pong");
        return;
      }
      const frame = JSON.parse(text) as { type: string; id?: string; tokens?: number; agentId?: string };
      if (frame.type === "hello") {
        socket = ws;
        ws.send(
          JSON.stringify({
            type: "welcome",
            protocol: 1,
            agentId: frame.agentId,
            sessionId: "loopback",
            pool: "loopback",
            heartbeatIntervalMs: 15_000,
            healthIntervalMs: 60_000,
          }),
        );
        return;
      }
      frames[frame.type] = (frames[frame.type] ?? 0) + 1;
      const p = frame.id === undefined ? undefined : pending.get(frame.id);
      if (!p) return;
      if (frame.type === "chunk") {
        p.ttftMs ??= performance.now() - p.t0;
        p.tokens += frame.tokens ?? 0;
        p.onTokens(frame.tokens ?? 0);
      } else if (frame.type === "done" || frame.type === "error") {
        pending.delete(frame.id as string);
        finished += 1;
        p.done();
      }
    });
  });
  return {
    url: `ws://127.0.0.1:${port}/`,
    stats(reset) {
      const out = { frames, requests: finished };
      if (reset) {
        frames = {};
        finished = 0;
      }
      return out;
    },
    generate(model, prompt, maxTokens, onTokens) {
      return new Promise((resolve) => {
        const id = `l${++seq}`;
        const entry = {
          t0: performance.now(),
          tokens: 0,
          onTokens,
          ttftMs: undefined as number | undefined,
          done: () => resolve({ ttftMs: entry.ttftMs, tokens: entry.tokens }),
        };
        pending.set(id, entry);
        socket?.send(
          JSON.stringify({ type: "generate", id, model, prompt, params: { maxTokens, temperature: 0 } }),
        );
      });
    },
  };
}

// ---- node-llama-cpp called directly (no Orchard code at all) ----

interface DirectLlama {
  run(
    prompt: string,
    maxTokens: number,
    mode: "completion" | "evaluate",
  ): Promise<{ tokens: number; ms: number }>;
}

async function directLlama(e: Extract<EngineConfig, { kind: "llamacpp" }>): Promise<DirectLlama> {
  const { getLlama, LlamaCompletion } = await import("node-llama-cpp");
  const llama = await getLlama({ gpu: false, build: "never", maxThreads: e.threads });
  const model = await llama.loadModel({ modelPath: e.modelPath });
  const context = await model.createContext({
    contextSize: Math.min(4096, model.trainContextSize),
    sequences: 1,
    threads: e.threads,
  });
  const sequence = context.getSequence();
  const completion = new LlamaCompletion({ contextSequence: sequence });
  return {
    async run(prompt, maxTokens, mode) {
      await sequence.clearHistory();
      const t0 = performance.now();
      let tokens = 0;
      if (mode === "completion") {
        await completion.generateCompletion(prompt, {
          maxTokens,
          temperature: 0,
          onToken: (t) => {
            tokens += t.length;
          },
        });
      } else {
        const bos = model.tokens.shouldPrependBosToken ? model.tokens.bos : null;
        const text = model.tokenize(prompt, false, bos === null ? undefined : "trimLeadingSpace");
        const input = bos === null ? text : [bos, ...text];
        const recent = [...input];
        const iterator = sequence.evaluate(input, { temperature: 0 });
        for await (const token of iterator) {
          // The same per-token detokenize the engine does, so both produce text.
          model.detokenize([token], false, recent.slice(-16));
          recent.push(token);
          if (++tokens >= maxTokens) break;
        }
      }
      return { tokens, ms: performance.now() - t0 };
    },
  };
}

// ---- IPC ----

async function main(): Promise<void> {
  const trace = cfg.trace || process.env.BENCH_TRACE === "1" ? new AgentTrace() : undefined;
  const bare = await createEngine(cfg.engine);
  const engine = trace ? trace.wrap(bare) : bare;
  const agents = await Promise.all(
    cfg.gateways.map((g) => connectAgent(engine, g.url, g.token, g.label, g.maxProtocol)),
  );
  let loopback: LoopbackHub | undefined;
  if (cfg.loopback) {
    loopback = await startLoopbackHub();
    agents.push(await connectAgent(engine, loopback.url, "loopback", "loopback"));
  }
  let direct: Promise<DirectLlama> | undefined;
  let session: Session | undefined;

  const handlers: Record<string, (m: Record<string, unknown>) => Promise<Record<string, unknown>>> = {
    /** The engine alone, in-process: the floor of every path. */
    async "engine-run"(m) {
      const run: RequestFn = async (ctx) => {
        const t0 = performance.now();
        const controller = new AbortController();
        const generation = engine.generate(
          {
            model: m.model as string,
            prompt: "bench",
            params: { maxTokens: m.maxTokens as number, temperature: 0 },
          },
          controller.signal,
        );
        let tokens = 0;
        let ttftMs: number | undefined;
        for await (const piece of generation) {
          ttftMs ??= performance.now() - t0;
          tokens += piece.tokens;
          ctx.onTokens(piece.tokens);
        }
        await generation.result;
        return { ttftMs, tokens };
      };
      return { result: await closedLoop(run, m.loop as LoopOptions) };
    },
    /** The Agent (coalescing, frames, ws) over a loopback socket to an in-process hub. */
    async "loopback-run"(m) {
      if (!loopback) throw new Error("started without loopback");
      const hub = loopback;
      const run: RequestFn = (ctx) =>
        hub.generate(m.model as string, "bench", m.maxTokens as number, ctx.onTokens);
      hub.stats(true);
      const result = await closedLoop(run, m.loop as LoopOptions);
      const { frames, requests } = hub.stats(true);
      const framesPerRequest = Object.fromEntries(
        Object.entries(frames).map(([type, n]) => [type, n / Math.max(1, requests)]),
      );
      return { result, framesPerRequest };
    },
    /** node-llama-cpp called directly: one generation, tokens and wall time. */
    async "llama-direct"(m) {
      if (cfg.engine.kind !== "llamacpp") throw new Error("not a llama.cpp agent");
      direct ??= directLlama(cfg.engine);
      const d = await direct;
      return await d.run(m.prompt as string, m.maxTokens as number, m.mode as "completion" | "evaluate");
    },
    /** The Agent's engine alone (LlamaCppEngine.generate): one generation. */
    async "engine-once"(m) {
      const t0 = performance.now();
      const generation = engine.generate(
        {
          model: m.model as string,
          prompt: m.prompt as string,
          params: { maxTokens: m.maxTokens as number, temperature: 0 },
        },
        new AbortController().signal,
      );
      let tokens = 0;
      for await (const piece of generation) tokens += piece.tokens;
      await generation.result;
      return { tokens, ms: performance.now() - t0 };
    },
    /** Through the Agent over the loopback hub: one generation. */
    async "loopback-once"(m) {
      if (!loopback) throw new Error("started without loopback");
      loopback.stats(true);
      const t0 = performance.now();
      const out = await loopback.generate(
        m.model as string,
        m.prompt as string,
        m.maxTokens as number,
        () => {},
      );
      return { tokens: out.tokens, ms: performance.now() - t0, frames: loopback.stats(true).frames };
    },
    async "trace-dump"() {
      if (!trace) throw new Error("started without trace");
      return { ...trace.dump() };
    },
    async "profile-start"() {
      session = new Session();
      session.connect();
      await session.post("Profiler.enable");
      await session.post("Profiler.setSamplingInterval", { interval: 100 });
      await session.post("Profiler.start");
      return {};
    },
    async "profile-stop"(m) {
      if (!session) throw new Error("no profile running");
      const { profile } = await session.post("Profiler.stop");
      writeFileSync(m.path as string, JSON.stringify(profile));
      session.disconnect();
      session = undefined;
      return { path: m.path };
    },
    async stop() {
      await Promise.all(agents.map((a) => a.stop().catch(() => undefined)));
      await engine.close().catch(() => undefined);
      setImmediate(() => process.exit(0));
      return {};
    },
  };

  process.on("message", (m: Record<string, unknown>) => {
    const handler = handlers[m.type as string];
    if (!handler) return;
    handler(m).then(
      (reply) => process.send?.({ ...reply, id: m.id }),
      (err: unknown) =>
        process.send?.({ id: m.id, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
    );
  });
  process.on("disconnect", () => process.exit(0));
  process.send?.({ type: "ready" });
}

main().catch((err: unknown) => {
  process.send?.({ type: "failed", error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  process.exit(1);
});
