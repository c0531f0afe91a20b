// One agent, several engines: the composite engine over the real llama.cpp engine (demo model)
// and the Ollama engine (against the test double of Ollama's API) — merged models, routing of
// generate/load/unload, a name two engines offer, a member that fails, the Ollama server going
// away — and an agent on it saying hello with both engines and loading a registry version whose
// source is an Ollama tag.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { ensureDemoModel } from "../../node-agent/demo-model.ts";
import { CompositeEngine } from "../../node-agent/engines/composite.ts";
import type { Engine, Generation } from "../../node-agent/engines/engine.ts";
import { LlamaCppEngine } from "../../node-agent/engines/llamacpp/index.ts";
import { OllamaEngine } from "../../node-agent/engines/ollama/index.ts";
import { defaultEngineInfo } from "../../node-agent/engines/registry.ts";
import type { ModelId } from "../../schema/model-id.ts";
import type { HelloFrame } from "../../schema/protocol.ts";
import { OllamaDouble } from "../helpers/ollama-double.ts";
import { cleanUp, setup } from "./scripted-hub.ts";

const TAG = "tiny:latest";
let dir: string;
let demoPath: string;
let double: OllamaDouble;
let llamacpp: LlamaCppEngine;
let ollama: OllamaEngine;
let composite: CompositeEngine;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "orchard-composite-"));
  demoPath = await ensureDemoModel(dir);
  double = await OllamaDouble.start({
    models: [{ name: TAG, replyTokens: 2000 }, { name: "shared:latest" }],
  });
  llamacpp = new LlamaCppEngine({
    models: [
      { name: "demo", path: demoPath },
      { name: "shared:latest", path: demoPath },
    ],
    capacity: 2,
    threads: 1,
  });
  ollama = new OllamaEngine({ baseUrl: double.url, refreshMs: 40, timeoutMs: 500 });
  await ollama.start();
  composite = new CompositeEngine([llamacpp, ollama], {
    routes: new Map([
      ["demo", "llamacpp"],
      ["shared:latest", "llamacpp"],
    ]),
    describeMember: defaultEngineInfo,
  });
});

afterAll(async () => {
  await composite?.close();
  await double?.close();
  await rm(dir, { recursive: true, force: true });
});

afterEach(cleanUp);

async function run(generation: Generation) {
  let text = "";
  try {
    for await (const piece of generation) text += piece.text;
  } catch {}
  return { text, result: await generation.result.catch((err: unknown) => err) };
}

const prompt = (model: string, maxTokens = 6) => ({
  model,
  prompt: "Once upon a time",
  params: { maxTokens, temperature: 0 },
});
const ollamaRequests = () => double.requests.filter((r) => r.path === "/api/generate").length;

