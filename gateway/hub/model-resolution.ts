// Which model answers a request: the one named, the pool's default when none is, or the first
// servable MODEL_FALLBACKS substitute when no agent can serve the one named. Pure: the dispatcher
// passes in what the pool looks like now. The registry's routing table (routing-table.ts) turns a
// name, name:version or name@alias into the id agents serve first; a bare name the registry has no
// active version for resolves here to the name itself or else the highest version agents serve.
import { isModelId, type ModelId, parseModelId } from "../../schema/model-id.ts";
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
  const versioned = highestServedVersion(name, pool.servedModels());
  if (versioned !== undefined) {
    // The same model, only announced with versions: not a fallback, so no fallback header.
    return { ok: true, model: versioned, requested: versioned, fallback: false };
  }
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

/** For a bare `name`, the highest `name:version` among `served`; undefined for a versioned id. */
export function highestServedVersion(name: ModelId, served: readonly ModelId[]): ModelId | undefined {
  if (parseModelId(name).version !== null) return undefined;
  let best: { id: ModelId; version: string } | undefined;
  for (const id of served) {
    const { name: n, version } = parseModelId(id);
    if (n !== name || version === null) continue;
    if (best === undefined || compareModelVersions(version, best.version) > 0) best = { id, version };
  }
  return best?.id;
}

/**
 * Orders model-id versions (model-id.ts: dotted numbers, optional pre-release and build): numeric
 * parts first (a missing part is 0), then a release above its pre-releases, then pre-release
 * identifiers numerically where both are numbers. Build metadata is ignored, as in semver.
 */
export function compareModelVersions(a: string, b: string): number {
  const [coreA = "", preA] = a.split("+")[0]?.split(/-(.*)/s) ?? [];
  const [coreB = "", preB] = b.split("+")[0]?.split(/-(.*)/s) ?? [];
  const x = coreA.split(".").map(Number);
  const y = coreB.split(".").map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  if (preA === undefined || preB === undefined) return preA === preB ? 0 : preA === undefined ? 1 : -1;
  const ia = preA.split(".");
  const ib = preB.split(".");
  for (let i = 0; i < Math.min(ia.length, ib.length); i++) {
    const [p, q] = [ia[i] as string, ib[i] as string];
    const [np, nq] = [/^\d+$/.test(p), /^\d+$/.test(q)];
    const d = np && nq ? Number(p) - Number(q) : np !== nq ? (np ? -1 : 1) : p < q ? -1 : p > q ? 1 : 0;
    if (d !== 0) return d;
  }
  return ia.length - ib.length;
}
