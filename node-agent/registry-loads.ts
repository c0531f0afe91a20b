// Turns the hub's `load` and `unload` frames into engine loads: resolves a registry source to a
// file (an artifact through the cache, a path on this machine), refuses what no engine here can
// load, checks free memory, and remembers which artifact each loaded or loading model came from so
// the cache never evicts it.
import { stat } from "node:fs/promises";
import type { ModelId } from "../schema/model-id.ts";
import type { LoadFailureCode, LoadFrame, ModelInfo } from "../schema/protocol.ts";
import { type ArtifactRef, LOAD_MEMORY_HEADROOM, type ModelParameters } from "../schema/registry.ts";
import type { ArtifactCache, CacheReport } from "./artifacts/artifact-cache.ts";
import { ArtifactError } from "./artifacts/download.ts";
import { type Engine, EngineError } from "./engines/engine.ts";
import { availableMemoryBytes } from "./health.ts";
import { errorMessage, type Logger } from "./log.ts";

export type LoadOutcome =
  | { ok: true; model: ModelInfo }
  | { ok: false; code: LoadFailureCode; message: string };

export interface RegistryLoadsOptions {
  engine: Engine;
  /** Absent: this agent fetches no artifacts (and does not offer the `artifacts` capability). */
  cache?: ArtifactCache;
  /** http(s)://host[/prefix]: artifact paths are appended to it (see artifactUrl). */
  gatewayHttpUrl: string;
  token: string;
  /** Free memory in bytes now; a load needs 1.2 x the weights' size. Default availableMemoryBytes. */
  freeMemoryBytes?: () => number;
  log: Logger;
}

/**
 * The URL of an artifact: the gateway's HTTP base (the configured gateway URL with ws->http,
 * wss->https and /agents/connect dropped) followed by the ref's path, so a gateway behind a path
 * prefix keeps it: `wss://gw.example/orchard/agents/connect` + `/models/demo:2.0.0/artifact` ->
 * `https://gw.example/orchard/models/demo:2.0.0/artifact`.
 */
export function artifactUrl(gatewayHttpUrl: string, path: ArtifactRef["path"]): string {
  return `${gatewayHttpUrl.replace(/\/+$/, "")}${path}`;
}

/** http(s)://host[/prefix] for a ws(s)://host[/prefix]/agents/connect URL (http(s) passes through). */
export function gatewayHttpUrlOf(gatewayUrl: string): string {
  const url = new URL(gatewayUrl);
  const scheme = url.protocol === "wss:" || url.protocol === "https:" ? "https:" : "http:";
  const prefix = url.pathname.replace(/\/+$/, "").replace(/\/agents\/connect$/, "");
  return `${scheme}//${url.host}${prefix}`;
}

export class RegistryLoads {
  /** model -> sha256 of the artifact it is loaded (or loading) from. */
  private readonly artifactOf = new Map<ModelId, string>();
  /** Loads under way by model, so a repeated `load` shares the first one's outcome. */
  private readonly pending = new Map<ModelId, Promise<LoadOutcome>>();
  private readonly freeMemoryBytes: () => number;

  constructor(private readonly options: RegistryLoadsOptions) {
    this.freeMemoryBytes = options.freeMemoryBytes ?? (() => availableMemoryBytes());
  }

  get hasCache(): boolean {
    return this.options.cache !== undefined;
  }

  /** Artifacts of models loaded or loading: the cache must keep them. */
  inUse(): ReadonlySet<string> {
    return new Set(this.artifactOf.values());
  }

  cacheReport(): Promise<CacheReport> | undefined {
    return this.options.cache?.report();
  }

  load(model: ModelId, frame: LoadFrame): Promise<LoadOutcome> {
    let outcome = this.pending.get(model);
    if (!outcome) {
      outcome = this.run(model, frame).then(
        (info): LoadOutcome => ({ ok: true, model: info }),
        (err): LoadOutcome => failure(err),
      );
      outcome.finally(() => this.pending.delete(model));
      this.pending.set(model, outcome);
    }
    return outcome;
  }

  /** Waits for generations on the model to end, then frees it; its artifact becomes evictable. */
  async unload(model: ModelId): Promise<void> {
    await this.pending.get(model);
    await this.options.engine.unload(model, { whenIdle: true });
    const sha256 = this.artifactOf.get(model);
    this.artifactOf.delete(model);
    if (sha256) await this.options.cache?.touch(sha256);
  }

