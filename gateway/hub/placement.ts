// The placement reconciler: a pure function of what the registry wants loaded in this pool (active
// and preparing versions with their placement; previous versions kept warm) and what the agents
// report (loaded models, free memory, cached artifacts, pending loads, failures in backoff), returning
// the load/unload actions that close the gap. Running it again on the same observation returns
// nothing new: pending loads are part of the observation. The hub runs it on alarms and after
// changes, never per request.
import { LOAD_MEMORY_HEADROOM, type RoutedVersion, type RoutingTable } from "../../schema/registry.ts";

/** Backoff after a failed load of one version on one agent: 5 s doubling to 5 min. */
export const LOAD_RETRY_BASE_MS = 5_000;
export const LOAD_RETRY_MAX_MS = 5 * 60_000;
/** A load the agent never answered is given up after this long (then retried like a failure). */
export const LOAD_TIMEOUT_MS = 10 * 60_000;

export interface ObservedAgent {
  id: string;
  /** Ready, not draining. */
  usable: boolean;
  /** Negotiated `artifacts`: can load registry sources. */
  artifacts: boolean;
  /** Served ids the agent lists as loaded. */
  loaded: ReadonlySet<string>;
  /** Served ids with requests in flight on this agent. */
  busy: ReadonlySet<string>;
  memoryFreeBytes: number | null;
  /** sha256 of artifacts in its cache. */
  cached: ReadonlySet<string>;
}

export interface LoadFailure {
  count: number;
  retryAt: number;
  code: string;
  message: string;
  at: number;
}

export interface PlacementObservation {
  pool: string;
  now: number;
  agents: readonly ObservedAgent[];
  /** `agentId␀servedAs` -> when the load was sent. */
  pending: ReadonlyMap<string, number>;
  failures: ReadonlyMap<string, LoadFailure>;
}

export type PlacementAction =
  | { kind: "load"; agentId: string; modelId: string; version: RoutedVersion; reason: string }
  | { kind: "unload"; agentId: string; servedAs: string; reason: string };

export function loadKey(agentId: string, servedAs: string): string {
  return `${agentId}\u0000${servedAs}`;
}

export function retryDelayMs(failures: number): number {
  return Math.min(LOAD_RETRY_BASE_MS * 2 ** Math.max(0, failures - 1), LOAD_RETRY_MAX_MS);
}

interface Wanted {
  modelId: string;
  version: RoutedVersion;
  replicas: number;
}

/** Versions the registry manages (not agent-local) that this pool should hold, and those kept warm. */
export function desiredPlacement(table: RoutingTable, pool: string): { wanted: Wanted[]; warm: Set<string> } {
  const wanted: Wanted[] = [];
  const warm = new Set<string>();
  const inPool = (pools: readonly string[] | undefined) => pools === undefined || pools.includes(pool);
  for (const [name, model] of Object.entries(table.models)) {
    for (const [version, routed] of Object.entries(model.versions)) {
      if (routed.source.kind === "agent-local" || routed.status === "archived") continue;
      const modelId = `${name}:${version}`;
      const preparing = table.preparing[modelId];
      const placement = preparing ?? (model.active === version ? routed.placement : null);
      if (placement && placement.replicas > 0 && inPool(placement.pools)) {
        wanted.push({ modelId, version: routed, replicas: placement.replicas });
      } else if (model.previous === version) {
        warm.add(routed.servedAs);
      }
    }
  }
  return { wanted, warm };
}

export function planPlacement(table: RoutingTable, observed: PlacementObservation): PlacementAction[] {
  const { wanted, warm } = desiredPlacement(table, observed.pool);
  const actions: PlacementAction[] = [];
  const isPending = (agentId: string, servedAs: string) => {
    const sent = observed.pending.get(loadKey(agentId, servedAs));
    return sent !== undefined && observed.now - sent < LOAD_TIMEOUT_MS;
  };
  for (const want of wanted) {
    const servedAs = want.version.servedAs;
    const holders = observed.agents.filter(
      (a) => a.usable && (a.loaded.has(servedAs) || isPending(a.id, servedAs)),
    );
    let missing = want.replicas - holders.length;
    if (missing <= 0) continue;
    const size = want.version.size;
    const candidates = observed.agents
      .filter((a) => a.usable && a.artifacts && !a.loaded.has(servedAs) && !isPending(a.id, servedAs))
      .filter((a) => {
        const failure = observed.failures.get(loadKey(a.id, servedAs));
        return failure === undefined || failure.retryAt <= observed.now;
      })
      .filter(
        (a) =>
          size === null || a.memoryFreeBytes === null || a.memoryFreeBytes >= size * LOAD_MEMORY_HEADROOM,
      )
      .sort((a, b) => {
        const sha = want.version.sha256;
        const cachedA = sha !== null && a.cached.has(sha) ? 1 : 0;
        const cachedB = sha !== null && b.cached.has(sha) ? 1 : 0;
        if (cachedA !== cachedB) return cachedB - cachedA;
        return (b.memoryFreeBytes ?? 0) - (a.memoryFreeBytes ?? 0) || (a.id < b.id ? -1 : 1);
      });
    for (const agent of candidates) {
      if (missing <= 0) break;
      actions.push({
        kind: "load",
        agentId: agent.id,
        modelId: want.modelId,
        version: want.version,
        reason: `${want.modelId} wants ${want.replicas} replica(s), has ${want.replicas - missing}`,
      });
      missing -= 1;
    }
  }
  // Registry-managed versions nobody wants any more: unloaded where idle, to free memory.
  const managed = new Set<string>();
  for (const model of Object.values(table.models)) {
    for (const v of Object.values(model.versions))
      if (v.source.kind !== "agent-local") managed.add(v.servedAs);
  }
  const keep = new Set([...wanted.map((w) => w.version.servedAs), ...warm]);
  for (const agent of observed.agents) {
    for (const servedAs of agent.loaded) {
      if (!managed.has(servedAs) || keep.has(servedAs) || agent.busy.has(servedAs)) continue;
      actions.push({
        kind: "unload",
        agentId: agent.id,
        servedAs,
        reason: "neither active, previous nor preparing",
      });
    }
  }
  return actions;
}
