// The llama.cpp engine: GGUF models through node-llama-cpp, loaded on demand and shared by
// concurrent requests, each generation on its own context sequence. Besides its configured models
// it loads registry versions at runtime from a given file (load with a LoadSpec). What the engine does per
// request lives beside it: GGUF checks (gguf.ts), prompt building (prompt.ts), the generation loop
// (decode.ts) and the sequence pool (sequence-pool.ts).
import { availableParallelism } from "node:os";
import { type ChatWrapper, getLlama, type Llama, type LlamaModel, type LlamaOptions } from "node-llama-cpp";
import { isModelId, type ModelId } from "../../../schema/model-id.ts";
import type { ModelInfo } from "../../../schema/protocol.ts";
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
import { completionLimit, decode } from "./decode.ts";
import { checkGguf } from "./gguf.ts";
import { GrammarCache } from "./grammar-cache.ts";
import { chatWrapperFor, renderPrompt } from "./prompt.ts";
import { SequencePool } from "./sequence-pool.ts";

export interface LlamaCppModelConfig {
  /** A model id, `name` or `name:version`; checked when the engine is built. */
  name: string;
  path: string;
}

export interface LlamaCppEngineOptions {
  models: LlamaCppModelConfig[];
  /** Concurrent generations per model; more wait in line. Default 4. */
  capacity?: number;
  /** CPU threads per generation. Default 1 without a GPU (more threads than cores stall llama.cpp). */
  threads?: number;
  /** CPU threads across all generations. Default min(cores, capacity * threads) without a GPU. */
  maxThreads?: number;
  /** Default "auto" (Metal) on macOS, false (CPU) elsewhere. */
  gpu?: LlamaOptions["gpu"];
  /** Tokens per generation, prompt and completion together; capped by the model's training context. Default 4096. */
  contextSize?: number;
  /**
   * Run a model's generations as sequences of one shared context instead of one context each. Batching
   * them is faster on a GPU, but greedy output then depends on what else is in the batch (float
   * rounding), so the default is false: output is reproducible, which the tests and A/B comparisons need.
   */
  sharedContext?: boolean;
}

const DEFAULT_CONTEXT_SIZE = 4096;

/**
 * One Llama per process and settings, which engines never dispose: node-llama-cpp's dispose frees
 * llama.cpp's process-wide backend under every other live instance too, and marks it so it is never
 * initialized again. getLlama also costs ~0.7 s (it first tests the binary in a child process).
 * node-llama-cpp frees the backend itself when the process exits.
 */
const llamas = new Map<string, Promise<Llama>>();

function sharedLlama(options: LlamaOptions): Promise<Llama> {
  const key = JSON.stringify(options);
  let llama = llamas.get(key);
  if (!llama) {
    llama = getLlama(options);
    llamas.set(key, llama);
    llama.catch(() => llamas.delete(key));
  }
  return llama;
}

interface ModelConfig {
  name: ModelId;
  path: string;
  /** Tokens per context for this model (the registry's contextLength); else the engine's. */
  contextSize?: number;
  /** Loaded with a LoadSpec (a registry version), not configured: forgotten once unloaded. */
  runtime: boolean;
}

interface LoadedModel {
  name: ModelId;
  path: string;
  model: LlamaModel;
  chatWrapper: ChatWrapper;
  contextSize: number;
  pool: SequencePool;
  /** Weights plus `capacity` contexts, as node-llama-cpp estimates them (see footprint()). */
  footprintBytes: number | undefined;
  /** Stops every generation in flight on this model, with the error they should fail with. */
  halts: Set<AbortController>;
  /** Called whenever a generation on this model ends (unload whenIdle waits on them). */
  idle: Set<() => void>;
}

export class LlamaCppEngine implements Engine {
  readonly name = "llamacpp";
  private readonly configs = new Map<ModelId, ModelConfig>();
  /** Models an unload whenIdle is waiting on: new generations are refused. */
  private readonly unloading = new Set<ModelId>();
  /** Loads in progress or done, so concurrent requests share one. */
  private readonly loaded = new Map<ModelId, Promise<LoadedModel>>();
  private readonly ready = new Map<ModelId, LoadedModel>();
  private readonly capacity: number;
  private readonly threads: number | undefined;
  private readonly maxThreads: number | undefined;
  private readonly gpu: LlamaOptions["gpu"];
  private readonly contextSize: number;
  private readonly sharedContext: boolean;
  private readonly grammars = new GrammarCache();
  private closed = false;

  constructor(options: LlamaCppEngineOptions) {
    for (const { name, path } of options.models) {
      if (!isModelId(name)) throw new Error(`invalid model name "${name}"`);
      if (this.configs.has(name)) throw new Error(`model "${name}" is configured twice`);
      this.configs.set(name, { name, path, runtime: false });
    }
    this.capacity = positiveInt("capacity", options.capacity ?? 4);
    this.contextSize = positiveInt("contextSize", options.contextSize ?? DEFAULT_CONTEXT_SIZE);
    this.gpu = options.gpu ?? (process.platform === "darwin" ? "auto" : false);
    this.sharedContext = options.sharedContext ?? false;
    const cpuOnly = this.gpu === false;
    this.threads = options.threads ?? (cpuOnly ? 1 : undefined);
    this.maxThreads =
      options.maxThreads ??
      (cpuOnly ? Math.min(availableParallelism(), this.capacity * (this.threads ?? 1)) : undefined);
    if (this.threads !== undefined) positiveInt("threads", this.threads);
    if (this.maxThreads !== undefined) positiveInt("maxThreads", this.maxThreads);
  }

