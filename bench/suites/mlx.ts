// The MLX engine's tokens/s on the demo MLX model (greedy, bfloat16 weights computed in float32 on
// the CPU here, Metal on a Mac): the engine alone (MlxEngine.generate; MLX itself runs in the
// engine's child process) against the real Agent relaying the same generations over a loopback
// WebSocket. Both paths use one engine, so one child and one loaded model; they run once per
// repetition in rotating order. Standalone: `npx tsx bench/suites/mlx.ts [--reps N]`.
import { mkdtemp, rm } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocketServer } from "ws";
import { Agent } from "../../node-agent/agent.ts";
import { DEMO_MLX_MODEL_NAME, ensureDemoMlxModel } from "../../node-agent/demo-mlx-model.ts";
import { createMlxEngine, type MlxEngine } from "../../node-agent/engines/mlx/index.ts";
import { silentLogger } from "../../node-agent/log.ts";
import { type Spread, spread } from "../lib/stats.ts";
import { cell, type TargetCheck, table } from "../lib/table.ts";

export const MLX_PROMPT = "Once upon a time, in a lab full of Mac minis,";
/** The demo model's context is 1,024 tokens; this leaves room for the prompt. */
export const MLX_MAX_TOKENS = 768;

type MlxPath = "engine" | "agent-loopback";
const LABEL: Record<MlxPath, string> = {
  engine: "MlxEngine alone (MLX in its child process)",
  "agent-loopback": "Agent + MlxEngine, loopback WebSocket",
};

export interface MlxRow {
  path: MlxPath;
  tokensPerSecond: Spread;
  tokens: number[];
  /** Tokens/s ÷ the engine alone's tokens/s in the same repetition, %. */
  percentOfEngine: Spread;
}

export interface MlxResult {
  model: string;
  device: string;
  rows: MlxRow[];
  checks: TargetCheck[];
  text: string;
}

export interface MlxBenchOptions {
  reps?: number;
  /** Where the demo model is cached (default: a temporary folder, removed afterwards). */
  cacheDir?: string;
}

export async function runMlx(options: MlxBenchOptions = {}): Promise<MlxResult> {
  const reps = options.reps ?? 10;
  const cacheDir = options.cacheDir ?? (await mkdtemp(join(tmpdir(), "orchard-bench-mlx-")));
  const model = DEMO_MLX_MODEL_NAME;
  const engine = createMlxEngine({
    models: [{ name: model, path: await ensureDemoMlxModel(cacheDir) }],
    capacity: 1,
  });
  const hub = await LoopbackHub.start();
  let agent: Agent | undefined;
  try {
    await engine.load(model);
    agent = await connectAgent(engine, hub.url);
    const once: Record<MlxPath, () => Promise<{ tokens: number; ms: number }>> = {
      engine: () => engineOnce(engine, model),
      "agent-loopback": () => hub.generate(model, MLX_PROMPT, MLX_MAX_TOKENS),
    };
    const paths = Object.keys(once) as MlxPath[];
    for (const path of paths) await once[path](); // untimed: JIT, MLX's buffers, the socket
    const samples: Record<MlxPath, { tokens: number; tps: number }[]> = { engine: [], "agent-loopback": [] };
    for (let rep = 0; rep < reps; rep++) {
      for (const path of paths.map((_, i) => paths[(i + rep) % paths.length] as MlxPath)) {
        const r = await once[path]();
        samples[path].push({ tokens: r.tokens, tps: (r.tokens * 1000) / r.ms });
      }
    }
    const rows: MlxRow[] = paths.map((path) => ({
      path,
      tokensPerSecond: spread(samples[path].map((s) => s.tps)),
      tokens: samples[path].map((s) => s.tokens),
      percentOfEngine: spread(
        samples[path].map((s, i) => (s.tps / (samples.engine[i]?.tps as number)) * 100),
      ),
    }));
    const status = engine.status(model);
    const device = `${status?.device ?? "?"}, ${status?.computeDtype ?? "?"}`;
    const through = rows.find((r) => r.path === "agent-loopback") as MlxRow;
    const checks: TargetCheck[] = [
      {
        target: "Agent (MLX) ≥ 95% of the MLX engine alone's tokens/s — through the Agent",
        measured: `${cell(through.percentOfEngine, 1)} %`,
        pass: through.percentOfEngine.median >= 95,
      },
    ];
    const text = table(
      [
        `${model}, greedy, ${device}, ${MLX_MAX_TOKENS} tokens, ${reps} reps`,
        "tokens/s",
        "% of engine alone (paired)",
        "tokens",
      ],
      rows.map((r) => [
        LABEL[r.path],
        cell(r.tokensPerSecond, 0),
        cell(r.percentOfEngine, 1),
        [...new Set(r.tokens)].join("/"),
      ]),
    );
    return { model, device, rows, checks, text };
  } finally {
    await agent?.stop().catch(() => undefined);
    await hub.close();
    await engine.close();
    if (!options.cacheDir) await rm(cacheDir, { recursive: true, force: true });
  }
}

