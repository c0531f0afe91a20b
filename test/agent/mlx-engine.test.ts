// The MLX engine for real (node-mlx on this machine's CPU, in child processes) on the generated MLX
// demo model: the shared engine conformance suite, then what only MLX does — float32, bfloat16 and
// 4-bit weights writing the same greedy text, sampling, the tokenizer's counts, the chat template,
// load failures, unloading, and a child that dies (killed, or a real native abort in MLX) failing
// only its model's generations with a stable code and coming back after a backoff.
import { execFileSync } from "node:child_process";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, type TestContext, vi } from "vitest";
import { type DemoMlxDtype, ensureDemoMlxModel } from "../../node-agent/demo-mlx-model.ts";
import {
  EngineError,
  type Generation,
  type GenerationPiece,
  type GenerationRequest,
} from "../../node-agent/engines/engine.ts";
import {
  createMlxEngine,
  type MlxEngine,
  MlxEngineError,
  type MlxEngineOptions,
} from "../../node-agent/engines/mlx/index.ts";
import { RUNTIME_DIR } from "../../node-agent/engines/mlx/runtime.ts";
import { createLogger } from "../../node-agent/log.ts";
import { engineConformance } from "./engine-conformance.ts";
import { mlxSkipReason, NOT_A_MAC } from "./mlx-setup.ts";

const skip = await mlxSkipReason();
const PROMPTS = ["Once upon a time", "they were all there", "Hello, world!\n"];

let dir: string;
const folders = {} as Record<DemoMlxDtype, string>;
const engines: MlxEngine[] = [];
const logLines: Array<Record<string, unknown>> = [];
const log = createLogger({ level: "debug", write: (line) => logLines.push(JSON.parse(line)) });

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "orchard-mlx-engine-"));
  for (const dtype of ["float32", "bfloat16", "4bit"] as const)
    folders[dtype] = await ensureDemoMlxModel(dir, { dtype });
});

afterAll(async () => {
  await Promise.all(engines.map((e) => e.close()));
  await rm(dir, { recursive: true, force: true });
});

function engineWith(
  options: Partial<MlxEngineOptions> & { models?: MlxEngineOptions["models"] } = {},
): MlxEngine {
  const engine = createMlxEngine({
    models: [{ name: "demo", path: folders.bfloat16 }],
    capacity: 4,
    restartBaseMs: 50,
    log,
    ...options,
  });
  engines.push(engine);
  return engine;
}

function request(over: Partial<GenerationRequest> & { params?: Partial<GenerationRequest["params"]> } = {}) {
  const { params, ...rest } = over;
  return {
    model: "demo",
    ...(rest.messages ? {} : { prompt: PROMPTS[0] }),
    ...rest,
    params: { maxTokens: 32, temperature: 0, ...params },
  } as GenerationRequest;
}

async function collect(generation: Generation) {
  const pieces: GenerationPiece[] = [];
  for await (const piece of generation) pieces.push(piece);
  const result = await generation.result;
  return { pieces, text: pieces.map((p) => p.text).join(""), ...result, ...result.usage };
}

const run = (
  engine: MlxEngine,
  over?: Parameters<typeof request>[0],
  signal = new AbortController().signal,
) => collect(engine.generate(request(over), signal));

/** Both the iterator and `result` fail, with the same error; returns it and the pieces before it. */
async function failure(generation: Generation, onPiece?: (n: number) => void) {
  const pieces: GenerationPiece[] = [];
  let thrown: unknown;
  try {
    for await (const piece of generation) {
      pieces.push(piece);
      onPiece?.(pieces.length);
    }
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(EngineError);
  await expect(generation.result).rejects.toBe(thrown);
  return { error: thrown as MlxEngineError, pieces };
}

/** The demo model's tokenizer, loaded here with the same library, to count independently of the engine. */
async function demoTokenizer() {
  const require = createRequire(join(RUNTIME_DIR, "package.json"));
  const { TokenizerLoader } = require("@lenml/tokenizers");
  return TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(await readFile(join(folders.bfloat16, "tokenizer.json"), "utf8")),
    tokenizerConfig: JSON.parse(await readFile(join(folders.bfloat16, "tokenizer_config.json"), "utf8")),
  });
}

