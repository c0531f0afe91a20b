// The Ollama engine: models a local Ollama server serves. Generations go over node:http
// (ndjson-client.ts: a quarter of the `ollama` client's CPU per request), the rest through the
// `ollama` client. It offers
// the server's tags under their own names (discovery) and models configured as NAME=ollama:TAG,
// follows the server going away and coming back (server-watch.ts), streams each generation
// (stream.ts) and maps Ollama's failures to the agent's codes (errors.ts). Loading pins a model in
// the server's memory (keep_alive -1) until it is unloaded (keep_alive 0).
import { Ollama } from "ollama";
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
import { checkRequest } from "../request.ts";
import { asOllamaError } from "./errors.ts";
import { ollamaAgents } from "./ndjson-client.ts";
import { canonicalTag, OllamaServerWatch, type OllamaTag } from "./server-watch.ts";
import { streamOllama } from "./stream.ts";

/** The specification's default for OLLAMA_BASE_URL. */
export const OLLAMA_DEFAULT_URL = "http://localhost:11434";

export interface OllamaModelConfig {
  /** The model id the agent serves it as. */
  name: string;
  /** The Ollama tag (`llama3.2:3b`). */
  tag: string;
}

export interface OllamaEngineOptions {
  /** The server, e.g. http://localhost:11434. Default OLLAMA_DEFAULT_URL. */
  baseUrl?: string;
  /** Models served under a name of the agent's choosing. */
  models?: OllamaModelConfig[];
  /** Also offer every tag the server has, under the tag itself. Default true. */
  discover?: boolean;
  /** How often the server is looked at. Default 5000. */
  refreshMs?: number;
  /** How long one look may take before the server counts as gone. Default 2000. */
  timeoutMs?: number;
  /** keep_alive for generations of models not pinned by load(); default: the server's own. */
  keepAlive?: string | number;
  log?: Logger;
}

interface Served {
  name: ModelId;
  tag: string;
  /** Loaded with a LoadSpec (a registry version): forgotten once unloaded. */
  runtime: boolean;
  /** num_ctx from the registry's contextLength: on every request, or Ollama reloads the model. */
  numCtx?: number;
}

export class OllamaEngine implements Engine {
  readonly name = "ollama";
  readonly baseUrl: string;
  private readonly configs = new Map<ModelId, Served>();
  /** Models load() pinned in the server's memory: their requests keep them there. */
  private readonly pinned = new Set<ModelId>();
  private readonly unloading = new Set<ModelId>();
  /** Generations in flight per model; unload stops them, unload whenIdle waits for them. */
  private readonly inFlight = new Map<ModelId, Set<AbortController>>();
  private readonly idle = new Map<ModelId, Set<() => void>>();
  private readonly watch: OllamaServerWatch;
  private readonly discover: boolean;
  private readonly keepAlive: string | number | undefined;
  /** Keep-alive connections to the server for generations. */
  private readonly agents = ollamaAgents();
  private closed = false;

  constructor(options: OllamaEngineOptions = {}) {
    this.baseUrl = (options.baseUrl ?? OLLAMA_DEFAULT_URL).replace(/\/+$/, "");
    for (const { name, tag } of options.models ?? []) {
      if (!isModelId(name)) throw new Error(`invalid model name "${name}"`);
      if (this.configs.has(name)) throw new Error(`model "${name}" is configured twice`);
      this.configs.set(name, { name, tag, runtime: false });
    }
    this.discover = options.discover ?? true;
    this.keepAlive = options.keepAlive;
    this.watch = new OllamaServerWatch({
      baseUrl: this.baseUrl,
      refreshMs: options.refreshMs ?? 5_000,
      timeoutMs: options.timeoutMs ?? 2_000,
      log: options.log ?? silentLogger,
    });
  }

  /** Looks at the server now and then every refreshMs until close(). */
  start(): Promise<void> {
    return this.watch.start();
  }

  /** Looks at the server now; listModels answers from the latest look. */
  refresh(): Promise<void> {
    return this.watch.refresh();
  }

  get serverUp(): boolean {
    return this.watch.up;
  }

  async listModels(): Promise<ModelInfo[]> {
    return this.offered().map(([name, tag]) => this.info(name, tag));
  }

