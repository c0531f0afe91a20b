// Loading an MLX model folder as mlx-community ships it (config.json, *.safetensors, tokenizer.json,
// tokenizer_config.json, optionally generation_config.json and a separate chat template) into the
// child's MLX: the LLM package's model class, weights converted to float32 on the CPU (a bfloat16 or
// float16 matmul aborts the process there), 4-bit/8-bit affine quantization as the config says.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { patchLlama3Rope } from "./rope.ts";
import {
  firstLine,
  type LlmModel,
  type MlxArray,
  type MlxRuntime,
  SUPPORTED_MODEL_TYPES,
  type Tokenizer,
} from "./runtime.ts";
import { checkSafetensors } from "./safetensors.ts";

/** What the weights are computed in: float32 (required on the CPU), or as stored (Metal). */
export type ComputeDtype = "float32" | "native";

export interface LoadedMlxModel {
  model: LlmModel;
  tokenizer: Tokenizer;
  modelType: string;
  contextLength: number;
  /** Tokens that end a reply: the tokenizer's EOS and every eos_token_id the configs name. */
  eosTokens: Set<number>;
  /** The weights as held in memory (after any conversion). */
  weightBytes: number;
  /** One token's keys and values across all layers, in the compute dtype. */
  kvBytesPerToken: number;
  quantization?: { bits: number; groupSize: number };
  computeDtype: ComputeDtype;
}

/** A folder that is no loadable model; its message says what is wrong, in words for an operator. */
export class ModelFolderError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ModelFolderError";
  }
}

const DEFAULT_CONTEXT_LENGTH = 4096;

export interface LoadOptions {
  computeDtype: ComputeDtype;
  /** Caps the model's own context length. */
  contextSize?: number;
}

export async function loadMlxModel(
  runtime: MlxRuntime,
  dir: string,
  options: LoadOptions,
): Promise<LoadedMlxModel> {
  const { mx, nn } = runtime;
  const config = readJson(dir, "config.json") as Record<string, unknown>;
  const modelType = String(config.model_type ?? "");
  const Model = runtime.modelClass(modelType);
  if (!Model) {
    throw new ModelFolderError(
      `model_type "${modelType}" is not one node-mlx's LLM package runs (it runs ${SUPPORTED_MODEL_TYPES.join(", ")})`,
    );
  }
  const weightFiles = readdirSync(dir).filter((f) => f.endsWith(".safetensors"));
  if (weightFiles.length === 0) throw new ModelFolderError(`no .safetensors weights in ${dir}`);
  const tokenizer = loadTokenizer(runtime, dir);

  let weights: Record<string, MlxArray> = {};
  for (const file of weightFiles.sort()) {
    try {
      await checkSafetensors(join(dir, file));
      Object.assign(weights, mx.load(join(dir, file)));
    } catch (err) {
      throw new ModelFolderError(`${file} is not readable safetensors: ${firstLine(err)}`, { cause: err });
    }
  }
  weights = Object.fromEntries(
    Object.entries(weights).filter(([name]) => !name.includes("rotary_emb.inv_freq")),
  );
  // The LLM package defaults tie_word_embeddings to true; Hugging Face's llama config defaults to false.
  const tied = config.tie_word_embeddings ?? !("lm_head.weight" in weights || "lm_head.scales" in weights);
  if (tied) {
    for (const name of Object.keys(weights)) if (name.startsWith("lm_head.")) delete weights[name];
  }
  let model: LlmModel;
  try {
    model = new Model({ ...config, tie_word_embeddings: tied });
    model.sanitize(weights);
  } catch (err) {
    throw new ModelFolderError(`config.json does not describe a ${modelType} model: ${firstLine(err)}`, {
      cause: err,
    });
  }
  if (options.computeDtype === "float32") {
    for (const [name, w] of Object.entries(weights)) {
      if (w.dtype === mx.bfloat16 || w.dtype === mx.float16) weights[name] = w.astype(mx.float32);
    }
  }
  const quantization = readQuantization(config);
  try {
    if (quantization) {
      nn.quantize(
        model,
        quantization.groupSize,
        quantization.bits,
        (path, module) =>
          `${path}.scales` in weights && (module instanceof nn.Linear || module instanceof nn.Embedding),
      );
    }
    model.loadWeights(Object.entries(weights));
    mx.eval(model.parameters());
    patchLlama3Rope(mx, model, config);
  } catch (err) {
    throw new ModelFolderError(`the weights do not fit config.json: ${firstLine(err)}`, { cause: err });
  }

  const weightBytes = Object.values(weights).reduce((n, w) => n + w.size * w.itemsize, 0);
  const heads = Number(config.num_attention_heads);
  const headDim = Number(config.head_dim ?? Number(config.hidden_size) / heads);
  const kvHeads = Number(config.num_key_value_heads ?? heads);
  const layers = Number(config.num_hidden_layers);
  const computeItem = options.computeDtype === "float32" ? 4 : 2;
  const own = Number(config.max_position_embeddings);
  const contextLength = Math.min(
    Number.isInteger(own) && own > 0 ? own : DEFAULT_CONTEXT_LENGTH,
    options.contextSize ?? Number.POSITIVE_INFINITY,
  );
  return {
    model,
    tokenizer,
    modelType,
    contextLength,
    eosTokens: eosTokens(dir, config, tokenizer),
    weightBytes,
    kvBytesPerToken: layers * 2 * kvHeads * headDim * computeItem,
    ...(quantization ? { quantization } : {}),
    computeDtype: options.computeDtype,
  };
}

