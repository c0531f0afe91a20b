// Which engine serves which model, and how engines are made. `--engine auto` sends a GGUF file to
// llama.cpp, an Ollama tag to Ollama, and an MLX model folder to MLX on Apple Silicon — elsewhere
// to llama.cpp when the folder has a GGUF too (MLX runs there only on the CPU, in float32);
// NAME=ENGINE:PATH or --engine binds a model to one engine. Engines are factories imported
// lazily, so an agent loads only the native code it runs.

import type { EngineInfo } from "../../schema/protocol.ts";
import { ConfigError, type EngineKind, type ModelSpec, type OllamaSettings } from "../config.ts";
import type { Logger } from "../log.ts";
import { type Engine, EngineError } from "./engine.ts";

export interface HostPlatform {
  platform: NodeJS.Platform;
  arch: string;
}

export const THIS_HOST: HostPlatform = { platform: process.platform, arch: process.arch };

export function isAppleSilicon(host: HostPlatform): boolean {
  return host.platform === "darwin" && host.arch === "arm64";
}

/** One model on the engine that serves it, from the file (or folder, or tag) that engine reads. */
export interface Assignment {
  name: ModelSpec["name"];
  engine: EngineKind;
  path: string;
}

/** The engine a model runs on: bound by its spec, else the best for its format on this host. */
export function chooseEngine(spec: ModelSpec, host: HostPlatform): Assignment {
  const assign = (engine: EngineKind, path = spec.path): Assignment => ({ name: spec.name, engine, path });
  if (spec.format === "ollama") return assign("ollama");
  if (spec.format === "mlx") {
    const llamacpp = spec.engine === "llamacpp" || (spec.engine === undefined && !isAppleSilicon(host));
    return llamacpp && spec.gguf ? assign("llamacpp", spec.gguf) : assign(spec.engine ?? "mlx");
  }
  return assign(spec.engine ?? "llamacpp");
}

export interface EnginePlan {
  /** The engines to run, in the order hello names them, each with the models it starts with. */
  engines: { kind: EngineKind; models: Assignment[] }[];
  /** Discovered models no engine here runs, with why. */
  skipped: { path: string; reason: string }[];
}

export interface PlanInput {
  engine: "auto" | EngineKind;
  /** Configured models (checked against --engine by the config). */
  models: ModelSpec[];
  /** Models found in the models folder. */
  discovered?: ModelSpec[];
  /** The Ollama server's models are offered. */
  ollama: boolean;
  /** Engines this build can make (engineAvailable). Default: all. */
  available?: ReadonlySet<EngineKind>;
}

const ORDER: readonly EngineKind[] = ["llamacpp", "mlx", "ollama"];

/** Whether the engine of `kind` can run the model at all. */
function canRun(spec: ModelSpec, kind: EngineKind): boolean {
  if (kind === "ollama") return spec.format === "ollama";
  if (kind === "mlx") return spec.format === "mlx";
  return spec.format === undefined || (spec.format === "mlx" && spec.gguf !== undefined);
}

/**
 * The engines for the configured and discovered models, plus Ollama when its server's models are
 * offered. A configured model whose engine this build lacks is a ConfigError; a discovered one
 * that --engine or the build rules out is skipped.
 */
export function planEngines(input: PlanInput, host: HostPlatform = THIS_HOST): EnginePlan {
  const available = input.available ?? new Set(ORDER);
  const byKind = new Map<EngineKind, Assignment[]>();
  const add = (a: Assignment) => byKind.set(a.engine, [...(byKind.get(a.engine) ?? []), a]);
  const skipped: EnginePlan["skipped"] = [];
  for (const spec of input.models) {
    const a = chooseEngine(spec, host);
    if (!available.has(a.engine)) {
      throw new ConfigError(
        "--model",
        `"${spec.name}" needs the ${a.engine} engine, which is not part of this build`,
      );
    }
    add(a);
  }
  for (const spec of input.discovered ?? []) {
    if (input.engine !== "auto" && !canRun(spec, input.engine)) {
      skipped.push({ path: spec.path, reason: `--engine ${input.engine} cannot run it` });
      continue;
    }
    const a = chooseEngine(input.engine === "auto" ? spec : { ...spec, engine: input.engine }, host);
    if (available.has(a.engine)) add(a);
    else
      skipped.push({
        path: spec.path,
        reason: `it needs the ${a.engine} engine, which is not part of this build`,
      });
  }
  if (input.ollama && !byKind.has("ollama")) byKind.set("ollama", []);
  return {
    engines: ORDER.filter((k) => byKind.has(k)).map((kind) => ({ kind, models: byKind.get(kind) ?? [] })),
    skipped,
  };
}

