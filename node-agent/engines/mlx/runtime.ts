// Loading MLX in the engine's child process: node-mlx (@frost-beta/mlx 0.0.7), the model classes of
// @frost-beta/llm 0.4.1 and the @lenml/tokenizers they use, all from the runtime folder beside this
// file (install.mjs installs it apart from the project, see docs/engine-mlx.md), plus the shim that
// lets the LLM package, written for node-mlx >= 0.2, run on 0.0.7.
//
// The types below are the small part of those packages the engine uses, written out here because
// the runtime is optional: `tsc -p node-agent` must pass on a machine that has not installed it.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const RUNTIME_DIR = join(dirname(fileURLToPath(import.meta.url)), "runtime");

export interface MlxArray {
  readonly shape: number[];
  readonly dtype: MlxDtype;
  readonly size: number;
  readonly itemsize: number;
  astype(dtype: MlxDtype): MlxArray;
  reshape(...shape: number[]): MlxArray;
  index(...indices: unknown[]): MlxArray;
  item(): number;
}

export interface MlxDtype {
  readonly size: number;
}

export interface MlxModule {
  parameters(): unknown;
  loadWeights(weights: [string, MlxArray][], strict?: boolean): MlxModule;
}

export interface MlxCore {
  array(value: unknown, dtype?: MlxDtype): MlxArray;
  int32: MlxDtype;
  uint32: MlxDtype;
  float32: MlxDtype;
  float16: MlxDtype;
  bfloat16: MlxDtype;
  Slice(start?: number | null, stop?: number | null): unknown;
  newaxis: unknown;
  load(path: string): Record<string, MlxArray>;
  eval(...arrays: unknown[]): void;
  argmax(a: MlxArray, axis?: number): MlxArray;
  argsort(a: MlxArray, axis?: number): MlxArray;
  takeAlongAxis(a: MlxArray, indices: MlxArray, axis?: number): MlxArray;
  softmax(a: MlxArray, axis?: number): MlxArray;
  cumsum(a: MlxArray, axis?: number): MlxArray;
  multiply(a: MlxArray, b: number | MlxArray): MlxArray;
  greater(a: MlxArray, b: number | MlxArray): MlxArray;
  where(condition: MlxArray, a: MlxArray, b: MlxArray): MlxArray;
  zerosLike(a: MlxArray): MlxArray;
  log(a: MlxArray): MlxArray;
  matmul(a: MlxArray, b: MlxArray): MlxArray;
  add(a: MlxArray, b: MlxArray): MlxArray;
  subtract(a: MlxArray, b: MlxArray): MlxArray;
  cos(a: MlxArray): MlxArray;
  sin(a: MlxArray): MlxArray;
  arange(start: number, stop: number, step: number, dtype: MlxDtype): MlxArray;
  concatenate(arrays: MlxArray[], axis?: number): MlxArray;
  fast: {
    rope(
      x: MlxArray,
      dims: number,
      traditional: boolean,
      base: number,
      scale: number,
      offset: number,
    ): MlxArray;
  };
  defaultDevice(): unknown;
  random: {
    key(seed: number): MlxArray;
    split(key: MlxArray, num?: number): MlxArray;
    categorical(
      logits: MlxArray,
      axis?: number,
      shape?: number[],
      numSamples?: number,
      key?: MlxArray,
    ): MlxArray;
  };
  metal: {
    isAvailable(): boolean;
    getActiveMemory(): number;
    getPeakMemory(): number;
    getCacheMemory(): number;
    clearCache(): void;
  };
  /** Missing in 0.0.7; the shim adds them. */
  tidy?: unknown;
  dispose?: unknown;
}

export interface MlxNn {
  Linear: abstract new (...args: never[]) => unknown;
  Embedding: abstract new (...args: never[]) => unknown;
  quantize(
    model: MlxModule,
    groupSize: number,
    bits: number,
    predicate: (path: string, module: unknown) => boolean,
  ): void;
}

/** A decoder-only model of @frost-beta/llm (llama, qwen2, gemma). */
export interface LlmModel extends MlxModule {
  forward(inputs: MlxArray, memory: undefined, cache: KvCacheLayer[]): MlxArray;
  getDecoderKVCacheOptions(): { nLayers: number };
  sanitize(weights: Record<string, MlxArray>): void;
}

