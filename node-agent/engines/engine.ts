// The one interface every inference engine implements (llama.cpp, MLX, Ollama).
import type { ModelId } from "../../schema/model-id.ts";
import type {
  ChatMessage,
  EngineName,
  FinishReason,
  ModelInfo,
  SamplingParams,
  Usage,
} from "../../schema/protocol.ts";
import type { ModelParameters } from "../../schema/registry.ts";

export interface GenerationRequest {
  /**
   * A model id (`name` or `name:version`) as the caller sent it. Plain text, not ModelId, because
   * it arrives from outside the agent too (bench drives engines directly); text that is no model
   * id is simply a model the engine does not have (MODEL_NOT_FOUND).
   */
  model: string;
  /** Exactly one of prompt (raw completion) or messages (rendered with the model's chat template). */
  prompt?: string;
  messages?: ChatMessage[];
  params: SamplingParams;
}

/** One streamed piece of output: text and the number of tokens it took. */
export interface GenerationPiece {
  text: string;
  tokens: number;
}

export interface GenerationResult {
  finishReason: FinishReason;
  usage: Usage;
}

/**
 * An async iterable of pieces whose `result` resolves once iteration ends (normally, at a stop
 * sequence, at max tokens, or because the AbortSignal fired; then finishReason is "cancelled").
 */
export interface Generation extends AsyncIterable<GenerationPiece> {
  readonly result: Promise<GenerationResult>;
}

/** A model the engine was not configured with, loaded at runtime (a registry version). */
export interface LoadSpec {
  /** The weights: a file the engine can read (a GGUF for llama.cpp). */
  path: string;
  parameters?: ModelParameters;
}

export interface UnloadOptions {
  /**
   * Wait for the generations running on the model to end, refusing new ones meanwhile, instead of
   * failing them with a retryable ENGINE_ERROR. The hub's unload frames use this.
   */
  whenIdle?: boolean;
}

export interface Engine {
  readonly name: EngineName;
  /** Models this engine can serve now. */
  listModels(): Promise<ModelInfo[]>;
  /**
   * Without a spec: one of the engine's configured models. With one: serve `model` from
   * `spec.path` from now on (the same id and path again is a no-op that answers the same info).
   */
  load(model: ModelId, spec?: LoadSpec): Promise<ModelInfo>;
  /** A model loaded with a spec is forgotten afterwards; a configured one stays listed, unloaded. */
  unload(model: ModelId, options?: UnloadOptions): Promise<void>;
  generate(request: GenerationRequest, signal: AbortSignal): Generation;
  /** Release every native resource; the engine is unusable afterwards. */
  close(): Promise<void>;
}

/** Stable engine error codes; the agent maps them to protocol error frames in one place. */
export type EngineErrorCode =
  | "MODEL_NOT_FOUND"
  | "MODEL_LOAD_FAILED"
  | "CONTEXT_OVERFLOW"
  | "ENGINE_ERROR"
  | "INVALID_REQUEST";

export class EngineError extends Error {
  constructor(
    readonly code: EngineErrorCode,
    message: string,
    readonly retryable = false,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "EngineError";
  }
}
