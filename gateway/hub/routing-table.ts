// The registry's routing table as a hub holds it: name -> active version, name:version, name@alias,
// each to the model id agents serve it under. Pushed by the Worker on every registry change,
// persisted in the hub's storage, reloaded from D1 when missing or stale; never read from D1 on the
// request path. `routeModel` is pure: the dispatcher calls it once per request, before
// model-resolution picks among what agents serve. A rollout on the model (a canary, an A/B test)
// splits requests for its bare name between two arms by one hash of the end user.
import { isModelVersion, parseModelId } from "../../schema/model-id.ts";
import {
  EMPTY_ROUTING_TABLE,
  type RoutedModel,
  type RoutedVersion,
  type RoutingTable,
} from "../../schema/registry.ts";
import { type Arm, assignArm, type RolloutRoute } from "../../schema/rollouts.ts";

/** Which rollout arm a request was assigned to, and how to serve the other one instead. */
export interface RolloutAssignment {
  /** The rollout's id (deployment or A/B test). */
  id: string;
  phase: number;
  arm: Arm;
  /** X-Orchard-Variant for this arm. */
  label: string;
  /** The other arm: served instead when no usable agent serves this one (the request then goes uncounted). */
  other: { arm: Arm; label: string; servedAs: string };
}

export type RegistryRoute =
  /** The registry does not know this model: today's behaviour (what agents announce) decides. */
  | { kind: "unregistered" }
  | {
      kind: "routed";
      /**
       * The id agents serve it under, what generate frames name and responses name: `name:version`,
       * or an agent's bare local model's name (it has no version of its own; see servedAsOf).
       */
      servedAs: string;
      deprecated: boolean;
      /** Set when a rollout assigned the request to an arm (requests by bare name only). */
      rollout: RolloutAssignment | null;
    }
  | { kind: "refused"; code: "MODEL_ARCHIVED" | "MODEL_NOT_FOUND"; message: string };

const ALIAS_SEPARATOR = "@";

/**
 * How the table routes a caller's `model` text (a name, `name:version`, or `name@alias`) for the
 * end user `subject`. Only a bare name is split by a rollout: a pinned version or an alias is what
 * the caller chose.
 */
export function routeModel(table: RoutingTable, requested: string, subject: string): RegistryRoute {
  const at = requested.lastIndexOf(ALIAS_SEPARATOR);
  if (at > 0) {
    const name = requested.slice(0, at);
    const alias = requested.slice(at + 1);
    const model = table.models[name];
    if (model === undefined) return { kind: "unregistered" };
    const version = model.aliases[alias];
    if (version === undefined) {
      return { kind: "refused", code: "MODEL_NOT_FOUND", message: `model "${name}" has no alias "${alias}"` };
    }
    return routeVersion(model.versions[version]);
  }
  let name = requested;
  let version: string | null = null;
  try {
    ({ name, version } = parseModelId(requested));
  } catch {
    return { kind: "unregistered" };
  }
  const model = table.models[name];
  if (model === undefined) {
    // A bare agent-local model announced as `name` and registered as `name:0.0.0-local`.
    return { kind: "unregistered" };
  }
  if (version === null) {
    // A table stored before rollouts existed has no `rollout` field at all.
    if (model.rollout) {
      const split = routeRollout(table, model.rollout, subject);
      if (split !== null) return split;
    }
    if (model.active === null) return { kind: "unregistered" };
    return routeVersion(model.versions[model.active]);
  }
  const routed = model.versions[version];
  return routed === undefined ? { kind: "unregistered" } : routeVersion(routed);
}

/**
 * The arm `subject` gets, served by its version; null when an arm's version is missing from the
 * table or archived (an inconsistent push: the model then routes as if no rollout ran).
 */
function routeRollout(table: RoutingTable, rollout: RolloutRoute, subject: string): RegistryRoute | null {
  const a = servable(table.models[rollout.arms.a.name], rollout.arms.a.version);
  const b = servable(table.models[rollout.arms.b.name], rollout.arms.b.version);
  if (a === null || b === null) return null;
  const arm = assignArm(rollout.id, subject, rollout.share);
  const mine = arm === "a" ? a : b;
  const other = arm === "a" ? b : a;
  const otherArm: Arm = arm === "a" ? "b" : "a";
  return {
    kind: "routed",
    servedAs: mine.servedAs,
    // The caller asked for the name, not for a deprecated version.
    deprecated: false,
    rollout: {
      id: rollout.id,
      phase: rollout.phase,
      arm,
      label: rollout.labels[arm],
      other: { arm: otherArm, label: rollout.labels[otherArm], servedAs: other.servedAs },
    },
  };
}

