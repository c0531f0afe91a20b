// The llama.cpp engine: GGUF models through node-llama-cpp, one token at a time straight from the
// context sequence, so streaming, stop sequences, token counts and cancellation are exact.
import { randomInt } from "node:crypto";
import { availableParallelism } from "node:os";
import {
  type ChatHistoryItem,
  type ChatWrapper,
  getLlama,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
  type LlamaOptions,
  readGgufFileInfo,
  resolveChatWrapper,
  type Token,
} from "node-llama-cpp";
import { isModelId, type ModelId } from "../../schema/model-id.ts";
import { ChatMessage, type ModelInfo, SamplingParams } from "../../schema/protocol.ts";
import {
  type Engine,
  EngineError,
  type Generation,
  type GenerationPiece,
  type GenerationRequest,
  type GenerationResult,
} from "./engine.ts";

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

/** llama.cpp server's defaults, for whatever the request leaves out. */
const DEFAULT_SAMPLING = { temperature: 0.8, topP: 0.95, topK: 40, minP: 0.05 } as const;
const DEFAULT_CONTEXT_SIZE = 4096;
/** A UTF-8 character spans at most 4 byte tokens; wait that long for the rest of a split character. */
const MAX_UTF8_TOKENS = 4;
/** Tokens of recent context given to the detokenizer so leading spaces come out right. */
const DETOKENIZER_CONTEXT = 16;
/** Architectures without attention; for every other one llama.cpp aborts the process when these keys are missing. */
const RECURRENT_ARCHITECTURE = /^(mamba|rwkv|arwkv)/;

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

interface LoadedModel {
  name: ModelId;
  model: LlamaModel;
  chatWrapper: ChatWrapper;
  contextSize: number;
  pool: SequencePool;
  /** Stops every generation in flight on this model, with the error they should fail with. */
  halts: Set<AbortController>;
}

interface RenderedPrompt {
  tokens: Token[];
  stopTokens: Set<Token>;
  stopTexts: string[];
}

export class LlamaCppEngine implements Engine {
  readonly name = "llamacpp";
  private readonly configs = new Map<ModelId, { name: ModelId; path: string }>();
  /** Loads in progress or done, so concurrent requests share one. */
  private readonly loaded = new Map<ModelId, Promise<LoadedModel>>();
  private readonly ready = new Map<ModelId, LoadedModel>();
  private readonly capacity: number;
  private readonly threads: number | undefined;
  private readonly maxThreads: number | undefined;
  private readonly gpu: LlamaOptions["gpu"];
  private readonly contextSize: number;
  private readonly sharedContext: boolean;
  private closed = false;

