// The registry's routing table as a hub holds it: name -> active version, name:version, name@alias,
// each to the model id agents serve it under. Pushed by the Worker on every registry change,
// persisted in the hub's storage, reloaded from D1 when missing or stale; never read from D1 on the
// request path. `routeModel` is pure: the dispatcher calls it once per request, before
// model-resolution picks among what agents serve.
import { isModelVersion, parseModelId } from "../../schema/model-id.ts";
import {
  AGENT_LOCAL_VERSION,
  EMPTY_ROUTING_TABLE,
  type RoutedVersion,
  type RoutingTable,
} from "../../schema/registry.ts";

export type RegistryRoute =
  /** The registry does not know this model: today's behaviour (what agents announce) decides. */
  | { kind: "unregistered" }
  | {
      kind: "routed";
      /** The id agents serve it under: what generate frames name and agents announce. */
      servedAs: string;
      /** The registry id `name:version` that responses name. */
      modelId: string;
      deprecated: boolean;
    }
  | { kind: "refused"; code: "MODEL_ARCHIVED" | "MODEL_NOT_FOUND"; message: string };

const ALIAS_SEPARATOR = "@";

/** How the table routes a caller's `model` text (a name, `name:version`, or `name@alias`). */
export function routeModel(table: RoutingTable, requested: string): RegistryRoute {
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
    return routeVersion(name, model.versions[version]);
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
    if (model.active === null) return { kind: "unregistered" };
    return routeVersion(name, model.versions[model.active]);
  }
  const routed = model.versions[version];
  return routed === undefined ? { kind: "unregistered" } : routeVersion(name, routed);
}

function routeVersion(name: string, version: RoutedVersion | undefined): RegistryRoute {
  if (version === undefined) return { kind: "unregistered" };
  const modelId = registryId(name, version);
  if (version.status === "archived") {
    return { kind: "refused", code: "MODEL_ARCHIVED", message: `model version "${modelId}" is archived` };
  }
  return { kind: "routed", servedAs: version.servedAs, modelId, deprecated: version.status === "deprecated" };
}

/**
 * The registry id responses name for a served id the table did not route (a request by name with
 * no active version): the version the table lists under that served id, else the id itself.
 */
export function publicModelId(table: RoutingTable, servedAs: string): string {
  let name = servedAs;
  try {
    name = parseModelId(servedAs).name;
  } catch {
    return servedAs;
  }
  const model = table.models[name];
  if (model === undefined) return servedAs;
  for (const version of Object.values(model.versions)) {
    if (version.servedAs === servedAs) return registryId(name, version);
  }
  return servedAs;
}

/**
 * What responses call a version: `name:version`, except an agent's bare local model, which has no
 * version of its own (its registry placeholder is 0.0.0-local): it keeps the name the agent serves,
 * whether or not the hub has registered it yet, so its responses never change name mid-flight.
 */
function registryId(name: string, version: RoutedVersion): string {
  return isAgentLocalVersion(version.version) && version.servedAs === name
    ? name
    : `${name}:${version.version}`;
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

/** Whether `version` is the registry's name for an agent's bare, unversioned local model. */
export function isAgentLocalVersion(version: string): boolean {
  return version === AGENT_LOCAL_VERSION;
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