function skipped(ctx: TestContext) {
  if (skip) ctx.skip(skip);
}

/** Resident memory of a process, in bytes (ps works on Linux and macOS). */
function rssOf(pid: number): number {
  return Number(execFileSync("ps", ["-o", "rss=", "-p", String(pid)], { encoding: "utf8" }).trim()) * 1024;
}

engineConformance({
  label: "MLX (demo MLX model, bfloat16 weights)",
  engine: "mlx",
  model: "demo",
  prompt: PROMPTS[0] as string,
  ...(skip ? { skip } : {}),
  create: async () => {
    const engine = engineWith();
    await engine.load("demo");
    return engine;
  },
});

describe("the MLX engine on the demo model", () => {
  let engine: MlxEngine;
  beforeAll(async () => {
    if (skip) return;
    engine = engineWith({
      models: [
        { name: "demo", path: folders.bfloat16 },
        { name: "demo-f32", path: folders.float32 },
        { name: "demo-4bit", path: folders["4bit"] },
      ],
    });
    await Promise.all(["demo", "demo-f32", "demo-4bit"].map((m) => engine.load(m)));
  });

  it("loads each variant on the CPU in float32 and says what it holds", async (ctx) => {
    skipped(ctx);
    const models = await engine.listModels();
    expect(models.map((m) => [m.name, m.engine, m.loaded, m.contextLength])).toEqual([
      ["demo", "mlx", true, 1024],
      ["demo-f32", "mlx", true, 1024],
      ["demo-4bit", "mlx", true, 1024],
    ]);
    const bf16 = engine.status("demo");
    const f32 = engine.status("demo-f32");
    const q4 = engine.status("demo-4bit");
    expect(bf16).toMatchObject({ device: "cpu", metal: false, modelType: "llama", computeDtype: "float32" });
    expect(bf16?.quantization).toBeUndefined();
    expect(q4?.quantization).toEqual({ bits: 4, groupSize: 64 });
    // bfloat16 weights are held as float32 here (what the footprint counts); 4-bit stays packed.
    expect(bf16?.weightBytes).toBe(f32?.weightBytes);
    expect(f32?.weightBytes).toBeGreaterThan(5_000_000);
    expect(q4?.weightBytes).toBeLessThan((f32?.weightBytes ?? 0) / 4);
    // 2 layers x (keys + values) x 2 KV heads x 64 dims x 4 bytes per token.
    expect(f32?.kvBytesPerToken).toBe(2048);
    const info = models.find((m) => m.name === "demo");
    expect(info?.footprintBytes).toBe((bf16?.weightBytes ?? 0) + 4 * 1024 * 2048);
    // One child per model.
    expect(new Set([bf16?.pid, f32?.pid, q4?.pid]).size).toBe(3);
    expect(await engine.describe()).toEqual([
      { name: "mlx", capabilities: [], quantizations: expect.arrayContaining(["bf16", "4bit"]) },
    ]);
  });

  it("writes the same greedy text from float32, bfloat16 and 4-bit weights, for prompts and chat", async (ctx) => {
    skipped(ctx);
    const requests = [
      ...PROMPTS.map((prompt) => ({ prompt })),
      { messages: [{ role: "user" as const, content: "Say something." }] },
    ];
    for (const r of requests) {
      const bf16 = await run(engine, { ...r, params: { maxTokens: 48 } });
      const f32 = await run(engine, { ...r, model: "demo-f32", params: { maxTokens: 48 } });
      const q4 = await run(engine, { ...r, model: "demo-4bit", params: { maxTokens: 48 } });
      expect(bf16.completionTokens).toBe(48);
      expect(f32.text).toBe(bf16.text);
      expect(q4.text).toBe(bf16.text);
      expect(/^[\x20-\x7e\t\n]+$/.test(bf16.text), JSON.stringify(bf16.text)).toBe(true);
    }
    // The prompt matters: random weights that ignored it would be no test of the forward pass.
    const texts = await Promise.all(PROMPTS.map((prompt) => run(engine, { prompt })));
    expect(new Set(texts.map((t) => t.text)).size).toBe(PROMPTS.length);
  });

  it("is deterministic across child processes: a fresh engine writes the same text", async (ctx) => {
    skipped(ctx);
    const before = await run(engine, { params: { maxTokens: 64 } });
    const fresh = engineWith();
    const again = await run(fresh, { params: { maxTokens: 64 } });
    expect(again.text).toBe(before.text);
    await fresh.close();
  });

  it("counts tokens as the model's tokenizer does", async (ctx) => {
    skipped(ctx);
    const tokenizer = await demoTokenizer();
    for (const prompt of PROMPTS) {
      const out = await run(engine, { prompt, params: { maxTokens: 5 } });
      expect(out.usage.promptTokens).toBe(tokenizer.encode(prompt).length);
    }
    const messages = [
      { role: "system" as const, content: "Be brief." },
      { role: "user" as const, content: "Hello there" },
    ];
    const chat = await run(engine, { messages, params: { maxTokens: 5 } });
    const rendered: number[] = tokenizer.apply_chat_template(messages, {
      add_generation_prompt: true,
      tokenize: true,
    });
    expect(chat.usage.promptTokens).toBe(rendered.length);
    // The template opens with BOS and a turn marker, both special tokens (ids past the byte vocabulary).
    expect(rendered[0]).toBe(tokenizer.model.tokens_to_ids.get("<|begin|>"));
    expect(rendered[1]).toBe(tokenizer.model.tokens_to_ids.get("<|system|>"));
  });

  it("continues a trailing assistant message instead of starting a new reply", async (ctx) => {
    skipped(ctx);
    const user = { role: "user" as const, content: "Say something." };
    const fresh = await run(engine, { messages: [user] });
    const continued = await run(engine, { messages: [user, { role: "assistant", content: " the" }] });
    // The reply's opening, then the text as it is: no end-of-turn after it, no BOS before it.
    const prefix: number[] = (await demoTokenizer()).encode(" the", { add_special_tokens: false });
    expect(prefix.length).toBeGreaterThan(0);
    expect(continued.usage.promptTokens).toBe(fresh.usage.promptTokens + prefix.length);
    expect(continued.text).not.toBe(fresh.text);
  });

  it("samples with temperature, top-p and seed", async (ctx) => {
    skipped(ctx);
    const sampled = (seed?: number, topP?: number, temperature = 1) =>
      run(engine, {
        params: {
          maxTokens: 32,
          temperature,
          ...(seed === undefined ? {} : { seed }),
          ...(topP ? { topP } : {}),
        },
      });
    const greedy = await run(engine);
    const [a, b, c] = [await sampled(7), await sampled(7), await sampled(8)];
    expect(b.text).toBe(a.text);
    expect(c.text).not.toBe(a.text);
    expect(a.text).not.toBe(greedy.text);
    // Top-p this small keeps only the most likely token: greedy again, whatever the seed.
    expect((await sampled(1, 0.001)).text).toBe(greedy.text);
    expect((await sampled(2, 0.001)).text).toBe(greedy.text);
    // Without a seed every request draws its own.
    const [x, y] = await Promise.all([sampled(), sampled()]);
    expect(x.text).not.toBe(y.text);
    // Seeded generations running side by side draw from their own keys, not one shared stream.
    const [p, q] = await Promise.all([sampled(7), sampled(7)]);
    expect([p.text, q.text]).toEqual([a.text, a.text]);
  });

  it("runs concurrent generations side by side without mixing them", async (ctx) => {
    skipped(ctx);
    const alone = [];
    for (const prompt of PROMPTS) alone.push((await run(engine, { prompt })).text);
    const together = await Promise.all(PROMPTS.map((prompt) => run(engine, { prompt })));
    expect(together.map((t) => t.text)).toEqual(alone);
  });

  it("ends at the earliest of several stop sequences, and at the end of the context", async (ctx) => {
    skipped(ctx);
    const full = await run(engine, { params: { maxTokens: 48 } });
    const first = full.text.slice(10, 13);
    const later = full.text.slice(20, 24);
    const cut = await run(engine, { params: { maxTokens: 48, stop: [later, first] } });
    expect(cut).toMatchObject({ finishReason: "stop", text: full.text.slice(0, full.text.indexOf(first)) });
    const short = engineWith({ contextSize: 24 });
    const capped = await run(short, { params: { maxTokens: 100 } });
    expect(capped.finishReason).toBe("length");
    expect(capped.usage.promptTokens + capped.usage.completionTokens).toBe(24);
    expect(capped.text).toBe(full.text.slice(0, capped.text.length));
    await short.close();
  });

  it("refuses a prompt longer than the context with CONTEXT_OVERFLOW", async (ctx) => {
    skipped(ctx);
    const long = "the people said ".repeat(400);
    const { error } = await failure(engine.generate(request({ prompt: long }), new AbortController().signal));
    expect(error).toMatchObject({ code: "CONTEXT_OVERFLOW", retryable: false });
    expect((await run(engine, { params: { maxTokens: 2 } })).completionTokens).toBe(2);
  });

  it("keeps a queued generation waiting, and cancels it there without touching the running one", async (ctx) => {
    skipped(ctx);
    const single = engineWith({ capacity: 1 });
    const running = single.generate(request({ params: { maxTokens: 200 } }), new AbortController().signal);
    const queued = new AbortController();
    const waiting = single.generate(request(), queued.signal);
    setTimeout(() => queued.abort(), 50);
    const cancelled = await collect(waiting);
    expect(cancelled).toMatchObject({ finishReason: "cancelled", text: "", usage: { completionTokens: 0 } });
    expect(await collect(running)).toMatchObject({
      finishReason: "length",
      usage: { completionTokens: 200 },
    });
    await single.close();
  });

  it("keeps the child's memory flat over long generations (GC and finalizers run)", async (ctx) => {
    skipped(ctx);
    await run(engine, { params: { maxTokens: 200 } });
    const pid = engine.status("demo")?.pid as number;
    const before = rssOf(pid);
    for (let i = 0; i < 3; i++) {
      const out = await run(engine, { prompt: "x", params: { maxTokens: 1000 } });
      expect(out.usage.completionTokens).toBe(1000);
    }
    // Without a GC and a turn of the event loop per step, node-mlx keeps ~600 KB per token here.
    expect(rssOf(pid) - before).toBeLessThan(64 * 1024 * 1024);
  });
});

