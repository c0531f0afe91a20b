// The MLX engine inside the real agent CLI, beside llama.cpp: `--model NAME=mlx:FOLDER` serves the
// demo MLX model and `--model NAME=FILE` the demo GGUF, hello announces both engines, generations
// stream on each, and when the MLX child dies mid-stream that request fails with a stable code
// while the agent stays connected, the llama.cpp generation finishes, and MLX serves again.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ensureDemoMlxModel } from "../../node-agent/demo-mlx-model.ts";
import { ensureDemoModel } from "../../node-agent/demo-model.ts";
import { createMlxEngine } from "../../node-agent/engines/mlx/index.ts";
import type { AgentFrame } from "../../schema/protocol.ts";
import { mlxSkipReason } from "./mlx-setup.ts";
import { type HubConnection, ScriptedTestHub } from "./scripted-hub.ts";

const skip = await mlxSkipReason();
const root = join(import.meta.dirname, "..", "..");
const PROMPT = "Once upon a time";

function fakeJwt(claims: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.c2ln`;
}

let dir: string;
let hub: ScriptedTestHub;
let agent: ChildProcess;
let conn: HubConnection;
let stderr = "";
/** What the MLX engine alone writes for PROMPT, greedy, 40 tokens. */
let alone: string;

beforeAll(async () => {
  if (skip) return;
  dir = await mkdtemp(join(tmpdir(), "orchard-mlx-agent-"));
  const [gguf, mlx] = await Promise.all([ensureDemoModel(dir), ensureDemoMlxModel(dir)]);
  const engine = createMlxEngine({ models: [{ name: "m", path: mlx }] });
  const generation = engine.generate(
    { model: "m", prompt: PROMPT, params: { maxTokens: 40, temperature: 0 } },
    new AbortController().signal,
  );
  alone = "";
  for await (const piece of generation) alone += piece.text;
  await engine.close();

  hub = await ScriptedTestHub.start();
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ORCHARD_")));
  agent = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "node-agent/main.ts",
      "start",
      "--gateway",
      hub.url.replace(/^ws/, "http").replace(/\/agents\/connect$/, ""),
      "--token",
      fakeJwt({ sub: "mini-mlx", role: "agent", exp: 4_000_000_000 }),
      "--model",
      `gguf=${gguf}`,
      "--model",
      `tiny-mlx=mlx:${mlx}`,
      "--flush-ms",
      "0",
    ],
    { cwd: root, env: { ...base, ORCHARD_CACHE_DIR: dir }, stdio: ["ignore", "ignore", "pipe"] },
  );
  agent.stderr?.on("data", (d) => {
    stderr += d;
  });
  conn = await vi.waitFor(
    () => {
      const c = hub.connections[0];
      if (!c?.of("hello").length) throw new Error(`no hello yet; agent said: ${stderr.slice(-400)}`);
      return c;
    },
    { timeout: 60_000, interval: 50 },
  );
}, 120_000);

afterAll(async () => {
  agent?.kill("SIGKILL");
  await hub?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Sends a generate frame and resolves with its frames once it ends (done or error). */
async function generate(id: string, model: string, maxTokens: number, onChunk?: (n: number) => void) {
  conn.send({ type: "generate", id, model, prompt: PROMPT, params: { maxTokens, temperature: 0 } });
  let seen = 0;
  return vi.waitFor(
    () => {
      const frames = conn.forId(id);
      const chunks = frames.filter((f) => f.type === "chunk").length;
      for (; seen < chunks; seen++) onChunk?.(seen + 1);
      const end = frames.find((f) => f.type === "done" || f.type === "error");
      if (!end) throw new Error(`${id} has not ended`);
      return { frames, end, text: frames.map((f) => (f.type === "chunk" ? f.text : "")).join("") };
    },
    { timeout: 60_000, interval: 10 },
  );
}

/** The pid of the agent's MLX child (the process running engines/mlx/child.ts). */
function mlxChildPid(): number {
  const out = execFileSync("ps", ["-A", "-o", "pid=,ppid=,args="], { encoding: "utf8" });
  const line = out
    .split("\n")
    .map((l) => l.trim().split(/\s+/))
    .find(([, ppid, ...args]) => Number(ppid) === agent.pid && args.some((a) => a.includes("mlx/child.")));
  if (!line) throw new Error("no MLX child under the agent");
  return Number(line[0]);
}

describe("the agent with an MLX model beside a GGUF one", () => {
  it("announces both engines and serves each model on its own", async (ctx) => {
    if (skip) ctx.skip(skip);
    const hello = conn.of("hello")[0] as Extract<AgentFrame, { type: "hello" }>;
    expect(hello.engines).toEqual(["llamacpp", "mlx"]);
    expect(hello.models.map((m) => [m.name, m.engine, m.loaded])).toEqual([
      ["gguf", "llamacpp", true],
      ["tiny-mlx", "mlx", true],
    ]);
    expect(hello.engineInfo?.find((e) => e.name === "mlx")?.quantizations).toContain("4bit");
    const [mlx, gguf] = await Promise.all([generate("m1", "tiny-mlx", 40), generate("g1", "gguf", 40)]);
    expect(mlx.end).toMatchObject({ type: "done", finishReason: "length", usage: { completionTokens: 40 } });
    // Through the agent, the same text as from the engine alone.
    expect(mlx.text).toBe(alone);
    expect(gguf.end).toMatchObject({ type: "done", usage: { completionTokens: 40 } });
    expect(gguf.text).not.toBe(mlx.text);
  });

  it("fails only the MLX request when its child dies, stays connected, and serves MLX again", async (ctx) => {
    if (skip) ctx.skip(skip);
    const pid = mlxChildPid();
    const bystander = generate("g2", "gguf", 300);
    const killed = await generate("m2", "tiny-mlx", 900, (n) => {
      if (n === 2) process.kill(pid, "SIGKILL");
    });
    expect(killed.end).toMatchObject({ type: "error", code: "ENGINE_ERROR", retryable: true });
    expect((killed.end as { message: string }).message).toMatch(/MLX process .* died \(signal SIGKILL\)/);
    expect((await bystander).end).toMatchObject({ type: "done", usage: { completionTokens: 300 } });
    expect(conn.closed).toBeUndefined();
    const again = await generate("m3", "tiny-mlx", 40);
    expect(again.end).toMatchObject({ type: "done", usage: { completionTokens: 40 } });
    expect(again.text).toBe(alone);
    expect(mlxChildPid()).not.toBe(pid);
    expect(stderr).toContain('"msg":"mlx child exited; restarting it"');
    expect(stderr).toContain('"msg":"mlx child restarted"');
  });
});