  async describe(): Promise<EngineInfo[]> {
    const quantizations = new Set<string>();
    for (const [, tag] of this.offered()) if (tag.quantization) quantizations.add(tag.quantization);
    return [
      {
        name: this.name,
        // Ollama enforces a JSON schema given as `format` (GenerationRequest.format is passed on).
        capabilities: ["format"],
        quantizations: [...quantizations].sort().slice(0, 64),
      },
    ];
  }

  async load(model: ModelId, spec?: LoadSpec): Promise<ModelInfo> {
    if (this.closed) throw new EngineError("MODEL_LOAD_FAILED", "the Ollama engine is closed", true);
    const served = spec ? this.runtimeModel(model, spec) : this.resolve(model);
    const fresh = spec !== undefined && this.configs.get(served.name) !== served;
    if (fresh) this.configs.set(served.name, served);
    try {
      // A request without a prompt loads the model (done_reason "load"); keep_alive -1 keeps it.
      await this.client().generate({
        model: served.tag,
        prompt: "",
        stream: false,
        keep_alive: -1,
        ...(served.numCtx === undefined ? {} : { options: { num_ctx: served.numCtx } }),
      });
    } catch (err) {
      if (fresh) this.configs.delete(served.name);
      throw asOllamaError(err, { baseUrl: this.baseUrl, tag: served.tag });
    }
    this.pinned.add(served.name);
    await this.watch.refresh();
    const tag = this.watch.tag(served.tag);
    return tag ? this.info(served.name, tag) : { name: served.name, engine: this.name, loaded: true };
  }

  async unload(model: ModelId, options: UnloadOptions = {}): Promise<void> {
    const served = this.resolve(model);
    const { name } = served;
    if (options.whenIdle) {
      this.unloading.add(name);
      try {
        await this.whenIdle(name);
      } finally {
        this.unloading.delete(name);
      }
    }
    const reason = new EngineError("ENGINE_ERROR", `model "${name}" was unloaded`, true);
    for (const halt of this.inFlight.get(name) ?? []) halt.abort(reason);
    try {
      await this.client().generate({ model: served.tag, prompt: "", stream: false, keep_alive: 0 });
    } catch (err) {
      const mapped = asOllamaError(err, { baseUrl: this.baseUrl, tag: served.tag });
      // Not there, or no server: nothing of it is in memory, which is what unloading asks for.
      if (mapped.code !== "MODEL_NOT_FOUND" && mapped.code !== "ENGINE_UNAVAILABLE") throw mapped;
    }
    this.pinned.delete(name);
    if (served.runtime) this.configs.delete(name);
    void this.watch.refresh();
  }