describe("loading", () => {
  let bad: string;
  beforeAll(async () => {
    bad = await mkdtemp(join(dir, "bad-"));
    const copy = async (name: string, edit?: (files: string) => Promise<void>) => {
      const target = join(bad, name);
      await cp(folders.bfloat16, target, { recursive: true });
      await edit?.(target);
      return target;
    };
    await copy("garbage", (f) =>
      writeFile(join(f, "model.safetensors"), Buffer.from("not safetensors at all")),
    );
    await copy("truncated", async (f) => {
      const bytes = await readFile(join(f, "model.safetensors"));
      await writeFile(join(f, "model.safetensors"), bytes.subarray(0, bytes.length / 2));
    });
    const editConfig = (edit: (c: Record<string, unknown>) => void) => async (f: string) => {
      const config = JSON.parse(await readFile(join(f, "config.json"), "utf8"));
      edit(config);
      await writeFile(join(f, "config.json"), JSON.stringify(config));
    };
    await copy(
      "unsupported",
      editConfig((c) => (c.model_type = "mamba")),
    );
    await copy(
      "misfit",
      editConfig((c) => (c.intermediate_size = 768)),
    );
    await copy("no-template", async (f) => {
      const config = JSON.parse(await readFile(join(f, "tokenizer_config.json"), "utf8"));
      delete config.chat_template;
      await writeFile(join(f, "tokenizer_config.json"), JSON.stringify(config));
    });
  });

  it("fails a folder that is no loadable model with MODEL_LOAD_FAILED, saying why, and keeps serving", async (ctx) => {
    skipped(ctx);
    const names = ["garbage", "truncated", "unsupported", "misfit", "missing"];
    const engine = engineWith({
      models: [
        { name: "demo", path: folders.bfloat16 },
        ...names.map((name) => ({ name, path: join(bad, name) })),
      ],
    });
    const why: Record<string, RegExp> = {
      garbage: /not readable safetensors/,
      truncated: /not readable safetensors/,
      unsupported: /model_type "mamba" is not one/,
      misfit: /do not fit config\.json/,
      missing: /has no readable config\.json/,
    };
    for (const name of names) {
      const err = await engine.load(name).catch((e: unknown) => e);
      expect(err, name).toBeInstanceOf(MlxEngineError);
      expect(err, name).toMatchObject({
        code: "MODEL_LOAD_FAILED",
        mlxCode: "MLX_LOAD_FAILED",
        retryable: false,
      });
      expect((err as Error).message, name).toMatch(why[name] as RegExp);
    }
    // A generation on one fails the same way (each attempt tries the folder again: it may be fixed).
    const { error } = await failure(
      engine.generate(request({ model: "garbage" }), new AbortController().signal),
    );
    expect(error).toMatchObject({ code: "MODEL_LOAD_FAILED", mlxCode: "MLX_LOAD_FAILED" });
    expect((await engine.listModels()).filter((m) => m.loaded).map((m) => m.name)).toEqual([]);
    expect((await run(engine, { params: { maxTokens: 3 } })).completionTokens).toBe(3);
  });

  it("answers chat on a model without a chat template with INVALID_REQUEST, and prompts still work", async (ctx) => {
    skipped(ctx);
    const engine = engineWith({ models: [{ name: "plain", path: join(bad, "no-template") }] });
    const { error } = await failure(
      engine.generate(
        request({ model: "plain", messages: [{ role: "user", content: "hi" }] }),
        new AbortController().signal,
      ),
    );
    expect(error).toMatchObject({ code: "INVALID_REQUEST" });
    expect(error.message).toMatch(/no chat template/);
    expect((await run(engine, { model: "plain", params: { maxTokens: 4 } })).completionTokens).toBe(4);
  });

  it("loads and forgets a registry version from a LoadSpec", async (ctx) => {
    skipped(ctx);
    const engine = engineWith();
    const info = await engine.load("demo-4bit:2", {
      path: folders["4bit"],
      parameters: { contextLength: 256 },
    });
    expect(info).toMatchObject({ name: "demo-4bit:2", engine: "mlx", loaded: true, contextLength: 256 });
    expect(await engine.load("demo-4bit:2", { path: folders["4bit"] })).toEqual(info);
    await expect(engine.load("demo-4bit:2", { path: folders.float32 })).rejects.toMatchObject({
      code: "MODEL_LOAD_FAILED",
    });
    await expect(engine.load("demo", { path: folders.float32 })).rejects.toThrow(/configured on this agent/);
    expect((await run(engine, { model: "demo-4bit:2", params: { maxTokens: 3 } })).completionTokens).toBe(3);
    await engine.unload("demo-4bit:2");
    expect((await engine.listModels()).map((m) => m.name)).toEqual(["demo"]);
    await expect(engine.load("broken:1", { path: join(bad, "garbage") })).rejects.toMatchObject({
      code: "MODEL_LOAD_FAILED",
    });
    expect((await engine.listModels()).map((m) => m.name)).toEqual(["demo"]);
  });

  it("says ENGINE_UNAVAILABLE when the MLX runtime is not installed", async (ctx) => {
    skipped(ctx);
    const empty = await mkdtemp(join(dir, "no-runtime-"));
    const engine = engineWith({ runtimeDir: empty });
    const err = await engine.load("demo").catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "ENGINE_UNAVAILABLE", mlxCode: "MLX_UNAVAILABLE", retryable: true });
    expect((err as Error).message).toMatch(/npm run mlx:install/);
  });
});