  async listModels(): Promise<ModelInfo[]> {
    return [...this.configs.keys()].map((name) => {
      const loaded = this.ready.get(name);
      return loaded ? this.info(loaded) : { name, engine: this.name, loaded: false };
    });
  }

  /** Takes plain text as well as a ModelId: bench and doctor name models from their own config. */
  async load(model: string, spec?: LoadSpec): Promise<ModelInfo> {
    if (!spec) return this.info(await this.ensureLoaded(model));
    checkRuntimeLoad(model, this.unloading);
    const known = this.configs.get(model);
    if (known && known.path !== spec.path) {
      if (!known.runtime) {
        throw new EngineError(
          "MODEL_LOAD_FAILED",
          `model "${model}" is configured on this agent from ${known.path}; it is not replaced by ${spec.path}`,
        );
      }
      if (this.loaded.has(model)) {
        throw new EngineError(
          "MODEL_LOAD_FAILED",
          `model "${model}" is already loaded from ${known.path}; unload it before loading it from ${spec.path}`,
        );
      }
    }
    const contextLength = spec.parameters?.contextLength;
    if (!known || known.path !== spec.path) {
      this.configs.set(model, {
        name: model,
        path: spec.path,
        ...(contextLength === undefined ? {} : { contextSize: contextLength }),
        runtime: true,
      });
    }
    try {
      return this.info(await this.ensureLoaded(model));
    } catch (err) {
      // A registry version that did not load is not one this engine serves.
      if (!known && this.configs.get(model)?.runtime && !this.loaded.has(model)) this.configs.delete(model);
      throw err;
    }
  }

  /**
   * By default generations still running on the model fail with a retryable ENGINE_ERROR; with
   * whenIdle they finish first while new ones are refused with MODEL_NOT_FOUND.
   */
  async unload(model: string, options: UnloadOptions = {}): Promise<void> {
    const config = this.config(model);
    if (!config) throw new EngineError("MODEL_NOT_FOUND", `no model named "${model}"`);
    const { name } = config;
    if (options.whenIdle) {
      this.unloading.add(name);
      try {
        const loaded = await this.loaded.get(name)?.catch(() => undefined);
        if (loaded) await whenIdle(loaded);
      } finally {
        this.unloading.delete(name);
      }
    }
    await this.release(name, new EngineError("ENGINE_ERROR", `model "${name}" was unloaded`, true));
    if (this.configs.get(name)?.runtime) this.configs.delete(name);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const reason = new EngineError("ENGINE_ERROR", "the llama.cpp engine was closed", true);
    // Models and contexts hold the memory; the shared Llama stays (see sharedLlama).
    await Promise.all([...this.loaded.keys()].map((name) => this.release(name, reason)));
  }

  generate(request: GenerationRequest, signal: AbortSignal): Generation {
    return streamGeneration((emit, halt) => this.run(request, signal, halt, emit), asEngineError);
  }

  private async run(
    request: GenerationRequest,
    signal: AbortSignal,
    halt: AbortController,
    emit: (piece: GenerationPiece) => void,
  ): Promise<GenerationResult> {
    if (this.closed) throw new EngineError("ENGINE_ERROR", "the llama.cpp engine is closed", true);
    const params = checkRequest(request);
    const loaded = await this.ensureLoaded(request.model);
    const prompt = renderPrompt(loaded.model, loaded.chatWrapper, request);
    if (prompt.tokens.length >= loaded.contextSize) {
      throw new EngineError(
        "CONTEXT_OVERFLOW",
        `the prompt is ${prompt.tokens.length} tokens; "${loaded.name}" fits ${loaded.contextSize - 1} plus at least one generated token`,
      );
    }
    // request.format is enforced with a grammar sized to the tokens this generation may produce.
    const grammar =
      request.format === undefined
        ? undefined
        : await this.grammars.stateFor(
            loaded.model,
            request.format,
            completionLimit(params, loaded.contextSize, prompt),
          );
    const usage = { promptTokens: prompt.tokens.length, completionTokens: 0 };
    const stopped = AbortSignal.any([signal, halt.signal]);
    const failIfHalted = () => {
      if (halt.signal.reason instanceof EngineError) throw halt.signal.reason;
    };
    loaded.halts.add(halt);
    try {
      const sequence = await loaded.pool.acquire(stopped);
      failIfHalted();
      if (!sequence) return { finishReason: "cancelled", usage };
      try {
        const finishReason = await decode(sequence, loaded, prompt, params, stopped, usage, emit, grammar);
        failIfHalted();
        return { finishReason, usage };
      } finally {
        await loaded.pool.release(sequence);
      }
    } finally {
      loaded.halts.delete(halt);
      for (const idle of loaded.idle) idle();
    }
  }

