// Which model answers a request: the one named, the pool's default when none is, or the first
// servable MODEL_FALLBACKS substitute when no agent can serve the one named. Pure: the dispatcher
// passes in what the pool looks like now. The registry (versions, deployments, A/B arms) extends
// this module: a name resolves to a version here, and nowhere else.
import { isModelId, type ModelId } from "../../schema/model-id.ts";
import type { ModelAvailability } from "./scheduling.ts";

export interface ModelResolutionConfig {
  /** DEFAULT_MODEL; undefined: the first model (by name) any usable agent serves. */
  defaultModel: string | undefined;
  modelFallbacks: ReadonlyMap<string, readonly string[]>;
}

export interface PoolView {
  /** Whether the model can be served now (busy agents count as serving: the request queues). */
  availability(model: ModelId): ModelAvailability;
  /** Models some usable (ready, not draining, breaker not open) agent serves, sorted. */
  servedModels(): ModelId[];
}

export type Resolution =
  | { ok: true; model: ModelId; requested: ModelId; fallback: boolean }
  | { ok: false; code: "MODEL_NOT_FOUND" | "NO_AGENT_AVAILABLE"; message: string; requested: string | null };

export function resolveModel(
  requested: string | undefined,
  config: ModelResolutionConfig,
  pool: PoolView,
): Resolution {
  const name = requested ?? config.defaultModel ?? pool.servedModels()[0];
  if (name === undefined) {
    return { ok: false, code: "NO_AGENT_AVAILABLE", message: "no agent serves any model", requested: null };
  }
  if (!isModelId(name)) {
    // A valid model name that reads as no model id ("demo:1:2"): nothing can serve it.
    return {
      ok: false,
      code: "MODEL_NOT_FOUND",
      message: `model "${name}" is not served by this gateway`,
      requested: name,
    };
  }
  const availability = pool.availability(name);
  if (availability === "servable") return { ok: true, model: name, requested: name, fallback: false };
  for (const fallback of config.modelFallbacks.get(name) ?? []) {
    if (isModelId(fallback) && pool.availability(fallback) === "servable") {
      return { ok: true, model: fallback, requested: name, fallback: true };
    }
  }
  if (availability === "unknown") {
    return {
      ok: false,
      code: "MODEL_NOT_FOUND",
      message: `model "${name}" is not served by this gateway`,
      requested: name,
    };
  }
  return {
    ok: false,
    code: "NO_AGENT_AVAILABLE",
    message: `no connected agent can serve "${name}"`,
    requested: name,
  };
}
