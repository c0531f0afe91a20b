// Model discovery over a temporary models folder: GGUF files (split ones once, projectors not),
// MLX folders (with or without a GGUF of their own), the org/model layout one level down, names
// that are no model id, hidden entries, and names already taken by configured models.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { inspectModelFolder, scanModelsDir } from "../../node-agent/discovery.ts";

const root = mkdtempSync(join(tmpdir(), "orchard-discovery-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function file(path: string, content = "GGUF"): string {
  const full = join(root, path);
  mkdirSync(join(full, ".."), { recursive: true });
  writeFileSync(full, content);
  return full;
}

function mlxFolder(path: string, extra: string[] = []): string {
  file(`${path}/config.json`, "{}");
  file(`${path}/model.safetensors`, "");
  file(`${path}/tokenizer.json`, "{}");
  for (const name of extra) file(`${path}/${name}`);
  return join(root, path);
}

describe("scanModelsDir", () => {
  it("offers GGUF files and MLX folders, one level down too, under their file or folder names", async () => {
    const tiny = file("tiny-llama.Q4_K_M.gguf");
    const split = file("big-00001-of-00002.gguf");
    file("big-00002-of-00002.gguf");
    file("mmproj-vision.gguf");
    file("notes.txt", "not a model");
    file(".hidden.gguf");
    file("my model.gguf");
    const qwen = mlxFolder("Qwen2.5-0.5B-Instruct-4bit");
    const both = mlxFolder("llama-both", ["llama-both.Q8_0.gguf"]);
    const nested = mlxFolder("mlx-community/SmolLM-135M-Instruct-4bit");
    const nestedGguf = file("bartowski/Phi-3-mini.Q5_K_M.gguf");
    mlxFolder("a/b/too-deep");
    mkdirSync(join(root, "not-a-model"));
    file("not-a-model/README.md", "#");

    const found = await scanModelsDir(root, new Set(["taken"]));
    // Sorted by path, code unit by code unit (upper case first).
    expect(found.models).toEqual([
      { name: "Qwen2.5-0.5B-Instruct-4bit", path: qwen, format: "mlx" },
      { name: "Phi-3-mini.Q5_K_M", path: nestedGguf },
      { name: "big", path: split },
      { name: "llama-both", path: both, format: "mlx", gguf: join(both, "llama-both.Q8_0.gguf") },
      { name: "SmolLM-135M-Instruct-4bit", path: nested, format: "mlx" },
      { name: "tiny-llama.Q4_K_M", path: tiny },
    ]);
    expect(found.skipped).toEqual([
      {
        path: join(root, "my model.gguf"),
        reason: '"my model" is not a model name; name it with --model NAME=PATH',
      },
    ]);
  });

  it("skips a name a configured model or an earlier find already has", async () => {
    const dir = mkdtempSync(join(root, "taken-"));
    writeFileSync(join(dir, "demo.gguf"), "GGUF");
    mkdirSync(join(dir, "sub"));
    writeFileSync(join(dir, "sub", "other.gguf"), "GGUF");
    writeFileSync(join(dir, "sub", "demo.gguf"), "GGUF");
    const found = await scanModelsDir(dir, new Set(["other"]));
    expect(found.models.map((m) => m.name)).toEqual(["demo"]);
    expect(found.skipped).toEqual([
      { path: join(dir, "sub", "demo.gguf"), reason: 'the name "demo" is taken' },
      { path: join(dir, "sub", "other.gguf"), reason: 'the name "other" is taken' },
    ]);
  });

  it("finds nothing in an empty folder or one that is not there", async () => {
    expect(await scanModelsDir(mkdtempSync(join(root, "empty-")))).toEqual({ models: [], skipped: [] });
    expect(await scanModelsDir(join(root, "missing"))).toEqual({ models: [], skipped: [] });
  });
});

describe("inspectModelFolder", () => {
  it("needs config.json and safetensors for MLX, and reports a GGUF beside them", () => {
    expect(inspectModelFolder(mlxFolder("inspect/plain"))).toEqual({ mlx: true });
    expect(inspectModelFolder(mlxFolder("inspect/with", ["w.gguf", "mmproj-x.gguf"]))).toEqual({
      mlx: true,
      gguf: join(root, "inspect/with/w.gguf"),
    });
    file("inspect/config-only/config.json", "{}");
    expect(inspectModelFolder(join(root, "inspect/config-only"))).toEqual({ mlx: false });
    expect(inspectModelFolder(join(root, "inspect/nowhere"))).toEqual({ mlx: false });
  });
});