function servable(model: RoutedModel | undefined, version: string): RoutedVersion | null {
  const routed = model?.versions[version];
  return routed === undefined || routed.status === "archived" ? null : routed;
}

function routeVersion(version: RoutedVersion | undefined): RegistryRoute {
  if (version === undefined) return { kind: "unregistered" };
  if (version.status === "archived") {
    return {
      kind: "refused",
      code: "MODEL_ARCHIVED",
      message: `model version "${version.servedAs}" is archived`,
    };
  }
  return {
    kind: "routed",
    servedAs: version.servedAs,
    deprecated: version.status === "deprecated",
    rollout: null,
  };
}

/**
 * Rolling deployments: per served id of an arm a, the agents listed "b" for it, which take no new
 * request for it (what they have in flight finishes, then placement unloads it). Computed once per
 * table, not per request.
 */
export function rollingDrained(table: RoutingTable): Map<string, Set<string>> {
  const drained = new Map<string, Set<string>>();
  for (const model of Object.values(table.models)) {
    const rollout = model.rollout;
    if (rollout?.agents === undefined) continue;
    const servedAs = table.models[rollout.arms.a.name]?.versions[rollout.arms.a.version]?.servedAs;
    if (servedAs === undefined) continue;
    for (const [agentId, arms] of Object.entries(rollout.agents)) {
      if (arms !== "b") continue;
      const agents = drained.get(servedAs) ?? new Set<string>();
      agents.add(agentId);
      drained.set(servedAs, agents);
    }
  }
  return drained;
}

/** Ids of the rollouts the table carries now. */
export function rolloutIds(table: RoutingTable): Set<string> {
  const ids = new Set<string>();
  for (const model of Object.values(table.models)) if (model.rollout) ids.add(model.rollout.id);
  return ids;
}

/** Served ids an announcement lists that the table lacks: what the hub registers as agent-local. */
export function unregisteredAnnouncements(
  table: RoutingTable,
  served: Iterable<string>,
): { name: string; version: string | null; servedAs: string }[] {
  const known = new Set<string>();
  for (const model of Object.values(table.models)) {
    for (const version of Object.values(model.versions)) known.add(version.servedAs);
  }
  const out: { name: string; version: string | null; servedAs: string }[] = [];
  for (const id of served) {
    if (known.has(id)) continue;
    try {
      const { name, version } = parseModelId(id);
      if (version !== null && !isModelVersion(version)) continue;
      out.push({ name, version, servedAs: id });
    } catch {
      // Not a model id: nothing can request it, nothing to register.
    }
  }
  return out;
}

const STORAGE_KEY = "routing-table";

/** The table a hub holds, with its persistence. A push older than what is held is ignored. */
export class HubRoutingTable {
  #table: RoutingTable = EMPTY_ROUTING_TABLE;
  /** When the table was last applied or reloaded (hub clock); 0 = never this wake. */
  #refreshedAt = 0;

  constructor(private readonly storage: DurableObjectStorage) {}

  get table(): RoutingTable {
    return this.#table;
  }

  get refreshedAt(): number {
    return this.#refreshedAt;
  }

  async restore(): Promise<void> {
    const stored = await this.storage.get<RoutingTable>(STORAGE_KEY);
    if (stored !== undefined && stored.revision >= this.#table.revision) this.#table = stored;
  }

  /** Applies `table` when it is not older than the one held; true when it changed anything. */
  apply(table: RoutingTable, now: number): boolean {
    this.#refreshedAt = now;
    if (table.revision < this.#table.revision) return false;
    const changed = table.revision !== this.#table.revision || table.builtAt !== this.#table.builtAt;
    this.#table = table;
    if (changed) void this.storage.put(STORAGE_KEY, table);
    return changed;
  }
}