function loadTokenizer(runtime: MlxRuntime, dir: string): Tokenizer {
  const tokenizerJSON = readJson(dir, "tokenizer.json");
  const tokenizerConfig = readJson(dir, "tokenizer_config.json") as Record<string, unknown>;
  // Newer exports keep the template beside the config rather than in it.
  if (tokenizerConfig.chat_template === undefined) {
    if (existsSync(join(dir, "chat_template.jinja"))) {
      tokenizerConfig.chat_template = readFileSync(join(dir, "chat_template.jinja"), "utf8");
    } else if (existsSync(join(dir, "chat_template.json"))) {
      tokenizerConfig.chat_template = (
        readJson(dir, "chat_template.json") as { chat_template?: unknown }
      ).chat_template;
    }
  }
  try {
    return runtime.loadTokenizer(tokenizerJSON, tokenizerConfig);
  } catch (err) {
    throw new ModelFolderError(`tokenizer.json is not a tokenizer: ${firstLine(err)}`, { cause: err });
  }
}

function readQuantization(config: Record<string, unknown>): { bits: number; groupSize: number } | undefined {
  const q = config.quantization as { bits?: unknown; group_size?: unknown } | undefined;
  if (!q) return undefined;
  const bits = Number(q.bits);
  const groupSize = Number(q.group_size);
  if (![2, 3, 4, 6, 8].includes(bits) || ![32, 64, 128].includes(groupSize)) {
    throw new ModelFolderError(`unsupported quantization ${JSON.stringify(q)} in config.json`);
  }
  return { bits, groupSize };
}

function eosTokens(dir: string, config: Record<string, unknown>, tokenizer: Tokenizer): Set<number> {
  const ids = new Set<number>();
  const add = (value: unknown) => {
    for (const id of Array.isArray(value) ? value : [value]) if (Number.isInteger(id)) ids.add(id as number);
  };
  add(config.eos_token_id);
  if (existsSync(join(dir, "generation_config.json"))) {
    add((readJson(dir, "generation_config.json") as { eos_token_id?: unknown }).eos_token_id);
  }
  const tokenizerConfig = readJson(dir, "tokenizer_config.json") as { eos_token?: unknown };
  const eos = tokenizerConfig.eos_token;
  const text = typeof eos === "string" ? eos : (eos as { content?: unknown } | undefined)?.content;
  if (typeof text === "string") add(tokenizer.model.tokens_to_ids.get(text));
  return ids;
}

function readJson(dir: string, file: string): unknown {
  const path = join(dir, file);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ModelFolderError(`${dir} has no readable ${file}`, { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ModelFolderError(`${file} is not JSON: ${firstLine(err)}`, { cause: err });
  }
}