  private async run(model: ModelId, frame: LoadFrame): Promise<ModelInfo> {
    const { engine } = this.options;
    const source = frame.source;
    // The engines behind a composite engine (engines/composite.ts), or this one alone.
    const engines = (await engine.describe?.().catch(() => undefined))?.map((e) => e.name) ?? [engine.name];
    if (frame.parameters?.engines && !frame.parameters.engines.some((e) => engines.includes(e))) {
      throw new ArtifactError(
        "SOURCE_UNSUPPORTED",
        `the version asks for engines ${frame.parameters.engines.join(", ")}; this agent runs ${engines.join(", ")}`,
      );
    }
    switch (source?.kind) {
      case undefined:
      case "agent-local":
        return engine.load(model);
      case "path":
        return this.loadFile(model, source.path, frame.parameters);
      case "ollama":
        if (engines.includes("ollama")) {
          const parameters = frame.parameters ? { parameters: frame.parameters } : {};
          return engine.load(model, { path: source.tag, engine: "ollama", ...parameters });
        }
        throw new ArtifactError(
          "SOURCE_UNSUPPORTED",
          `source "ollama" (tag ${source.tag}) needs the Ollama engine; this agent runs ${engines.join(", ")} only`,
        );
      case "huggingface":
        throw new ArtifactError(
          "SOURCE_UNSUPPORTED",
          `source "huggingface" (${source.repo}) is not fetched by this agent; upload the file as an artifact instead`,
        );
      case "artifact":
        return this.loadArtifact(model, frame);
    }
  }

  private async loadArtifact(model: ModelId, frame: LoadFrame): Promise<ModelInfo> {
    const { cache, token, gatewayHttpUrl, log } = this.options;
    const ref = frame.artifact;
    if (!ref) {
      throw new ArtifactError(
        "ARTIFACT_DOWNLOAD_FAILED",
        "the load names an artifact source but no artifact",
      );
    }
    if (!cache) throw new ArtifactError("SOURCE_UNSUPPORTED", "this agent has no artifact cache");
    this.checkMemory(model, ref.size);
    const previous = this.artifactOf.get(model);
    // In use from now on: a concurrent download must not evict it while this one is running.
    this.artifactOf.set(model, ref.sha256);
    try {
      const path = await cache.ensure(ref, model, { url: artifactUrl(gatewayHttpUrl, ref.path), token });
      if (ref.format !== "gguf") {
        throw new ArtifactError(
          "SOURCE_UNSUPPORTED",
          `artifact format "${ref.format}" needs the MLX engine; this agent runs ${this.options.engine.name} only (the verified file stays cached)`,
        );
      }
      return await this.loadFile(model, path, frame.parameters);
    } catch (err) {
      if (previous) this.artifactOf.set(model, previous);
      else this.artifactOf.delete(model);
      log.debug("artifact load failed", { model, sha256: ref.sha256, error: errorMessage(err) });
      throw err;
    }
  }

  private async loadFile(model: ModelId, path: string, parameters: ModelParameters | undefined) {
    const info = await stat(path).catch(() => undefined);
    if (!info) throw new ArtifactError("MODEL_LOAD_FAILED", `no file at ${path} on this agent`);
    if (info.isDirectory()) {
      throw new ArtifactError(
        "SOURCE_UNSUPPORTED",
        `${path} is a folder (an MLX model?); ${this.options.engine.name} loads one GGUF file`,
      );
    }
    this.checkMemory(model, info.size);
    return this.options.engine.load(model, { path, ...(parameters ? { parameters } : {}) });
  }

  private checkMemory(model: ModelId, weightBytes: number): void {
    const free = this.freeMemoryBytes();
    const needed = Math.ceil(weightBytes * LOAD_MEMORY_HEADROOM);
    if (free < needed) {
      throw new ArtifactError(
        "INSUFFICIENT_MEMORY",
        `loading "${model}" needs about ${needed} bytes free (1.2 x ${weightBytes}); ${free} are free`,
      );
    }
  }
}

function failure(err: unknown): LoadOutcome {
  if (err instanceof ArtifactError) return { ok: false, code: err.code, message: err.message };
  if (err instanceof EngineError && err.code === "OUT_OF_MEMORY") {
    return { ok: false, code: "INSUFFICIENT_MEMORY", message: err.message.slice(0, 2000) };
  }
  // Every engine failure to load (EngineError or not) is MODEL_LOAD_FAILED on the wire.
  return { ok: false, code: "MODEL_LOAD_FAILED", message: errorMessage(err).slice(0, 2000) };
}
