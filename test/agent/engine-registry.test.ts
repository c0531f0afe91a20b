// The engine registry's factories for real: llama.cpp on the demo GGUF and MLX on the generated MLX
// demo folder (its child process, on the CPU here), planned by --engine auto from a models folder
// and served side by side behind one composite engine, each answering what it answers alone.
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureDemoMlxModel } from "../../node-agent/demo-mlx-model.ts";
import { ensureDemoModel } from "../../node-agent/demo-model.ts";
import { scanModelsDir } from "../../node-agent/discovery.ts";
import { CompositeEngine } from "../../node-agent/engines/composite.ts";
import type { Engine, Generation } from "../../node-agent/engines/engine.ts";
import {
  createEngine,
  defaultEngineInfo,
  engineAvailable,
  planEngines,
} from "../../node-agent/engines/registry.ts";
import { silentLogger } from "../../node-agent/log.ts";

const LINUX = { platform: "linux", arch: "x64" } as const;
let dir: string;
let composite: CompositeEngine | undefined;
const alone: Engine[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "orchard-registry-"));
  cpSync(await ensureDemoModel(dir), join(dir, "models", "gguf-demo.gguf"));
  cpSync(await ensureDemoMlxModel(dir), join(dir, "models", "mlx-demo"), { recursive: true });
});

afterAll(async () => {
  await composite?.close();
  for (const engine of alone) await engine.close();
  rmSync(dir, { recursive: true, force: true });
});

async function text(generation: Generation): Promise<string> {
  let out = "";
  for await (const piece of generation) out += piece.text;
  return out;
}

const request = (model: string) => ({
  model,
  prompt: "Once upon a time",
  params: { maxTokens: 8, temperature: 0 },
});

describe("engines built by the registry", () => {
  it("serves a GGUF on llama.cpp and an MLX folder on MLX at once, as each does alone", async (ctx) => {
    if (!(await engineAvailable("mlx"))) ctx.skip("the MLX runtime is not installed here");
    const found = await scanModelsDir(join(dir, "models"));
    expect(found.models.map((m) => [m.name, m.format ?? "gguf"])).toEqual([
      ["gguf-demo", "gguf"],
      ["mlx-demo", "mlx"],
    ]);
    const plan = planEngines({ engine: "auto", models: [], discovered: found.models, ollama: false }, LINUX);
    expect(plan.engines.map((e) => [e.kind, e.models.map((m) => m.name)])).toEqual([
      ["llamacpp", ["gguf-demo"]],
      ["mlx", ["mlx-demo"]],
    ]);
    const options = { capacity: 1, threads: 1, cacheDir: dir, log: silentLogger };
    const members: Engine[] = [];
    for (const { kind, models } of plan.engines) {
      const engine = await createEngine(kind, { ...options, models });
      for (const m of models) await engine.load(m.name);
      members.push(engine);
    }
    composite = new CompositeEngine(members, {
      routes: new Map(plan.engines.flatMap((e) => e.models.map((m) => [m.name, e.kind] as const))),
      describeMember: defaultEngineInfo,
    });
    expect((await composite.listModels()).map((m) => [m.name, m.engine])).toEqual([
      ["gguf-demo", "llamacpp"],
      ["mlx-demo", "mlx"],
    ]);
    expect((await composite.describe()).map((e) => e.name)).toEqual(["llamacpp", "mlx"]);

    const [gguf, mlx] = await Promise.all([
      text(composite.generate(request("gguf-demo"), new AbortController().signal)),
      text(composite.generate(request("mlx-demo"), new AbortController().signal)),
    ]);
    for (const { kind, models } of plan.engines) {
      const engine = await createEngine(kind, { ...options, models });
      alone.push(engine);
    }
    const [ggufAlone, mlxAlone] = await Promise.all(
      alone.map((engine, i) =>
        text(engine.generate(request(i === 0 ? "gguf-demo" : "mlx-demo"), new AbortController().signal)),
      ),
    );
    expect(gguf).not.toBe("");
    expect(mlx).not.toBe("");
    expect(gguf).toBe(ggufAlone);
    expect(mlx).toBe(mlxAlone);
  });

  it("refuses MLX as unavailable when its runtime is not installed", async (ctx) => {
    if (await engineAvailable("mlx")) ctx.skip("the MLX runtime is installed here");
    await expect(
      createEngine("mlx", { models: [], capacity: 1, cacheDir: dir, log: silentLogger }),
    ).rejects.toMatchObject({ code: "ENGINE_UNAVAILABLE" });
  });
});