describe("unloading", () => {
  it("fails running generations with a retryable ENGINE_ERROR, ends the child, and loads again", async (ctx) => {
    skipped(ctx);
    const engine = engineWith();
    await engine.load("demo");
    const pid = engine.status("demo")?.pid as number;
    const generation = engine.generate(
      request({ params: { maxTokens: 1000 } }),
      new AbortController().signal,
    );
    let unloading: Promise<void> | undefined;
    const { error } = await failure(generation, (n) => {
      if (n === 2) unloading = engine.unload("demo");
    });
    await unloading;
    expect(error).toMatchObject({ code: "ENGINE_ERROR", mlxCode: "MLX_MODEL_UNLOADED", retryable: true });
    expect(engine.status("demo")).toBeUndefined();
    expect((await engine.listModels())[0]).toMatchObject({ name: "demo", loaded: false });
    expect(() => process.kill(pid, 0)).toThrow();
    expect((await engine.load("demo")).loaded).toBe(true);
    expect(engine.status("demo")?.pid).not.toBe(pid);
  });

  it("with whenIdle, lets running generations finish and refuses new ones meanwhile", async (ctx) => {
    skipped(ctx);
    const engine = engineWith();
    await engine.load("demo");
    const running = engine.generate(request({ params: { maxTokens: 100 } }), new AbortController().signal);
    const unloading = engine.unload("demo", { whenIdle: true });
    const refused = await failure(engine.generate(request(), new AbortController().signal));
    expect(refused.error).toMatchObject({ code: "MODEL_NOT_FOUND", retryable: true });
    expect(await collect(running)).toMatchObject({
      finishReason: "length",
      usage: { completionTokens: 100 },
    });
    await unloading;
    expect(engine.status("demo")).toBeUndefined();
  });
});

