// The one interface every inference engine implements (llama.cpp, MLX, Ollama).
import type { ModelId } from "../../schema/model-id.ts";
import type {
  AgentErrorCode,
  ChatMessage,
  EngineInfo,
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
  /**
   * Structured output: "json" or a JSON schema the output must follow. Passed through to engines
   * that enforce it (EngineInfo.capabilities says how); the others ignore it.
   */
  format?: "json" | Record<string, unknown>;
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
  /** The weights: a file the engine can read (a GGUF for llama.cpp), or an Ollama tag. */
  path: string;
  parameters?: ModelParameters;
  /** The engine to load it with, when an agent runs several (see engines/composite.ts). */
  engine?: EngineName;
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
  /**
   * What hello announces of the engines behind this one: capabilities and quantizations. Optional:
   * an engine without it is announced as its name alone.
   */
  describe?(): Promise<EngineInfo[]>;
}

/** Stable engine error codes; the agent maps them to protocol error frames in one place. */
export type EngineErrorCode =
  | "MODEL_NOT_FOUND"
  | "MODEL_LOAD_FAILED"
  | "CONTEXT_OVERFLOW"
  | "ENGINE_ERROR"
  | "INVALID_REQUEST"
  /** The engine's runtime is not there (an Ollama server that does not answer); retryable. */
  | "ENGINE_UNAVAILABLE"
  /** The model does not fit in the memory the engine has. */
  | "OUT_OF_MEMORY";

/**
 * The protocol's code for an engine error. The wire's codes are a closed enum that hubs one
 * version older must parse, so codes newer than the wire travel as ENGINE_ERROR (with their
 * message and retryable flag).
 */
export function agentErrorCode(code: EngineErrorCode): AgentErrorCode {
  return code === "ENGINE_UNAVAILABLE" || code === "OUT_OF_MEMORY" ? "ENGINE_ERROR" : code;
}

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