describe("CompositeEngine", () => {
  it("merges its engines' models; a name both offer is the configured engine's", async () => {
    const models = await composite.listModels();
    expect(models.map((m) => [m.name, m.engine])).toEqual([
      ["demo", "llamacpp"],
      ["shared:latest", "llamacpp"],
      [TAG, "ollama"],
    ]);
    expect(composite.name).toBe("llamacpp");
    expect(composite.engines).toEqual([llamacpp, ollama]);
  });

  it("describes every engine: llama.cpp's GGUF quantizations, Ollama's format and its models' quantizations", async () => {
    const [llama, olla] = await composite.describe();
    expect(llama).toMatchObject({ name: "llamacpp", capabilities: ["json_schema_grammar"] });
    expect(llama?.quantizations).toEqual(expect.arrayContaining(["Q4_K_M", "Q8_0", "F16", "BF16", "F32"]));
    expect(olla).toEqual({ name: "ollama", capabilities: ["format"], quantizations: ["Q4_K_M"] });
  });

  it("sends each generation to its model's engine", async () => {
    const before = ollamaRequests();
    const demo = await run(composite.generate(prompt("demo"), new AbortController().signal));
    const alone = await run(llamacpp.generate(prompt("demo"), new AbortController().signal));
    expect(demo.text).toBe(alone.text);
    const shared = await run(composite.generate(prompt("shared:latest"), new AbortController().signal));
    expect(shared.text).toBe(alone.text);
    expect(ollamaRequests()).toBe(before);
    const tiny = await run(composite.generate(prompt(TAG), new AbortController().signal));
    expect(tiny.result).toMatchObject({ finishReason: "length", usage: { completionTokens: 6 } });
    expect(ollamaRequests()).toBe(before + 1);
    expect(
      (await run(composite.generate(prompt("nowhere"), new AbortController().signal))).result,
    ).toMatchObject({
      code: "MODEL_NOT_FOUND",
    });
  });

  it("routes a model that appeared since it last listed, after looking again", async () => {
    double.setModels([{ name: TAG }, { name: "shared:latest" }, { name: "fresh:1b" }]);
    await ollama.refresh();
    const fresh = await run(composite.generate(prompt("fresh:1b", 3), new AbortController().signal));
    expect(fresh.result).toMatchObject({ finishReason: "length" });
    double.setModels([{ name: TAG, replyTokens: 2000 }, { name: "shared:latest" }]);
  });

  it("loads a registry version on the engine its weights need, and unloads it there", async () => {
    const gguf = await composite.load("demo:2.0.0" as ModelId, { path: demoPath });
    expect(gguf).toMatchObject({ name: "demo:2.0.0", engine: "llamacpp", loaded: true });
    const tagged = await composite.load("house:1.0.0" as ModelId, { path: "tiny", engine: "ollama" });
    expect(tagged).toMatchObject({ name: "house:1.0.0", engine: "ollama", loaded: true });
    expect(double.isLoaded(TAG)).toBe(true);
    expect((await composite.listModels()).map((m) => m.name)).toEqual(
      expect.arrayContaining(["demo:2.0.0", "house:1.0.0"]),
    );
    // The same id on another engine waits for an unload.
    await expect(composite.load("house:1.0.0" as ModelId, { path: demoPath })).rejects.toMatchObject({
      code: "MODEL_LOAD_FAILED",
      message: expect.stringContaining("served by ollama"),
    });
    await composite.unload("house:1.0.0" as ModelId);
    expect(double.isLoaded(TAG)).toBe(false);
    await composite.load("house:1.0.0" as ModelId, { path: demoPath });
    expect((await composite.listModels()).find((m) => m.name === "house:1.0.0")?.engine).toBe("llamacpp");
    await composite.unload("house:1.0.0" as ModelId);
    await composite.unload("demo:2.0.0" as ModelId);
    // An MLX folder needs an engine this agent does not run.
    await expect(composite.load("m:1.0.0" as ModelId, { path: dir })).rejects.toMatchObject({
      code: "MODEL_LOAD_FAILED",
      message: "this agent runs no mlx engine (it runs llamacpp, ollama)",
    });
  });

  it("keeps an Ollama model's route while the server is away: unavailable, not unknown", async () => {
    await double.stop();
    try {
      await vi.waitFor(async () =>
        expect((await composite.listModels()).map((m) => m.name)).toEqual(["demo", "shared:latest"]),
      );
      const away = await run(composite.generate(prompt(TAG), new AbortController().signal));
      expect(away.result).toMatchObject({ code: "ENGINE_UNAVAILABLE", retryable: true });
    } finally {
      await double.restart();
    }
    await vi.waitFor(async () => expect((await composite.listModels()).map((m) => m.name)).toContain(TAG));
  });

  it("lists the others when one engine fails to list, and fails only when all do", async () => {
    const broken: Engine = {
      name: "mlx",
      listModels: () => Promise.reject(new Error("child process gone")),
      load: () => Promise.reject(new Error("no")),
      unload: () => Promise.resolve(),
      generate: () => {
        throw new Error("no");
      },
      close: () => Promise.resolve(),
    };
    const mixed = new CompositeEngine([llamacpp, broken]);
    expect((await mixed.listModels()).map((m) => m.name)).toEqual(["demo", "shared:latest"]);
    expect(await mixed.describe()).toEqual([
      expect.objectContaining({ name: "llamacpp" }),
      { name: "mlx", capabilities: [] },
    ]);
    await expect(new CompositeEngine([broken]).listModels()).rejects.toThrow("child process gone");
    expect(() => new CompositeEngine([])).toThrow(/at least one engine/);
    expect(() => new CompositeEngine([llamacpp, llamacpp])).toThrow(/given twice/);
  });
});

describe("an agent on several engines", () => {
  it("says hello with every engine and its capabilities, and loads an Ollama-tag registry version", async () => {
    const { hub } = await setup({ healthIntervalMs: 50 }, { engine: composite });
    const conn = await hub.connection(0);
    const hello = conn.of("hello")[0] as HelloFrame;
    expect(hello.engines).toEqual(["llamacpp", "ollama"]);
    expect(hello.engineInfo?.map((e) => [e.name, e.capabilities])).toEqual([
      ["llamacpp", ["json_schema_grammar"]],
      ["ollama", ["format"]],
    ]);
    expect(hello.capabilities).toContain("structured_output");
    expect(hello.models.map((m) => [m.name, m.engine])).toEqual([
      ["demo", "llamacpp"],
      ["shared:latest", "llamacpp"],
      [TAG, "ollama"],
    ]);
    conn.send({
      type: "load",
      model: "house:2.0.0",
      source: { kind: "ollama", tag: TAG },
      parameters: { contextLength: 1024, engines: ["ollama"] },
    });
    const loaded = await conn.waitFor("loaded", (f) => f.model.name === "house:2.0.0");
    expect(loaded.model).toMatchObject({ engine: "ollama", loaded: true, contextLength: 1024 });
    conn.send({ type: "generate", id: "g1", model: "house:2.0.0", prompt: "hi", params: { maxTokens: 5 } });
    const done = await conn.waitFor("done", (f) => f.id === "g1");
    expect(done).toMatchObject({ finishReason: "length", usage: { completionTokens: 5 } });
    // The last generation request: the agent's watcher keeps asking /api/tags and /api/ps meanwhile.
    expect(double.requests.filter((r) => r.path === "/api/generate").at(-1)?.body).toMatchObject({
      model: TAG,
      keep_alive: -1,
      options: { num_ctx: 1024 },
    });
    conn.send({ type: "unload", model: "house:2.0.0" });
    await conn.waitFor("unloaded", (f) => f.model === "house:2.0.0");
    expect(double.isLoaded(TAG)).toBe(false);
  });
});