describe("a child that dies", () => {
  it("fails its model's generation with MLX_PROCESS_EXITED, others keep going, and it restarts", async (ctx) => {
    skipped(ctx);
    const engine = engineWith({
      models: [
        { name: "demo", path: folders.bfloat16 },
        { name: "other", path: folders.float32 },
      ],
      restartBaseMs: 300,
    });
    await Promise.all([engine.load("demo"), engine.load("other")]);
    const expected = (await run(engine, { params: { maxTokens: 64 } })).text;
    const pid = engine.status("demo")?.pid as number;
    const since = logLines.length;

    const bystander = collect(
      engine.generate(request({ model: "other", params: { maxTokens: 400 } }), new AbortController().signal),
    );
    const { error, pieces } = await failure(
      engine.generate(request({ params: { maxTokens: 4000 } }), new AbortController().signal),
      (n) => n === 3 && process.kill(pid, "SIGKILL"),
    );
    expect(pieces.length).toBeGreaterThanOrEqual(3);
    expect(error).toBeInstanceOf(MlxEngineError);
    expect(error).toMatchObject({ code: "ENGINE_ERROR", mlxCode: "MLX_PROCESS_EXITED", retryable: true });
    expect(error.message).toMatch(/SIGKILL/);
    expect(await bystander).toMatchObject({ finishReason: "length", usage: { completionTokens: 400 } });

    // While it restarts, a request waits for it and then succeeds, with the same text as before.
    const after = await run(engine, { params: { maxTokens: 64 } });
    expect(after.text).toBe(expected);
    const status = engine.status("demo");
    expect(status?.pid).not.toBe(pid);
    expect(status?.restarts).toBe(1);
    const lines = logLines.slice(since);
    expect(lines.find((l) => l.msg === "mlx child exited; restarting it")).toMatchObject({
      level: "warn",
      model: "demo",
      signal: "SIGKILL",
      inFlight: 1,
      restartInMs: 300,
    });
    expect(lines.find((l) => l.msg === "mlx child restarted")).toMatchObject({
      model: "demo",
      pid: status?.pid,
    });
  });

  it("fails a request waiting out a restart's backoff at once when the model is unloaded", async (ctx) => {
    skipped(ctx);
    const engine = engineWith({ restartBaseMs: 60_000 });
    await engine.load("demo");
    const pid = engine.status("demo")?.pid as number;
    const since = logLines.length;
    process.kill(pid, "SIGKILL");
    await vi.waitFor(() =>
      expect(logLines.slice(since).some((l) => l.msg === "mlx child exited; restarting it")).toBe(true),
    );
    const waiting = engine.generate(request(), new AbortController().signal);
    const started = performance.now();
    setTimeout(() => void engine.unload("demo"), 100);
    const { error } = await failure(waiting);
    expect(error).toMatchObject({ code: "ENGINE_ERROR", mlxCode: "MLX_MODEL_UNLOADED", retryable: true });
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it("survives a real native abort in MLX (float16 matmul on the CPU) and backs off between restarts", async (ctx) => {
    skipped(ctx);
    if (NOT_A_MAC === undefined) ctx.skip("Metal runs bfloat16 matmul, so nothing aborts on a Mac");
    // "native" keeps the bfloat16 weights as stored, which MLX's CPU matmul cannot run: it aborts.
    const engine = engineWith({
      models: [
        { name: "demo", path: folders.bfloat16 },
        { name: "safe", path: folders.float32 },
      ],
      computeDtype: "native",
      restartBaseMs: 100,
    });
    await engine.load("demo");
    const since = logLines.length;
    for (let attempt = 0; attempt < 2; attempt++) {
      const { error, pieces } = await failure(engine.generate(request(), new AbortController().signal));
      expect(pieces).toEqual([]);
      expect(error).toMatchObject({ code: "ENGINE_ERROR", mlxCode: "MLX_PROCESS_EXITED", retryable: true });
      expect(error.message).toMatch(/SIGABRT/);
    }
    const crashes = logLines.slice(since).filter((l) => l.msg === "mlx child exited; restarting it");
    expect(crashes.map((l) => [l.signal, l.restartInMs, l.crashesInARow])).toEqual([
      ["SIGABRT", 100, 1],
      ["SIGABRT", 200, 2],
    ]);
    expect(String(crashes[0]?.stderr)).toMatch(/only supports float32/);
    // This process (the agent, here) and the engine's other models are fine; float32 weights stay
    // float32 under "native", so that model runs.
    expect((await run(engine, { model: "safe", params: { maxTokens: 5 } })).completionTokens).toBe(5);
  });
});

describe("on Apple Silicon", () => {
  it("runs on Metal in the weights' own dtype and reports unified memory", async (ctx) => {
    if (NOT_A_MAC) ctx.skip(NOT_A_MAC);
    skipped(ctx);
    const engine = engineWith();
    await engine.load("demo");
    const status = engine.status("demo");
    expect(status).toMatchObject({ device: "gpu", metal: true, computeDtype: "native" });
    expect(status?.memory.activeBytes).toBeGreaterThanOrEqual(status?.weightBytes ?? 1);
    // bfloat16 compute on Metal rounds differently from float32: deterministic, not equal to the CPU's.
    const [a, b] = [await run(engine), await run(engine)];
    expect(b.text).toBe(a.text);
  });
});
