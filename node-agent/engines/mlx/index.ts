// The MLX engine: MLX model folders (as mlx-community ships them) through node-mlx and its LLM
// package, each model in a child process of its own (model-process.ts) so a native abort in MLX
// fails only that model's generations, and the child is restarted with backoff. Metal on a Mac,
// float32 on the CPU elsewhere. Install and status: docs/engine-mlx.md.
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { isModelId, type ModelId } from "../../../schema/model-id.ts";
import type { EngineInfo, ModelInfo } from "../../../schema/protocol.ts";
import { type Logger, silentLogger } from "../../log.ts";
import {
  type Engine,
  EngineError,
  type Generation,
  type GenerationPiece,
  type GenerationRequest,
  type GenerationResult,
  type LoadSpec,
  type UnloadOptions,
} from "../engine.ts";
import { streamGeneration } from "../pieces.ts";
import { checkRequest, checkRuntimeLoad } from "../request.ts";
import { MlxEngineError } from "./errors.ts";
import type { ComputeDtype } from "./model-loader.ts";
import { MlxModelProcess, type MlxModelStatus } from "./model-process.ts";
import { RUNTIME_DIR } from "./runtime.ts";

export { MlxEngineError, type MlxFailure } from "./errors.ts";
export type { MlxModelStatus } from "./model-process.ts";

export interface MlxModelConfig {
  /** A model id, `name` or `name:version`; checked when the engine is built. */
  name: string;
  /** An MLX model folder: config.json, *.safetensors, tokenizer.json, tokenizer_config.json. */
  path: string;
}

export interface MlxEngineOptions {
  models: MlxModelConfig[];
  /** Concurrent generations per model (they take turns token by token); more wait in line. Default 4. */
  capacity?: number;
  /** Default "auto": float32 on the CPU (its matmul supports nothing else), as stored on Metal. */
  computeDtype?: ComputeDtype | "auto";
  /** Caps every model's context length (a registry load's contextLength caps its own). */
  contextSize?: number;
  /** First restart delay after a child dies; doubles with each crash in a row. Default 250 ms. */
  restartBaseMs?: number;
  /** Longest restart delay. Default 30 s. */
  restartMaxMs?: number;
  /** Starting a child and loading its model. Default 120 s. */
  startTimeoutMs?: number;
  /** Where the MLX runtime is installed (default: node-agent/engines/mlx/runtime). */
  runtimeDir?: string;
  log?: Logger;
}

interface ModelConfig {
  name: ModelId;
  path: string;
  contextSize?: number;
  /** Loaded with a LoadSpec (a registry version): forgotten once unloaded. */
  runtime: boolean;
}

const MLX_QUANTIZATIONS = ["fp32", "fp16", "bf16", "2bit", "3bit", "4bit", "6bit", "8bit"];

export function createMlxEngine(options: MlxEngineOptions): MlxEngine {
  return new MlxEngine(options);
}

/** True when `path` looks like an MLX model folder (for discovery and `--engine auto`); cheap, no MLX. */
export function isMlxModelFolder(path: string): boolean {
  try {
    if (!statSync(path).isDirectory()) return false;
    const files = readdirSync(path);
    return (
      files.includes("config.json") &&
      files.includes("tokenizer.json") &&
      files.some((f) => f.endsWith(".safetensors"))
    );
  } catch {
    return false;
  }
}

/** True when the MLX runtime folder is installed (whether its binary loads is known only by trying). */
export function isMlxRuntimeInstalled(runtimeDir?: string): boolean {
  return existsSync(join(runtimeDir ?? RUNTIME_DIR, "node_modules", "@frost-beta", "mlx", "package.json"));
}

export class MlxEngine implements Engine {
  readonly name = "mlx";
  private readonly configs = new Map<ModelId, ModelConfig>();
  private readonly processes = new Map<ModelId, MlxModelProcess>();
  private readonly unloading = new Set<ModelId>();
  private readonly capacity: number;
  private readonly log: Logger;
  private closed = false;

  constructor(private readonly options: MlxEngineOptions) {
    for (const { name, path } of options.models) {
      if (!isModelId(name)) throw new Error(`invalid model name "${name}"`);
      if (this.configs.has(name)) throw new Error(`model "${name}" is configured twice`);
      this.configs.set(name, { name, path, runtime: false });
    }
    this.capacity = positiveInt("capacity", options.capacity ?? 4);
    if (options.contextSize !== undefined) positiveInt("contextSize", options.contextSize);
    this.log = (options.log ?? silentLogger).child({ engine: "mlx" });
  }

  async listModels(): Promise<ModelInfo[]> {
    return [...this.configs.values()].map((config) => this.info(config));
  }

  async load(model: string, spec?: LoadSpec): Promise<ModelInfo> {
    if (!spec) {
      const config = this.config(model);
      await this.processFor(config).start();
      return this.info(config);
    }
    checkRuntimeLoad(model, this.unloading);
    const known = this.configs.get(model);
    if (known && known.path !== spec.path) {
      const why = known.runtime
        ? `is already loaded from ${known.path}; unload it before loading it from ${spec.path}`
        : `is configured on this agent from ${known.path}; it is not replaced by ${spec.path}`;
      throw new EngineError("MODEL_LOAD_FAILED", `model "${model}" ${why}`);
    }
    const contextLength = spec.parameters?.contextLength;
    const config: ModelConfig = known ?? {
      name: model,
      path: spec.path,
      ...(contextLength === undefined ? {} : { contextSize: contextLength }),
      runtime: true,
    };
    this.configs.set(model, config);
    try {
      await this.processFor(config).start();
    } catch (err) {
      // A registry version that did not load is not one this engine serves.
      if (!known) await this.forget(model, err as EngineError);
      throw err;
    }
    return this.info(config);
  }