export interface KvCacheLayer {
  readonly offset: number;
  readonly state: MlxArray[];
}

export interface Tokenizer {
  encode(text: string, options?: { add_special_tokens?: boolean }): number[];
  decode(
    tokens: number[],
    options?: { skip_special_tokens?: boolean; clean_up_tokenization_spaces?: boolean },
  ): string;
  apply_chat_template(
    messages: { role: string; content: string }[],
    options: { add_generation_prompt: boolean; tokenize: boolean },
  ): number[] | string;
  model: { tokens_to_ids: Map<string, number> };
}

export interface MlxRuntime {
  mx: MlxCore;
  nn: MlxNn;
  /** The model class for a config's model_type, or undefined when the LLM package has none. */
  modelClass(modelType: string): (new (config: unknown) => LlmModel) | undefined;
  newKvCache(model: LlmModel): KvCacheLayer[];
  loadTokenizer(tokenizerJSON: unknown, tokenizerConfig: unknown): Tokenizer;
  /** "gpu" when MLX runs on Metal, else "cpu". */
  device: "cpu" | "gpu";
}

/** model_type values the LLM package serves, and the module that serves each (mistral is a llama). */
const MODEL_MODULES: Record<string, string> = {
  llama: "llama",
  mistral: "llama",
  qwen2: "qwen2",
  gemma: "gemma",
};
export const SUPPORTED_MODEL_TYPES = Object.keys(MODEL_MODULES);

export class MlxUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "MlxUnavailableError";
  }
}

/**
 * Loads MLX from the runtime folder; throws MlxUnavailableError when it is not installed or its
 * binary does not load (on Linux: no libblas.so.3/liblapack.so.3). Call once per process.
 */
export function loadMlxRuntime(runtimeDir = RUNTIME_DIR): MlxRuntime {
  const mlxDir = join(runtimeDir, "node_modules", "@frost-beta", "mlx");
  if (!existsSync(join(mlxDir, "package.json"))) {
    throw new MlxUnavailableError(
      `the MLX runtime is not installed in ${runtimeDir}: run \`npm run mlx:install\``,
    );
  }
  const require = createRequire(join(runtimeDir, "package.json"));
  let mlx: { core: MlxCore; nn: MlxNn };
  try {
    mlx = require("@frost-beta/mlx");
  } catch (err) {
    const hint =
      process.platform === "linux"
        ? " (it needs apt-get install libblas3 liblapack3 libgfortran5 libopenblas0-pthread)"
        : "";
    throw new MlxUnavailableError(`node-mlx does not load here${hint}: ${firstLine(err)}`, { cause: err });
  }
  installShim(mlx.core);
  const llmDir = dirname(require.resolve("@frost-beta/llm/package.json"));
  const { KVCache } = require(join(llmDir, "dist", "kv-cache.js")) as {
    KVCache: { create(options: { nLayers: number }): KvCacheLayer[] };
  };
  const { TokenizerLoader } = require("@lenml/tokenizers") as {
    TokenizerLoader: {
      fromPreTrained(files: { tokenizerJSON: unknown; tokenizerConfig: unknown }): Tokenizer;
    };
  };
  return {
    mx: mlx.core,
    nn: mlx.nn,
    modelClass: (modelType) => {
      const module = MODEL_MODULES[modelType];
      if (!module) return undefined;
      return (
        require(join(llmDir, "dist", "models", `${module}.js`)) as { Model: new (c: unknown) => LlmModel }
      ).Model;
    },
    newKvCache: (model) => KVCache.create(model.getDecoderKVCacheOptions()),
    loadTokenizer: (tokenizerJSON, tokenizerConfig) =>
      TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig }),
    device: String(mlx.core.defaultDevice()).includes("gpu") ? "gpu" : "cpu",
  };
}

/**
 * node-mlx 0.0.7 has neither `tidy` nor `dispose` (the LLM package calls both): arrays are freed
 * when V8 collects their wrappers, so tidy only runs its function and dispose does nothing. The
 * engine collects garbage itself (decode.ts), which also frees what a tidy would have.
 */
function installShim(mx: MlxCore): void {
  mx.tidy ??= <T>(fn: () => T): T => fn();
  mx.dispose ??= () => {};
}

/** An error's first line: native MLX messages can run long. */
export function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split("\n")[0] ?? "";
}
