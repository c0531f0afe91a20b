// Choosing engines: `--engine auto` per model kind and platform (injected), NAME=ENGINE:PATH and
// --engine binding a model, the Ollama settings, and bad specs refused with one clear line and
// exit code 2, as every configuration error is.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig, type ModelSpec, parseModelSpec } from "../../node-agent/config.ts";
import { bestLocalEngine, chooseEngine, planEngines } from "../../node-agent/engines/registry.ts";
import type { ModelId } from "../../schema/model-id.ts";

const MAC = { platform: "darwin", arch: "arm64" } as const;
const INTEL_MAC = { platform: "darwin", arch: "x64" } as const;
const LINUX = { platform: "linux", arch: "x64" } as const;

function fakeJwt(claims: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.c2lnbmF0dXJl`;
}
const token = fakeJwt({ sub: "mini-07", role: "agent", exp: 4_000_000_000 });
const base = ["--gateway", "http://127.0.0.1:8787", "--token", token];

const dir = mkdtempSync(join(tmpdir(), "orchard-engine-choice-"));
const gguf = join(dir, "tiny.Q4_K_M.gguf");
writeFileSync(gguf, "GGUF");
const mlx = join(dir, "Qwen2.5-0.5B-Instruct-4bit");
mkdirSync(mlx);
writeFileSync(join(mlx, "config.json"), "{}");
writeFileSync(join(mlx, "model.safetensors"), "");
const mlxWithGguf = join(dir, "llama-both");
mkdirSync(mlxWithGguf);
writeFileSync(join(mlxWithGguf, "config.json"), "{}");
writeFileSync(join(mlxWithGguf, "model.safetensors"), "");
writeFileSync(join(mlxWithGguf, "llama-both.Q8_0.gguf"), "GGUF");
const emptyDir = join(dir, "empty");
mkdirSync(emptyDir);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const spec = (over: Partial<ModelSpec>): ModelSpec => ({ name: "m" as ModelId, path: "/m", ...over });

describe("chooseEngine (--engine auto)", () => {
  it.each([
    ["a GGUF file", spec({ path: gguf }), MAC, "llamacpp", gguf],
    ["a GGUF file", spec({ path: gguf }), LINUX, "llamacpp", gguf],
    ["an Ollama tag", spec({ path: "llama3.2:3b", format: "ollama" }), LINUX, "ollama", "llama3.2:3b"],
    ["an MLX folder on Apple Silicon", spec({ path: mlx, format: "mlx" }), MAC, "mlx", mlx],
    ["an MLX folder with a GGUF on Apple Silicon", spec({ path: mlx, format: "mlx", gguf }), MAC, "mlx", mlx],
    [
      "an MLX folder with a GGUF elsewhere",
      spec({ path: mlx, format: "mlx", gguf }),
      LINUX,
      "llamacpp",
      gguf,
    ],
    [
      "an MLX folder with a GGUF on an Intel Mac",
      spec({ path: mlx, format: "mlx", gguf }),
      INTEL_MAC,
      "llamacpp",
      gguf,
    ],
    [
      "an MLX folder without a GGUF elsewhere (MLX on the CPU)",
      spec({ path: mlx, format: "mlx" }),
      LINUX,
      "mlx",
      mlx,
    ],
    [
      "an MLX folder bound to MLX",
      spec({ path: mlx, format: "mlx", gguf, engine: "mlx" }),
      LINUX,
      "mlx",
      mlx,
    ],
    [
      "an MLX folder bound to llama.cpp",
      spec({ path: mlx, format: "mlx", gguf, engine: "llamacpp" }),
      MAC,
      "llamacpp",
      gguf,
    ],
  ] as const)("%s on %o goes to %s", (_what, model, host, engine, path) => {
    expect(chooseEngine(model, host)).toEqual({ name: "m", engine, path });
  });
});

describe("planEngines", () => {
  const configured = [
    spec({ name: "a" as ModelId, path: gguf }),
    spec({ name: "b" as ModelId, path: mlx, format: "mlx" }),
    spec({ name: "c" as ModelId, path: "qwen2.5:7b", format: "ollama" }),
  ];

  it("runs one engine per kind its models need, in hello's order, and Ollama for discovery", () => {
    const plan = planEngines({ engine: "auto", models: configured, ollama: true }, MAC);
    expect(plan.engines).toEqual([
      { kind: "llamacpp", models: [{ name: "a", engine: "llamacpp", path: gguf }] },
      { kind: "mlx", models: [{ name: "b", engine: "mlx", path: mlx }] },
      { kind: "ollama", models: [{ name: "c", engine: "ollama", path: "qwen2.5:7b" }] },
    ]);
    expect(planEngines({ engine: "auto", models: [], ollama: true }, MAC).engines).toEqual([
      { kind: "ollama", models: [] },
    ]);
    expect(
      planEngines({ engine: "auto", models: [configured[0] as ModelSpec], ollama: false }, LINUX).engines,
    ).toEqual([{ kind: "llamacpp", models: [{ name: "a", engine: "llamacpp", path: gguf }] }]);
  });

  it("skips discovered models --engine or this build rules out, and refuses configured ones", () => {
    const discovered = [
      spec({ name: "d" as ModelId, path: gguf }),
      spec({ name: "e" as ModelId, path: mlx, format: "mlx" }),
      spec({
        name: "f" as ModelId,
        path: mlxWithGguf,
        format: "mlx",
        gguf: join(mlxWithGguf, "llama-both.Q8_0.gguf"),
      }),
    ];
    const plan = planEngines({ engine: "llamacpp", models: [], discovered, ollama: false }, MAC);
    expect(plan.engines).toEqual([
      {
        kind: "llamacpp",
        models: [
          { name: "d", engine: "llamacpp", path: gguf },
          { name: "f", engine: "llamacpp", path: join(mlxWithGguf, "llama-both.Q8_0.gguf") },
        ],
      },
    ]);
    expect(plan.skipped).toEqual([{ path: mlx, reason: "--engine llamacpp cannot run it" }]);

    const noMlx = new Set(["llamacpp", "ollama"] as const);
    const withoutMlx = planEngines(
      { engine: "auto", models: [], discovered, ollama: false, available: noMlx },
      MAC,
    );
    expect(withoutMlx.skipped.map((s) => s.path)).toEqual([mlx, mlxWithGguf]);
    expect(withoutMlx.skipped[0]?.reason).toMatch(/needs the mlx engine, which is not part of this build/);
    expect(() =>
      planEngines(
        { engine: "auto", models: [configured[1] as ModelSpec], ollama: false, available: noMlx },
        MAC,
      ),
    ).toThrow(ConfigError);
  });
});

describe("bestLocalEngine (npm start)", () => {
  it("prefers MLX on Apple Silicon, then a reachable Ollama with a model, then llama.cpp's demo model", () => {
    const none = { mlxAvailable: true, ollama: { url: "http://localhost:11434", models: [] as string[] } };
    expect(bestLocalEngine({ ...none, host: MAC }).engine).toBe("mlx");
    expect(bestLocalEngine({ ...none, host: MAC, mlxAvailable: false }).engine).toBe("llamacpp");
    const withOllama = { ...none, ollama: { url: "http://localhost:11434", models: ["llama3.2:latest"] } };
    expect(bestLocalEngine({ ...withOllama, host: LINUX })).toMatchObject({
      engine: "ollama",
      args: ["--engine", "ollama", "--ollama-url", "http://localhost:11434"],
    });
    expect(bestLocalEngine({ ...withOllama, host: MAC }).engine).toBe("mlx");
    const llamacpp = bestLocalEngine({ ...none, host: LINUX, ollama: { url: "http://localhost:11434" } });
    expect(llamacpp).toMatchObject({ engine: "llamacpp", args: [] });
    expect(llamacpp.line).toBe(
      "Engine: llama.cpp with the built-in demo model (MLX needs Apple Silicon; no Ollama server answers at http://localhost:11434)",
    );
    expect(bestLocalEngine({ ...none, host: LINUX }).line).toBe(
      "Engine: llama.cpp with the built-in demo model (MLX needs Apple Silicon; the Ollama server at http://localhost:11434 has no model)",
    );
    expect(bestLocalEngine({ ...withOllama, host: LINUX }).line).toBe(
      "Engine: Ollama at http://localhost:11434 (1 model: llama3.2:latest)",
    );
  });
});

describe("--model [NAME=][ENGINE:]PATH", () => {
  it("reads the engine, the path or tag, and the name", () => {
    expect(parseModelSpec(gguf)).toEqual({ name: "tiny.Q4_K_M", path: gguf });
    expect(parseModelSpec(`fast=llamacpp:${gguf}`)).toEqual({ name: "fast", path: gguf, engine: "llamacpp" });
    expect(parseModelSpec(mlx)).toEqual({ name: "Qwen2.5-0.5B-Instruct-4bit", path: mlx, format: "mlx" });
    expect(parseModelSpec(`qwen:1.0.0=mlx:${mlx}`)).toEqual({
      name: "qwen:1.0.0",
      path: mlx,
      format: "mlx",
      engine: "mlx",
    });
    expect(parseModelSpec(`both=${mlxWithGguf}`)).toEqual({
      name: "both",
      path: mlxWithGguf,
      format: "mlx",
      gguf: join(mlxWithGguf, "llama-both.Q8_0.gguf"),
    });
    expect(parseModelSpec("ollama:llama3.2:3b")).toEqual({
      name: "llama3.2:3b",
      path: "llama3.2:3b",
      format: "ollama",
      engine: "ollama",
    });
    expect(parseModelSpec("house:2.0.0=ollama:hf.co/org/repo:Q4_K_M")).toEqual({
      name: "house:2.0.0",
      path: "hf.co/org/repo:Q4_K_M",
      format: "ollama",
      engine: "ollama",
    });
    // --engine ollama makes a bare value a tag.
    expect(parseModelSpec("llama3.2", "--model", "ollama")).toMatchObject({
      path: "llama3.2",
      format: "ollama",
    });
  });

  it("puts the Ollama settings together: URL conventions, keep_alive, and when Ollama runs at all", () => {
    expect(loadConfig(base, {}).ollama).toBeUndefined();
    expect(loadConfig(base, { OLLAMA_BASE_URL: "http://localhost:11434/v1" }).ollama).toEqual({
      baseUrl: "http://localhost:11434",
    });
    expect(
      loadConfig([...base, "--ollama-url", "http://mini:11434/api/", "--ollama-keep-alive=-1"], {}).ollama,
    ).toEqual({
      baseUrl: "http://mini:11434",
      keepAlive: -1,
    });
    expect(loadConfig([...base, "--ollama", "on", "--ollama-keep-alive", "10m"], {}).ollama).toEqual({
      baseUrl: "http://localhost:11434",
      keepAlive: "10m",
    });
    expect(loadConfig([...base, "--model", "ollama:llama3.2"], {}).ollama).toEqual({
      baseUrl: "http://localhost:11434",
    });
    // --engine llamacpp runs llama.cpp alone, whatever the environment says.
    expect(
      loadConfig([...base, "--engine", "llamacpp"], { OLLAMA_BASE_URL: "http://x:1" }).ollama,
    ).toBeUndefined();
    expect(loadConfig(base, { OLLAMA_BASE_URL: "http://x:1", ORCHARD_OLLAMA: "off" }).ollama).toBeUndefined();
    // The demo model stands in only when nothing else is configured.
    expect(loadConfig(base, {}).useDemoModel).toBe(true);
    expect(loadConfig(base, { OLLAMA_BASE_URL: "http://x:1" }).useDemoModel).toBe(false);
    expect(loadConfig([...base, "--engine", "ollama"], {}).useDemoModel).toBe(false);
    expect(loadConfig([...base, "--models-dir", emptyDir], {})).toMatchObject({
      modelsDir: emptyDir,
      useDemoModel: false,
    });
    expect(loadConfig([...base, "--engine", "mlx"], {}).useDemoModel).toBe(true);
  });

  it.each([
    [
      "an MLX engine for a file",
      ["--model", `mlx:${gguf}`],
      {},
      "--model",
      /is a file; the MLX engine loads model folders/,
    ],
    [
      "llama.cpp for an MLX folder without GGUF",
      ["--model", `llamacpp:${mlx}`],
      {},
      "--model",
      /without a GGUF file; llama.cpp cannot load it/,
    ],
    ["--engine mlx for a file", ["--model", gguf, "--engine", "mlx"], {}, "--model", /is a file/],
    [
      "a folder that is no model",
      ["--model", emptyDir],
      {},
      "--model",
      /is not a file, nor an MLX model folder/,
    ],
    [
      "an Ollama tag with spaces",
      ["--model", "x=ollama:llama 3"],
      {},
      "--model",
      /is not an Ollama model tag/,
    ],
    ["an empty Ollama tag", ["--model", "ollama:"], {}, "--model", /is not an Ollama model tag/],
    [
      "an Ollama model with Ollama off",
      ["--model", "ollama:llama3.2", "--ollama", "off"],
      {},
      "--ollama",
      /is off, but model "llama3.2" is an Ollama model/,
    ],
    [
      "--ollama on with llama.cpp alone",
      ["--ollama", "on", "--engine", "llamacpp"],
      {},
      "--ollama",
      /runs no other engine/,
    ],
    ["a bad --ollama", ["--ollama", "maybe"], {}, "--ollama", /auto, on or off/],
    ["an Ollama URL of another scheme", [], { OLLAMA_BASE_URL: "ftp://x" }, "OLLAMA_BASE_URL", /http\(s\)/],
    ["an Ollama URL that is none", ["--ollama-url", "localhost 11434"], {}, "--ollama-url", /is not a URL/],
    [
      "a keep_alive that is none",
      ["--ollama-keep-alive", "forever"],
      {},
      "--ollama-keep-alive",
      /seconds or a duration/,
    ],
    [
      "a models folder that is not there",
      ["--models-dir", join(dir, "nope")],
      {},
      "--models-dir",
      /is not a folder/,
    ],
  ] as const)("refuses %s", (_label, flags, env, setting, message) => {
    let err: unknown;
    try {
      loadConfig([...base, ...flags], env);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).setting).toBe(setting);
    expect((err as ConfigError).message).toMatch(message);
    expect((err as ConfigError).message).not.toContain("\n");
  });

  it("exits 2 with one line for a bad spec, before starting anything", () => {
    const r = spawnSync(
      process.execPath,
      ["--import", "tsx", "node-agent/main.ts", "start", ...base, "--model", `demo=mlx:${gguf}`],
      { encoding: "utf8", timeout: 30_000 },
    );
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split("\n")).toEqual([
      `orchard-agent: invalid configuration: --model: ${gguf} is a file; the MLX engine loads model folders (config.json and *.safetensors)`,
    ]);
  });
});