  /**
   * By default generations still running fail with a retryable ENGINE_ERROR (MLX_MODEL_UNLOADED);
   * with whenIdle they finish first while new ones are refused. The child exits, so its memory
   * (MLX's caches too) goes back to the system.
   */
  async unload(model: string, options: UnloadOptions = {}): Promise<void> {
    const { name } = this.config(model);
    if (options.whenIdle) {
      this.unloading.add(name);
      try {
        await this.processes.get(name)?.idle();
      } finally {
        this.unloading.delete(name);
      }
    }
    const config = this.configs.get(name);
    await this.stopProcess(
      name,
      new MlxEngineError("MLX_MODEL_UNLOADED", `model "${name}" was unloaded`, true),
    );
    if (config?.runtime) this.configs.delete(name);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const reason = new MlxEngineError("MLX_MODEL_UNLOADED", "the MLX engine was closed", true);
    await Promise.all([...this.processes.keys()].map((name) => this.stopProcess(name, reason)));
  }

  generate(request: GenerationRequest, signal: AbortSignal): Generation {
    return streamGeneration((emit, halt) => this.run(request, signal, halt, emit), asEngineError);
  }

  /**
   * No structured output (request.format is ignored); the weights it reads as mlx-community names
   * them: float folders, and the affine quantizations node-mlx's quantized matmul runs.
   */
  async describe(): Promise<EngineInfo[]> {
    return [{ name: this.name, capabilities: [], quantizations: MLX_QUANTIZATIONS }];
  }

  /** What a model's child reported when it loaded (device, memory, pid), if it runs now. */
  status(model: string): (MlxModelStatus & { restarts: number }) | undefined {
    const proc = isModelId(model) ? this.processes.get(model) : undefined;
    const loaded = proc?.loaded;
    return loaded && proc ? { ...loaded, restarts: proc.restarts } : undefined;
  }

  private async run(
    request: GenerationRequest,
    signal: AbortSignal,
    halt: AbortController,
    emit: (piece: GenerationPiece) => void,
  ): Promise<GenerationResult> {
    if (this.closed) throw new MlxEngineError("MLX_MODEL_UNLOADED", "the MLX engine is closed", true);
    const params = checkRequest(request);
    const config = this.config(request.model);
    if (this.unloading.has(config.name)) {
      throw new EngineError("MODEL_NOT_FOUND", `model "${config.name}" is being unloaded`, true);
    }
    return this.processFor(config).generate(request, params, AbortSignal.any([signal, halt.signal]), emit);
  }

  private config(model: string): ModelConfig {
    const config = isModelId(model) ? this.configs.get(model) : undefined;
    if (!config) throw new EngineError("MODEL_NOT_FOUND", `no model named "${model}"`);
    return config;
  }

  private processFor(config: ModelConfig): MlxModelProcess {
    if (this.closed) throw new MlxEngineError("MLX_MODEL_UNLOADED", "the MLX engine is closed", true);
    let proc = this.processes.get(config.name);
    if (!proc) {
      const { options } = this;
      const contextSize = minDefined(config.contextSize, options.contextSize);
      proc = new MlxModelProcess({
        name: config.name,
        path: config.path,
        computeDtype: options.computeDtype ?? "auto",
        ...(contextSize === undefined ? {} : { contextSize }),
        capacity: this.capacity,
        restartBaseMs: options.restartBaseMs ?? 250,
        restartMaxMs: options.restartMaxMs ?? 30_000,
        startTimeoutMs: options.startTimeoutMs ?? 120_000,
        ...(options.runtimeDir === undefined ? {} : { runtimeDir: options.runtimeDir }),
        log: this.log,
      });
      this.processes.set(config.name, proc);
    }
    return proc;
  }

  private async stopProcess(name: ModelId, reason: MlxEngineError): Promise<void> {
    const proc = this.processes.get(name);
    if (!proc) return;
    this.processes.delete(name);
    await proc.close(reason);
  }

  private async forget(name: ModelId, reason: EngineError): Promise<void> {
    this.configs.delete(name);
    await this.stopProcess(
      name,
      reason instanceof MlxEngineError ? reason : new MlxEngineError("MLX_LOAD_FAILED", reason.message),
    );
  }

  private info(config: ModelConfig): ModelInfo {
    const status = this.processes.get(config.name)?.loaded;
    if (!status) return { name: config.name, engine: this.name, loaded: false };
    return {
      name: config.name,
      engine: this.name,
      contextLength: status.contextLength,
      loaded: true,
      // Weights as held, plus a full context of keys and values for every concurrent generation.
      footprintBytes: status.weightBytes + this.capacity * status.contextLength * status.kvBytesPerToken,
    };
  }
}

function minDefined(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}

function positiveInt(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer`);
  return value;
}

function asEngineError(err: unknown): EngineError {
  if (err instanceof EngineError) return err;
  return new EngineError("ENGINE_ERROR", "MLX failed during generation", true, { cause: err });
}