  generate(request: GenerationRequest, signal: AbortSignal): Generation {
    return streamGeneration(
      (emit, halt) => this.run(request, signal, halt, emit),
      (err) =>
        err instanceof EngineError
          ? err
          : new EngineError("ENGINE_ERROR", "the Ollama engine failed", true, { cause: err }),
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watch.stop();
    const reason = new EngineError("ENGINE_ERROR", "the Ollama engine was closed", true);
    for (const halts of this.inFlight.values()) for (const halt of halts) halt.abort(reason);
    // Idle keep-alive connections would hold the process open.
    this.agents.http.destroy();
    this.agents.https.destroy();
  }

  private async run(
    request: GenerationRequest,
    signal: AbortSignal,
    halt: AbortController,
    emit: (piece: GenerationPiece) => void,
  ): Promise<GenerationResult> {
    if (this.closed) throw new EngineError("ENGINE_ERROR", "the Ollama engine is closed", true);
    const params = checkRequest(request);
    // Ollama takes a request without a prompt as "load the model" and generates nothing.
    if (request.prompt === "") throw new EngineError("INVALID_REQUEST", "the prompt is empty");
    const served = this.resolve(request.model);
    if (this.unloading.has(served.name)) {
      throw new EngineError("MODEL_NOT_FOUND", `model "${served.name}" is being unloaded`, true);
    }
    // Ends the HTTP request whenever this generation ends, early or not: Ollama stops generating
    // when its client goes away.
    const ended = new AbortController();
    const stopped = AbortSignal.any([signal, halt.signal, ended.signal]);
    const halts = this.inFlight.get(served.name) ?? new Set();
    this.inFlight.set(served.name, halts);
    halts.add(halt);
    try {
      const result = await streamOllama(
        {
          target: { baseUrl: this.baseUrl, agents: this.agents },
          tag: served.tag,
          request,
          params,
          modelOptions: served.numCtx === undefined ? {} : { num_ctx: served.numCtx },
          keepAlive: this.pinned.has(served.name) ? -1 : this.keepAlive,
        },
        stopped,
        emit,
      );
      if (halt.signal.reason instanceof EngineError) throw halt.signal.reason;
      return result;
    } catch (err) {
      if (halt.signal.reason instanceof EngineError) throw halt.signal.reason;
      const mapped = asOllamaError(err, { baseUrl: this.baseUrl, tag: served.tag });
      // The server may be gone: look now, so its models leave the next health report.
      if (mapped.code === "ENGINE_UNAVAILABLE") void this.watch.refresh();
      throw mapped;
    } finally {
      ended.abort();
      halts.delete(halt);
      for (const wake of this.idle.get(served.name) ?? []) wake();
    }
  }

  /** The `ollama` client, for loads and unloads (generations go through ndjson-client.ts). */
  private client(): Ollama {
    return new Ollama({ host: this.baseUrl });
  }

  /** The models offered now, each with its tag: configured ones first, then the server's own. */
  private offered(): [ModelId, OllamaTag][] {
    if (!this.watch.up) return [];
    const out = new Map<ModelId, OllamaTag>();
    for (const served of this.configs.values()) {
      const tag = this.watch.tag(served.tag);
      if (tag) out.set(served.name, tag);
    }
    if (this.discover) {
      for (const tag of this.watch.tags.values()) {
        if (isModelId(tag.name) && !out.has(tag.name)) out.set(tag.name, tag);
      }
    }
    return [...out];
  }

  /**
   * The tag a request's model names: a configured one, or (with discovery) a tag of the server's.
   * While the server does not answer, a tag is tried as named (and fails as unavailable).
   */
  private resolve(model: string): Served {
    const configured = isModelId(model) ? this.configs.get(model) : undefined;
    if (configured) return configured;
    if (this.discover && isModelId(model) && (!this.watch.up || this.watch.tag(model))) {
      return { name: model, tag: model, runtime: false };
    }
    throw new EngineError("MODEL_NOT_FOUND", `no model named "${model}" on this agent's Ollama server`);
  }

  private runtimeModel(model: ModelId, spec: LoadSpec): Served {
    if (spec.engine !== undefined && spec.engine !== this.name) {
      throw new EngineError("MODEL_LOAD_FAILED", `the Ollama engine does not load ${spec.engine} models`);
    }
    const tag = spec.path.trim();
    if (tag === "" || /\s/.test(tag))
      throw new EngineError("MODEL_LOAD_FAILED", `"${spec.path}" is no Ollama tag`);
    if (this.unloading.has(model)) {
      throw new EngineError(
        "MODEL_LOAD_FAILED",
        `model "${model}" is being unloaded; load it again afterwards`,
        true,
      );
    }
    const known = this.configs.get(model);
    const numCtx = spec.parameters?.contextLength;
    if (known && canonicalTag(known.tag) === canonicalTag(tag) && known.numCtx === numCtx) return known;
    if (known && !known.runtime) {
      throw new EngineError(
        "MODEL_LOAD_FAILED",
        `model "${model}" is configured on this agent as Ollama's ${known.tag}; it is not replaced by ${tag}`,
      );
    }
    if (known && this.pinned.has(model)) {
      throw new EngineError(
        "MODEL_LOAD_FAILED",
        `model "${model}" is already loaded from ${known.tag}; unload it before loading ${tag}`,
      );
    }
    return { name: model, tag, runtime: true, ...(numCtx === undefined ? {} : { numCtx }) };
  }

  private whenIdle(name: ModelId): Promise<void> {
    return new Promise((resolve) => {
      const waiters = this.idle.get(name) ?? new Set();
      this.idle.set(name, waiters);
      const check = () => {
        if ((this.inFlight.get(name)?.size ?? 0) > 0) return;
        waiters.delete(check);
        resolve();
      };
      waiters.add(check);
      check();
    });
  }

  private info(name: ModelId, tag: OllamaTag): ModelInfo {
    return {
      name,
      engine: this.name,
      loaded: tag.loaded,
      ...(tag.contextLength === undefined ? {} : { contextLength: tag.contextLength }),
      ...(tag.loadedBytes === undefined ? {} : { footprintBytes: tag.loadedBytes }),
    };
  }
}