  constructor(options: LlamaCppEngineOptions) {
    for (const { name, path } of options.models) {
      if (!isModelId(name)) throw new Error(`invalid model name "${name}"`);
      if (this.configs.has(name)) throw new Error(`model "${name}" is configured twice`);
      this.configs.set(name, { name, path });
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
  async load(model: string): Promise<ModelInfo> {
    return this.info(await this.ensureLoaded(model));
  }

  /** Generations still running on the model fail with a retryable ENGINE_ERROR. */
  async unload(model: string): Promise<void> {
    const config = this.config(model);
    if (!config) throw new EngineError("MODEL_NOT_FOUND", `no model named "${model}"`);
    await this.release(
      config.name,
      new EngineError("ENGINE_ERROR", `model "${config.name}" was unloaded`, true),
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const reason = new EngineError("ENGINE_ERROR", "the llama.cpp engine was closed", true);
    // Models and contexts hold the memory; the shared Llama stays (see sharedLlama).
    await Promise.all([...this.loaded.keys()].map((name) => this.release(name, reason)));
  }

  generate(request: GenerationRequest, signal: AbortSignal): Generation {
    const stream = new PieceStream();
    const halt = new AbortController();
    // A consumer that stops iterating early no longer wants the rest.
    stream.onReturn = () => halt.abort();
    const result = this.run(request, signal, halt, (piece) => stream.push(piece)).then(
      (res) => {
        stream.end();
        return res;
      },
      (err: unknown) => {
        const error = asEngineError(err);
        stream.end(error);
        throw error;
      },
    );
    // The iterator reports the same failure; without this a caller that only iterates would crash
    // the process with an unhandled rejection.
    result.catch(() => {});
    return { result, [Symbol.asyncIterator]: () => stream };
  }

  private async run(
    request: GenerationRequest,
    signal: AbortSignal,
    halt: AbortController,
    emit: (piece: GenerationPiece) => void,
  ): Promise<GenerationResult> {
    if (this.closed) throw new EngineError("ENGINE_ERROR", "the llama.cpp engine is closed", true);
    const params = parseRequest(request);
    const loaded = await this.ensureLoaded(request.model);
    const prompt = render(loaded, request);
    if (prompt.tokens.length >= loaded.contextSize) {
      throw new EngineError(
        "CONTEXT_OVERFLOW",
        `the prompt is ${prompt.tokens.length} tokens; "${loaded.name}" fits ${loaded.contextSize - 1} plus at least one generated token`,
      );
    }
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
        const finishReason = await decode(sequence, loaded, prompt, params, stopped, usage, emit);
        failIfHalted();
        return { finishReason, usage };
      } finally {
        await loaded.pool.release(sequence);
      }
    } finally {
      loaded.halts.delete(halt);
    }
  }

  private config(model: string): { name: ModelId; path: string } | undefined {
    return isModelId(model) ? this.configs.get(model) : undefined;
  }

  private ensureLoaded(model: string): Promise<LoadedModel> {
    const config = this.config(model);
    if (!config) return Promise.reject(new EngineError("MODEL_NOT_FOUND", `no model named "${model}"`));
    const { name } = config;
    if (this.closed)
      return Promise.reject(new EngineError("ENGINE_ERROR", "the llama.cpp engine is closed", true));
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

  private async loadModel(config: { name: ModelId; path: string }): Promise<LoadedModel> {
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
        contextSize: Math.min(this.contextSize, model.trainContextSize),
        capacity: this.capacity,
        threads: this.threads,
        shared: this.sharedContext,
      });
      // Render the model's own Jinja template when it has one, as llama-server --jinja does. The
      // default "auto" compares it with every built-in wrapper first, which takes a second per load.
      const hasTemplate = model.fileInfo.metadata.tokenizer?.chat_template !== undefined;
      const chatWrapper = resolveChatWrapper(model, { type: hasTemplate ? "jinjaTemplate" : "auto" });
      // llama.cpp may round the size up; the size it made is the one to enforce and report.
      const contextSize = pool.contextSize;
      return { name: config.name, model, chatWrapper, contextSize, pool, halts: new Set() };
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

  private info(loaded: LoadedModel): ModelInfo {
    return { name: loaded.name, engine: this.name, contextLength: loaded.contextSize, loaded: true };
  }
}

function positiveInt(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer`);
  return value;
}

function parseRequest(request: GenerationRequest): SamplingParams {
  if ((request.prompt === undefined) === (request.messages === undefined)) {
    throw new EngineError("INVALID_REQUEST", "give exactly one of prompt or messages");
  }
  if (request.messages && !ChatMessage.array().min(1).safeParse(request.messages).success) {
    throw new EngineError("INVALID_REQUEST", "messages must be a non-empty list of chat messages");
  }
  const params = SamplingParams.safeParse(request.params);
  if (!params.success) {
    const issue = params.error.issues[0];
    throw new EngineError("INVALID_REQUEST", `invalid params: ${issue?.path.join(".")}: ${issue?.message}`);
  }
  return params.data;
}

/** Refuses files llama.cpp would choke on, before it sees them: some missing keys abort the process. */
async function checkGguf(path: string): Promise<void> {
  let architecture: string | undefined;
  let metadata: Record<string, unknown>;
  try {
    const info = await readGgufFileInfo(path, {
      sourceType: "filesystem",
      readTensorInfo: false,
      ignoreKeys: [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.scores",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
      ],
      logWarnings: false,
    });
    metadata = info.metadata as unknown as Record<string, unknown>;
    architecture = info.metadata.general?.architecture;
  } catch (err) {
    throw new EngineError("MODEL_LOAD_FAILED", `"${path}" is not a readable GGUF file`, false, {
      cause: err,
    });
  }
  if (!architecture) throw new EngineError("MODEL_LOAD_FAILED", `"${path}" names no architecture`);
  if (RECURRENT_ARCHITECTURE.test(architecture)) return;
  const hparams = metadata[architecture] as Record<string, unknown> | undefined;
  const attention = hparams?.attention as Record<string, unknown> | undefined;
  if (hparams?.feed_forward_length === undefined || attention?.head_count === undefined) {
    throw new EngineError(
      "MODEL_LOAD_FAILED",
      `"${path}" lacks ${architecture}.feed_forward_length or ${architecture}.attention.head_count`,
    );
  }
}

/** Tokens for a raw prompt, or for chat messages rendered with the model's own chat template. */
function render(loaded: LoadedModel, request: GenerationRequest): RenderedPrompt {
  const { model } = loaded;
  const stopTokens = new Set<Token>();
  const stopTexts = [...(request.params.stop ?? [])];
  if (request.prompt !== undefined) {
    // As LlamaCompletion does: BOS when the model asks for it, then the text.
    const bos = model.tokens.shouldPrependBosToken ? model.tokens.bos : null;
    const text = model.tokenize(request.prompt, false, bos === null ? undefined : "trimLeadingSpace");
    const tokens = bos === null ? text : [bos, ...text];
    if (tokens.length === 0) throw new EngineError("INVALID_REQUEST", "the prompt is empty");
    return { tokens, stopTokens, stopTexts };
  }
  const messages = request.messages ?? [];
  const history: ChatHistoryItem[] = messages.map((m) =>
    m.role === "assistant" ? { type: "model", response: [m.content] } : { type: m.role, text: m.content },
  );
  // A trailing assistant message is a prefix the model continues; otherwise it starts a new reply.
  if (history.at(-1)?.type !== "model") history.push({ type: "model", response: [] });
  const state = loaded.chatWrapper.generateContextState({ chatHistory: history });
  for (const trigger of state.stopGenerationTriggers) {
    const plain = trigger.values.every((v) => typeof v === "string");
    if (plain) {
      const text = trigger.toString();
      if (text !== "") stopTexts.push(text);
      continue;
    }
    // A special token such as <|im_end|>; longer mixed triggers start with one the model already stops on.
    const tokens = trigger.tokenize(model.tokenizer);
    if (tokens.length === 1 && !model.isEogToken(tokens[0])) stopTokens.add(tokens[0] as Token);
  }
  return { tokens: state.contextText.tokenize(model.tokenizer), stopTokens, stopTexts };
}

async function decode(
  sequence: LlamaContextSequence,
  loaded: LoadedModel,
  prompt: RenderedPrompt,
  params: SamplingParams,
  stopped: AbortSignal,
  usage: { promptTokens: number; completionTokens: number },
  emit: (piece: GenerationPiece) => void,
): Promise<GenerationResult["finishReason"]> {
  // The last generated token is never evaluated, so prompt + completion may fill the context exactly.
  const limit = Math.min(params.maxTokens, loaded.contextSize - prompt.tokens.length);
  const temperature = params.temperature ?? DEFAULT_SAMPLING.temperature;
  const sampling =
    temperature === 0
      ? { temperature: 0 }
      : {
          temperature,
          topP: params.topP ?? DEFAULT_SAMPLING.topP,
          topK: DEFAULT_SAMPLING.topK,
          minP: DEFAULT_SAMPLING.minP,
          // node-llama-cpp's own default is the current second, which gives concurrent requests equal output.
          seed: params.seed === undefined ? randomInt(2 ** 32) : params.seed >>> 0,
        };
  const text = new OutputText(loaded.model, prompt.stopTexts, prompt.tokens);
  const tokens = sequence.evaluate(prompt.tokens, sampling);
  let finishReason: GenerationResult["finishReason"] = "length";
  try {
    while (usage.completionTokens < limit) {
      if (stopped.aborted) {
        finishReason = "cancelled";
        break;
      }
      const next = await tokens.next();
      // evaluate() ends by itself at an end-of-generation token.
      if (next.done || prompt.stopTokens.has(next.value)) {
        finishReason = "stop";
        break;
      }
      usage.completionTokens++;
      const piece = text.push(next.value);
      if (piece.text !== "") emit({ text: piece.text, tokens: piece.tokens });
      if (piece.stopped) return "stop";
    }
    const rest = text.flush();
    if (rest.text !== "") emit(rest);
    return finishReason;
  } finally {
    await tokens.return();
  }
}

/**
 * Turns generated tokens into text: holds back a split UTF-8 character until it is whole, and any
 * tail that could still become a stop sequence, which is cut off (with what follows) once it completes.
 */
class OutputText {
  private pending: Token[] = [];
  private recent: Token[];
  private held = "";
  private heldTokens = 0;

  constructor(
    private readonly model: LlamaModel,
    private readonly stops: string[],
    context: Token[],
  ) {
    this.recent = context.slice(-DETOKENIZER_CONTEXT);
  }

  push(token: Token): GenerationPiece & { stopped: boolean } {
    this.pending.push(token);
    this.heldTokens++;
    const decoded = this.model.detokenize(this.pending, false, this.recent);
    if (decoded.endsWith("\uFFFD") && this.pending.length < MAX_UTF8_TOKENS) {
      return { text: "", tokens: 0, stopped: false };
    }
    this.recent = [...this.recent, ...this.pending].slice(-DETOKENIZER_CONTEXT);
    this.pending = [];
    this.held += decoded;

    let cut = -1;
    for (const stop of this.stops) {
      const at = this.held.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) return { ...this.take(cut), stopped: true };
    return { ...this.take(this.held.length - this.stopPrefixLength()), stopped: false };
  }

  flush(): GenerationPiece {
    if (this.pending.length > 0) this.held += this.model.detokenize(this.pending, false, this.recent);
    this.pending = [];
    return this.take(this.held.length);
  }

  private take(length: number): GenerationPiece {
    if (length <= 0) return { text: "", tokens: 0 };
    const piece = { text: this.held.slice(0, length), tokens: this.heldTokens };
    this.held = this.held.slice(length);
    this.heldTokens = 0;
    return piece;
  }

  /** Length of the longest tail of the held text that is the start of some stop sequence. */
  private stopPrefixLength(): number {
    let longest = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, this.held.length); n > longest; n--) {
        if (this.held.endsWith(stop.slice(0, n))) {
          longest = n;
          break;
        }
      }
    }
    return longest;
  }
}

/**
 * Context sequences for one model, handed to one generation at a time. Contexts are created as
 * concurrent demand grows, up to capacity; beyond that generations wait in order.
 */
class SequencePool {
  private readonly free: LlamaContextSequence[] = [];
  private readonly waiting: Array<{
    resolve: (s: LlamaContextSequence) => void;
    reject: (e: Error) => void;
  }> = [];
  private readonly inUse = new Set<LlamaContextSequence>();
  private creating = 0;
  private closedBy?: EngineError;
  /** Tokens each sequence holds. */
  contextSize = 0;
  private drained?: () => void;

  private constructor(
    private readonly capacity: number,
    private readonly createSequence: () => Promise<LlamaContextSequence>,
    /** Frees one sequence and whatever context only it uses. */
    private readonly disposeSequence: (sequence: LlamaContextSequence) => Promise<void>,
    /** Frees everything left. */
    private readonly disposeAll: () => Promise<void>,
  ) {}

  /** Creates the first context now, so load() fails if no context fits in memory. */
  static async create(
    model: LlamaModel,
    options: { contextSize: number; capacity: number; threads: number | undefined; shared: boolean },
  ): Promise<SequencePool> {
    const { contextSize, capacity, threads, shared } = options;
    let pool: SequencePool;
    if (shared) {
      const context = await model.createContext({ contextSize, sequences: capacity, threads });
      pool = new SequencePool(
        capacity,
        async () => context.getSequence(),
        async (sequence) => sequence.dispose(),
        () => context.dispose(),
      );
    } else {
      const contexts = new Set<LlamaContext>();
      pool = new SequencePool(
        capacity,
        async () => {
          const context = await model.createContext({ contextSize, sequences: 1, threads });
          contexts.add(context);
          return context.getSequence();
        },
        async (sequence) => {
          contexts.delete(sequence.context);
          await sequence.context.dispose();
        },
        async () => {
          await Promise.all([...contexts].map((context) => context.dispose()));
          contexts.clear();
        },
      );
    }
    const first = await pool.createSequence();
    pool.contextSize = first.contextSize;
    pool.free.push(first);
    return pool;
  }

  /** Resolves undefined if the signal fires first; rejects with the reason if the pool closes. */
  async acquire(signal: AbortSignal): Promise<LlamaContextSequence | undefined> {
    if (this.closedBy) throw this.closedBy;
    if (signal.aborted) return undefined;
    let sequence = this.free.pop();
    if (!sequence && this.free.length + this.inUse.size + this.creating < this.capacity) {
      this.creating++;
      try {
        sequence = await this.createSequence();
      } finally {
        this.creating--;
      }
      if (this.closedBy || signal.aborted) {
        await this.disposeSequence(sequence);
        if (this.closedBy) throw this.closedBy;
        return undefined;
      }
    }
    if (!sequence) {
      sequence = await new Promise<LlamaContextSequence | undefined>((resolve, reject) => {
        const waiter = {
          resolve: (s: LlamaContextSequence) => {
            signal.removeEventListener("abort", onAbort);
            resolve(s);
          },
          reject: (e: Error) => {
            signal.removeEventListener("abort", onAbort);
            reject(e);
          },
        };
        const onAbort = () => {
          const at = this.waiting.indexOf(waiter);
          if (at >= 0) this.waiting.splice(at, 1);
          resolve(undefined);
        };
        this.waiting.push(waiter);
        signal.addEventListener("abort", onAbort, { once: true });
      });
      // Handed over already marked in use.
      return sequence;
    }
    this.inUse.add(sequence);
    return sequence;
  }

  /** Wipes the sequence's state and gives it to the next waiting generation. */
  async release(sequence: LlamaContextSequence): Promise<void> {
    let reusable = !this.closedBy;
    if (reusable) {
      try {
        await sequence.clearHistory();
      } catch {
        reusable = false;
      }
    }
    if (reusable && !this.closedBy) {
      const next = this.waiting.shift();
      if (next) {
        next.resolve(sequence);
        return;
      }
      this.free.push(sequence);
    } else if (!this.closedBy) {
      await this.disposeSequence(sequence).catch(() => {});
    }
    this.inUse.delete(sequence);
    if (this.inUse.size === 0) this.drained?.();
  }

  /** Fails waiting generations, waits for the running ones (already told to stop), then frees everything. */
  async close(reason: EngineError): Promise<void> {
    this.closedBy = reason;
    for (const waiter of this.waiting.splice(0)) waiter.reject(reason);
    if (this.inUse.size > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    this.free.length = 0;
    await this.disposeAll();
  }
}

/** A single-consumer queue of pieces that ends normally or with an error, after the queued pieces. */
class PieceStream implements AsyncIterableIterator<GenerationPiece> {
  onReturn?: () => void;
  private readonly queue: GenerationPiece[] = [];
  private ended = false;
  private error?: EngineError;
  private wake?: () => void;

  push(piece: GenerationPiece) {
    this.queue.push(piece);
    this.wake?.();
  }

  end(error?: EngineError) {
    this.ended = true;
    this.error = error;
    this.wake?.();
  }

  async next(): Promise<IteratorResult<GenerationPiece>> {
    for (;;) {
      const piece = this.queue.shift();
      if (piece) return { value: piece, done: false };
      if (this.error) {
        const error = this.error;
        this.error = undefined;
        throw error;
      }
      if (this.ended) return { value: undefined, done: true };
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  async return(): Promise<IteratorResult<GenerationPiece>> {
    if (!this.ended) this.onReturn?.();
    this.queue.length = 0;
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator]() {
    return this;
  }
}

function asEngineError(err: unknown): EngineError {
  if (err instanceof EngineError) return err;
  return new EngineError("ENGINE_ERROR", "llama.cpp failed during generation", true, { cause: err });
}