async function engineOnce(engine: MlxEngine, model: string): Promise<{ tokens: number; ms: number }> {
  const t0 = performance.now();
  const generation = engine.generate(
    { model, prompt: MLX_PROMPT, params: { maxTokens: MLX_MAX_TOKENS, temperature: 0 } },
    new AbortController().signal,
  );
  let tokens = 0;
  for await (const piece of generation) tokens += piece.tokens;
  await generation.result;
  return { tokens, ms: performance.now() - t0 };
}

function connectAgent(engine: MlxEngine, url: string): Promise<Agent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the agent was not welcomed in 30 s")), 30_000);
    const logger = {
      ...silentLogger,
      info: (msg: string) => {
        if (msg !== "connected") return;
        clearTimeout(timer);
        resolve(agent);
      },
      child: () => logger,
    };
    const agent: Agent = new Agent({
      engine,
      gatewayUrl: url,
      token: "bench",
      agentId: "bench-mlx",
      name: "bench-mlx",
      capacity: 1,
      logger,
    });
    void agent.start();
  });
}

/** The smallest hub the Agent accepts: welcome, pong, and one generate at a time counted to done. */
class LoopbackHub {
  private socket?: import("ws").WebSocket;
  private seq = 0;
  private readonly pending = new Map<
    string,
    { t0: number; tokens: number; done: (r: { tokens: number; ms: number }) => void }
  >();

  private constructor(
    private readonly wss: WebSocketServer,
    readonly url: string,
  ) {
    wss.on("connection", (ws) => {
      ws.on("message", (data) => {
        const text = data.toString();
        if (text === "ping") return ws.send("pong");
        const frame = JSON.parse(text) as { type: string; id?: string; agentId?: string; tokens?: number };
        if (frame.type === "hello") {
          this.socket = ws;
          const welcome = {
            type: "welcome",
            protocol: 1,
            agentId: frame.agentId,
            sessionId: "loopback",
            pool: "loopback",
          };
          return ws.send(
            JSON.stringify({ ...welcome, heartbeatIntervalMs: 15_000, healthIntervalMs: 60_000 }),
          );
        }
        const entry = frame.id === undefined ? undefined : this.pending.get(frame.id);
        if (!entry) return;
        if (frame.type === "chunk") entry.tokens += frame.tokens ?? 0;
        if (frame.type === "done" || frame.type === "error") {
          this.pending.delete(frame.id as string);
          entry.done({ tokens: entry.tokens, ms: performance.now() - entry.t0 });
        }
      });
    });
  }

  static async start(): Promise<LoopbackHub> {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", () => r()));
    const { port } = probe.address() as AddressInfo;
    await new Promise<void>((r) => probe.close(() => r()));
    return new LoopbackHub(
      new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false }),
      `ws://127.0.0.1:${port}/`,
    );
  }

  generate(model: string, prompt: string, maxTokens: number): Promise<{ tokens: number; ms: number }> {
    return new Promise((done) => {
      const id = `mlx-${++this.seq}`;
      this.pending.set(id, { t0: performance.now(), tokens: 0, done });
      this.socket?.send(
        JSON.stringify({ type: "generate", id, model, prompt, params: { maxTokens, temperature: 0 } }),
      );
    });
  }

  async close(): Promise<void> {
    for (const client of this.wss.clients) client.terminate();
    await new Promise<void>((r) => this.wss.close(() => r()));
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const at = process.argv.indexOf("--reps");
  const result = await runMlx(at > 0 ? { reps: Number(process.argv[at + 1]) } : {});
  process.stdout.write(
    `${result.text}\n\n${result.checks.map((c) => `${c.pass ? "PASS" : "FAIL"} ${c.target}: ${c.measured}`).join("\n")}\n`,
  );
}
