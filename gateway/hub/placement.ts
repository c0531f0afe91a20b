// The placement reconciler: a pure function of what the registry wants loaded in this pool (active
// and preparing versions with their placement; previous versions kept warm) and what the agents
// report (loaded models, free memory, cached artifacts, pending loads, failures in backoff), returning
// the load/unload actions that close the gap. Running it again on the same observation returns
// nothing new: pending loads are part of the observation. The hub runs it on alarms and after
// changes, never per request.
import { LOAD_MEMORY_HEADROOM, type RoutedVersion, type RoutingTable } from "../../schema/registry.ts";
import { rollingDrained } from "./routing-table.ts";

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

export interface Wanted {
  modelId: string;
  version: RoutedVersion;
  replicas: number;
  /**
   * Rolling deployments: the agents that must hold it, each of them (replicas = their count);
   * undefined: any `replicas` agents.
   */
  agents?: readonly string[];
}

export interface DesiredPlacement {
  wanted: Wanted[];
  /** Served ids kept loaded where they are (previous versions, for an instant rollback). */
  warm: Set<string>;
  /**
   * Rolling deployments: per served id of an arm a, the agents moved to arm b. They neither count
   * nor are asked for it, and unload it once idle.
   */
  drained: Map<string, Set<string>>;
}

/**
 * Versions the registry manages (not agent-local) that this pool should hold, those kept warm, and
 * those rolling deployments move off some agents. A rollout also wants its arm b loaded: with its
 * own placement (else the version's, else 1 replica), or, rolling, on exactly the agents listed
 * "b" or "both"; `warmPrevious: false` lets the previous version go.
 */
export function desiredPlacement(table: RoutingTable, pool: string): DesiredPlacement {
  const anywhere = new Map<string, Wanted>();
  const pinned: Wanted[] = [];
  const warm = new Set<string>();
  const drained = rollingDrained(table);
  const inPool = (pools: readonly string[] | undefined) => pools === undefined || pools.includes(pool);
  const want = (modelId: string, version: RoutedVersion, replicas: number) => {
    const held = anywhere.get(version.servedAs);
    if (held === undefined) anywhere.set(version.servedAs, { modelId, version, replicas });
    else held.replicas = Math.max(held.replicas, replicas);
  };
  for (const [name, model] of Object.entries(table.models)) {
    for (const [version, routed] of Object.entries(model.versions)) {
      if (!managed(routed)) continue;
      const modelId = `${name}:${version}`;
      const preparing = table.preparing[modelId];
      const placement = preparing ?? (model.active === version ? routed.placement : null);
      if (placement && placement.replicas > 0 && inPool(placement.pools)) {
        want(modelId, routed, placement.replicas);
      } else if (model.previous === version && model.warmPrevious !== false) {
        warm.add(routed.servedAs);
      }
    }
    // A table stored before rollouts existed has no `rollout` field at all.
    const rollout = model.rollout;
    if (!rollout) continue;
    const b = table.models[rollout.arms.b.name]?.versions[rollout.arms.b.version];
    const bId = `${rollout.arms.b.name}:${rollout.arms.b.version}`;
    if (rollout.agents === undefined) {
      const placement = rollout.placement ?? b?.placement ?? { replicas: 1 };
      if (b !== undefined && managed(b) && placement.replicas > 0 && inPool(placement.pools)) {
        want(bId, b, placement.replicas);
      }
      continue;
    }
    const onB = Object.entries(rollout.agents)
      .filter(([, arm]) => arm !== "a")
      .map(([agentId]) => agentId)
      .sort();
    if (b !== undefined && managed(b) && onB.length > 0) {
      pinned.push({ modelId: bId, version: b, replicas: onB.length, agents: onB });
    }
  }
  // The agents a rolling deployment moved to arm b no longer count towards arm a's replicas.
  for (const [servedAs, agents] of drained) {
    const held = anywhere.get(servedAs);
    if (held !== undefined) held.replicas = Math.max(0, held.replicas - agents.size);
  }
  return { wanted: [...anywhere.values(), ...pinned], warm, drained };
}

const managed = (version: RoutedVersion) =>
  version.source.kind !== "agent-local" && version.status !== "archived";

/**
 * Whether some wanted version has fewer agents holding it loaded than it asks for (on the agents
 * it names, rolling), while some agent could load it: the shell looks again every few seconds then.
 */
export function placementShort(desired: DesiredPlacement, agents: readonly ObservedAgent[]): boolean {
  if (!agents.some((a) => a.usable && a.artifacts)) return false;
  return desired.wanted.some((w) => holders(w, desired, agents).length < w.replicas);
}

/** Usable agents that hold `want` loaded (or, with `pending`, are loading it) and count for it. */
function holders(
  want: Wanted,
  desired: DesiredPlacement,
  agents: readonly ObservedAgent[],
  pending: (agentId: string, servedAs: string) => boolean = () => false,
): ObservedAgent[] {
  const servedAs = want.version.servedAs;
  const moved = desired.drained.get(servedAs);
  return agents.filter(
    (a) =>
      a.usable &&
      (a.loaded.has(servedAs) || pending(a.id, servedAs)) &&
      !(moved?.has(a.id) ?? false) &&
      (want.agents === undefined || want.agents.includes(a.id)),
  );
}

export function planPlacement(table: RoutingTable, observed: PlacementObservation): PlacementAction[] {
  const desired = desiredPlacement(table, observed.pool);
  const { wanted, warm, drained } = desired;
  const actions: PlacementAction[] = [];
  const isPending = (agentId: string, servedAs: string) => {
    const sent = observed.pending.get(loadKey(agentId, servedAs));
    return sent !== undefined && observed.now - sent < LOAD_TIMEOUT_MS;
  };
  for (const want of wanted) {
    const servedAs = want.version.servedAs;
    let missing = want.replicas - holders(want, desired, observed.agents, isPending).length;
    if (missing <= 0) continue;
    const size = want.version.size;
    const moved = drained.get(servedAs);
    const candidates = observed.agents
      .filter((a) => a.usable && a.artifacts && !a.loaded.has(servedAs) && !isPending(a.id, servedAs))
      .filter(
        (a) => !(moved?.has(a.id) ?? false) && (want.agents === undefined || want.agents.includes(a.id)),
      )
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
        reason:
          want.agents === undefined
            ? `${want.modelId} wants ${want.replicas} replica(s), has ${want.replicas - missing}`
            : `rolling: ${agent.id} moves to ${want.modelId}`,
      });
      missing -= 1;
    }
  }
  // Registry-managed versions nobody wants any more: unloaded where idle, to free memory. So is
  // arm a on an agent a rolling deployment moved to arm b.
  const managedIds = new Set<string>();
  for (const model of Object.values(table.models)) {
    for (const v of Object.values(model.versions))
      if (v.source.kind !== "agent-local") managedIds.add(v.servedAs);
  }
  const keep = new Set([...wanted.map((w) => w.version.servedAs), ...warm]);
  for (const agent of observed.agents) {
    for (const servedAs of agent.loaded) {
      if (!managedIds.has(servedAs) || agent.busy.has(servedAs)) continue;
      const moved = drained.get(servedAs)?.has(agent.id) ?? false;
      if (keep.has(servedAs) && !moved) continue;
      actions.push({
        kind: "unload",
        agentId: agent.id,
        servedAs,
        reason: moved
          ? "rolling: the agent moved to the new version"
          : "neither active, previous nor preparing",
      });
    }
  }
  return actions;
}