  private config(model: string): ModelConfig | undefined {
    return isModelId(model) ? this.configs.get(model) : undefined;
  }

  private ensureLoaded(model: string): Promise<LoadedModel> {
    const config = this.config(model);
    if (!config) return Promise.reject(new EngineError("MODEL_NOT_FOUND", `no model named "${model}"`));
    const { name } = config;
    if (this.closed)
      return Promise.reject(new EngineError("ENGINE_ERROR", "the llama.cpp engine is closed", true));
    if (this.unloading.has(name))
      return Promise.reject(new EngineError("MODEL_NOT_FOUND", `model "${name}" is being unloaded`, true));
    let loading = this.loaded.get(name);
    if (!loading) {
      const attempt = this.loadModel(config);
      this.loaded.set(name, attempt);
      attempt.then(
        (loaded) => {
          if (this.loaded.get(name) === attempt) this.ready.set(name, loaded);
        },
        // A failed load is forgotten so the next request tries again (the file may have been fixed).
        () => {
          if (this.loaded.get(name) === attempt) this.loaded.delete(name);
        },
      );
      loading = attempt;
    }
    return loading;
  }

  private async loadModel(config: ModelConfig): Promise<LoadedModel> {
    await checkGguf(config.path);
    const llama = await this.getLlama();
    let model: LlamaModel;
    try {
      model = await llama.loadModel({ modelPath: config.path });
    } catch (err) {
      throw new EngineError("MODEL_LOAD_FAILED", `llama.cpp could not load "${config.name}"`, false, {
        cause: err,
      });
    }
    try {
      const pool = await SequencePool.create(model, {
        contextSize: Math.min(config.contextSize ?? this.contextSize, model.trainContextSize),
        capacity: this.capacity,
        threads: this.threads,
        shared: this.sharedContext,
      });
      const chatWrapper = chatWrapperFor(model);
      // llama.cpp may round the size up; the size it made is the one to enforce and report.
      const contextSize = pool.contextSize;
      return {
        name: config.name,
        path: config.path,
        model,
        chatWrapper,
        contextSize,
        pool,
        footprintBytes: await this.footprint(model, contextSize),
        halts: new Set(),
        idle: new Set(),
      };
    } catch (err) {
      await model.dispose();
      throw new EngineError("MODEL_LOAD_FAILED", `no context for "${config.name}"`, true, { cause: err });
    }
  }

  private async getLlama(): Promise<Llama> {
    try {
      return await sharedLlama({ gpu: this.gpu, build: "never", maxThreads: this.maxThreads });
    } catch (err) {
      throw new EngineError("ENGINE_ERROR", "the llama.cpp runtime failed to start", true, { cause: err });
    }
  }

  private async release(name: ModelId, reason: EngineError): Promise<void> {
    const loading = this.loaded.get(name);
    if (!loading) return;
    this.loaded.delete(name);
    this.ready.delete(name);
    const loaded = await loading.catch(() => undefined);
    if (!loaded) return;
    for (const halt of loaded.halts) halt.abort(reason);
    await loaded.pool.close(reason);
    await loaded.model.dispose();
  }

  /**
   * Memory the model takes at most: its weights in memory (LlamaModel.size) plus `capacity`
   * contexts of its size (one context per generation, created as demand grows), each as
   * node-llama-cpp's GGUF insights estimate it (KV cache and compute graph, CPU and GPU together).
   */
  private async footprint(model: LlamaModel, contextSize: number): Promise<number | undefined> {
    try {
      const context = await model.fileInsights.estimateContextResourceRequirementsV2({
        contextSize,
        modelGpuLayers: model.gpuLayers,
        sequences: this.sharedContext ? this.capacity : 1,
      });
      const contexts = this.sharedContext ? 1 : this.capacity;
      return Math.round(model.size + contexts * (context.cpuRam + context.gpuVram));
    } catch {
      return undefined; // an estimate is optional in ModelInfo; the load itself worked
    }
  }

  private info(loaded: LoadedModel): ModelInfo {
    return {
      name: loaded.name,
      engine: this.name,
      contextLength: loaded.contextSize,
      loaded: true,
      ...(loaded.footprintBytes === undefined ? {} : { footprintBytes: loaded.footprintBytes }),
    };
  }
}

/** Resolves once no generation runs on the model. */
function whenIdle(loaded: LoadedModel): Promise<void> {
  return new Promise((resolve) => {
    const check = () => {
      if (loaded.halts.size > 0) return;
      loaded.idle.delete(check);
      resolve();
    };
    loaded.idle.add(check);
    check();
  });
}

function positiveInt(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer`);
  return value;
}

function asEngineError(err: unknown): EngineError {
  if (err instanceof EngineError) return err;
  return new EngineError("ENGINE_ERROR", "llama.cpp failed during generation", true, { cause: err });
}