export interface EngineFactoryOptions {
  /** The models the engine starts with: name and the path (or Ollama tag) it reads. */
  models: { name: string; path: string }[];
  capacity: number;
  threads?: number;
  contextSize?: number;
  /** Where an engine may keep generated files. */
  cacheDir: string;
  log: Logger;
  /** For the Ollama engine. */
  ollama?: OllamaSettings;
}

/** Builds the engine of `kind` for its models; an Ollama engine has looked at its server once. */
export async function createEngine(kind: EngineKind, options: EngineFactoryOptions): Promise<Engine> {
  switch (kind) {
    case "llamacpp": {
      const { LlamaCppEngine } = await import("./llamacpp/index.ts");
      return new LlamaCppEngine({
        models: options.models,
        capacity: options.capacity,
        ...(options.threads === undefined ? {} : { threads: options.threads }),
        ...(options.contextSize === undefined ? {} : { contextSize: options.contextSize }),
      });
    }
    case "ollama": {
      const { OllamaEngine } = await import("./ollama/index.ts");
      const engine = new OllamaEngine({
        models: options.models.map(({ name, path }) => ({ name, tag: path })),
        log: options.log.child({ engine: "ollama" }),
        ...(options.ollama?.baseUrl ? { baseUrl: options.ollama.baseUrl } : {}),
        ...(options.ollama?.keepAlive === undefined ? {} : { keepAlive: options.ollama.keepAlive }),
      });
      await engine.start();
      return engine;
    }
    case "mlx": {
      // The MLX engine runs its models in child processes; importing it loads no native code.
      const { createMlxEngine, isMlxRuntimeInstalled } = await import("./mlx/index.ts");
      if (!isMlxRuntimeInstalled()) {
        throw new EngineError("ENGINE_UNAVAILABLE", "the MLX runtime is not installed (docs/engine-mlx.md)");
      }
      return createMlxEngine({
        models: options.models,
        capacity: options.capacity,
        ...(options.contextSize === undefined ? {} : { contextSize: options.contextSize }),
        log: options.log.child({ engine: "mlx" }),
      });
    }
  }
}

/** Whether `kind` can be built here at all: MLX needs its runtime installed (a folder of its own). */
export async function engineAvailable(kind: EngineKind): Promise<boolean> {
  if (kind !== "mlx") return true;
  const { isMlxRuntimeInstalled } = await import("./mlx/index.ts");
  return isMlxRuntimeInstalled();
}

/**
 * What hello says of an engine that does not describe itself. llama.cpp reads every GGUF file
 * type node-llama-cpp knows and enforces request.format with a grammar ("json_schema_grammar",
 * llamacpp/json-grammar.ts); Ollama passes it on as its own `format`.
 */
export async function defaultEngineInfo(engine: Engine): Promise<EngineInfo> {
  switch (engine.name) {
    case "llamacpp": {
      const { ggufFileQuantNames } = await import("node-llama-cpp");
      return {
        name: "llamacpp",
        capabilities: ["json_schema_grammar"],
        quantizations: ggufFileQuantNames.slice(0, 64),
      };
    }
    case "ollama":
      return { name: "ollama", capabilities: ["format"] };
    default:
      return { name: engine.name, capabilities: [] };
  }
}

export interface LocalEngineChoice {
  engine: EngineKind;
  /** Agent flags that select it. */
  args: string[];
  /** What npm start prints about it. */
  line: string;
}

/**
 * `npm start`'s engine, as DESIGN.md orders them: MLX on Apple Silicon, else a reachable Ollama
 * with a model, else llama.cpp with the built-in demo model. `ollama.models` is what the server at
 * `ollama.url` lists (absent: it did not answer).
 */
export function bestLocalEngine(input: {
  host: HostPlatform;
  mlxAvailable: boolean;
  ollama: { url: string; models?: readonly string[] };
}): LocalEngineChoice {
  const { host, mlxAvailable, ollama } = input;
  if (isAppleSilicon(host) && mlxAvailable) {
    return {
      engine: "mlx",
      args: ["--engine", "mlx"],
      line: "Engine: MLX on Apple Silicon, with the built-in MLX demo model",
    };
  }
  const models = ollama.models ?? [];
  if (models.length > 0) {
    const shown = models.slice(0, 5).join(", ") + (models.length > 5 ? ", ..." : "");
    return {
      engine: "ollama",
      args: ["--engine", "ollama", "--ollama-url", ollama.url],
      line: `Engine: Ollama at ${ollama.url} (${models.length} model${models.length === 1 ? "" : "s"}: ${shown})`,
    };
  }
  const noMlx = isAppleSilicon(host) ? "the MLX engine is not part of this build" : "MLX needs Apple Silicon";
  const noOllama =
    ollama.models === undefined
      ? `no Ollama server answers at ${ollama.url}`
      : `the Ollama server at ${ollama.url} has no model`;
  return {
    engine: "llamacpp",
    args: [],
    line: `Engine: llama.cpp with the built-in demo model (${noMlx}; ${noOllama})`,
  };
}
