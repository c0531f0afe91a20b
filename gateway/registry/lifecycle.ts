// A version's lifecycle: activation (prepare on enough agents, then switch every hub), rollback,
// deactivation, deprecation and archiving. Each switch is one D1 batch whose SQL reads the state it
// replaces (`from` in the event, previous_version in the row) inside the same transaction, so
// concurrent switches serialize: every one is recorded, and the last committed is the final state.
import { and, eq, ne, sql } from "drizzle-orm";
import { type ModelVersionRow, models, modelVersions } from "../../schema/db.ts";
import type { ModelSource, Placement } from "../../schema/registry.ts";
import type { ActivateRequest, ActivateResponse } from "../../schema/registry-api.ts";
import { RegistryLimits } from "../../schema/registry-api.ts";
import { readConfig } from "../config.ts";
import { GatewayError } from "../errors.ts";
import { servedAsOf } from "./hub-store.ts";
import { type PlacementEntry, placementOf, publishRoutingTable } from "./publish.ts";
import {
  type Actor,
  type Db,
  eventInsert,
  findModel,
  findVersion,
  modelIdOf,
  registryDb,
} from "./versions.ts";

/** How often an activation asks the hubs whether the version is loaded yet. */
const POLL_INTERVAL_MS = 250;

/** An agent-local model lives on the agents that announce it: nothing to place. Files: one agent. */
export function defaultPlacement(source: ModelSource): Placement {
  return { replicas: source.kind === "agent-local" ? 0 : 1 };
}

interface Readiness {
  ready: boolean;
  required: number;
  loaded: string[];
  loading: string[];
  failed: PlacementEntry["failed"];
}

/**
 * Activates `row`: (a) marks it preparing with its placement, (b) pushes the table so the hubs
 * load it, (c) waits until at least `replicas` agents (summed over the placement's pools) hold it,
 * then (d) switches in one batch and pushes again. Not ready by the timeout: nothing switches,
 * the attempt is recorded (activation_failed, outcome not_ready) and the answer is 503.
 */
export async function activate(
  env: Env,
  row: ModelVersionRow,
  body: ActivateRequest,
  actor: Actor,
): Promise<ActivateResponse> {
  const db = registryDb(env.DB);
  const modelId = modelIdOf(row);
  if (row.status === "archived")
    throw new GatewayError("VERSION_ARCHIVED", `${modelId} is archived and cannot serve`);
  const model = await findModel(db, row.name);
  if (model.activeVersion === row.version) {
    return { model_id: modelId, previous: model.previousVersion, loaded_on: [], noop: true };
  }
  const placement = body.placement ?? row.placement ?? defaultPlacement(row.source);
  const configured = readConfig(env).pools.byName;
  const unknownPool = placement.pools?.find((pool) => !configured.has(pool));
  if (unknownPool !== undefined) {
    throw new GatewayError("INVALID_REQUEST", `placement.pools: "${unknownPool}" is not a configured pool`, {
      param: "placement.pools",
    });
  }
  const timeoutMs = body.timeout_ms ?? RegistryLimits.defaultActivationTimeoutMs;
  const deadline = Date.now() + timeoutMs;
  const version = { name: row.name, version: row.version };
  await db.batch([
    db.update(modelVersions).set({ placement, prepareUntil: deadline }).where(eq(modelVersions.id, row.id)),
    eventInsert(db, actor, {
      ...version,
      kind: "activation_started",
      detail: { placement, timeout_ms: timeoutMs },
    }),
  ]);
  await publishRoutingTable(env);
  const readiness = await waitForPlacement(
    env,
    servedAsOf(row.name, row.version, row.source),
    placement,
    deadline,
  );
  if (!readiness.ready) {
    await db.batch([
      db.update(modelVersions).set({ prepareUntil: null }).where(eq(modelVersions.id, row.id)),
      eventInsert(db, actor, {
        ...version,
        kind: "activation_failed",
        detail: { outcome: "not_ready", timeout_ms: timeoutMs, ...readiness },
      }),
    ]);
    await publishRoutingTable(env);
    throw new GatewayError("ACTIVATION_NOT_READY", notReadyMessage(modelId, timeoutMs, readiness), {
      retryAfterSeconds: 5,
    });
  }
  const after = await commitSwitch(db, row, actor, { loadedOn: readiness.loaded });
  await publishRoutingTable(env);
  return {
    model_id: modelId,
    previous: after?.previousVersion ?? null,
    loaded_on: readiness.loaded,
    noop: false,
  };
}

/**
 * The switch itself, once `row` is loaded where it must be: one batch that records `activated`
 * (from what the SQL reads as active inside the transaction), returns the active version to
 * registered, makes `row` active (with `placement` when given) and the old one previous, kept warm.
 * The caller publishes the routing table. Returns the model row after the switch.
 */
export async function commitSwitch(
  db: Db,
  row: ModelVersionRow,
  actor: Actor,
  detail: { loadedOn: readonly string[]; placement?: Placement; deployment?: string },
) {
  const [, , , , after] = await db.batch([
    eventInsert(db, actor, {
      name: row.name,
      version: row.version,
      kind: "activated",
      detail: sql`json_object('from', (SELECT active_version FROM models WHERE name = ${row.name}), 'to', ${row.version}, 'loadedOn', json(${JSON.stringify(detail.loadedOn)}), 'deployment', ${detail.deployment ?? null})`,
    }),
    demoteActive(db, row.name, row.version),
    db
      .update(modelVersions)
      .set({
        status: "active",
        prepareUntil: null,
        ...(detail.placement === undefined ? {} : { placement: detail.placement }),
      })
      .where(eq(modelVersions.id, row.id)),
    db
      .update(models)
      .set({
        previousVersion: sql`CASE WHEN ${models.activeVersion} = ${row.version} THEN ${models.previousVersion} ELSE ${models.activeVersion} END`,
        activeVersion: row.version,
        previousWarm: true,
        updatedAt: new Date(),
      })
      .where(eq(models.name, row.name)),
    db.select().from(models).where(eq(models.name, row.name)),
  ]);
  return after[0];
}

/** Makes the previous version active again at once (the hubs keep it warm), the active one previous. */
export async function rollback(env: Env, name: string, actor: Actor) {
  const db = registryDb(env.DB);
  const model = await findModel(db, name);
  if (model.previousVersion === null) {
    throw new GatewayError("NO_PREVIOUS_VERSION", `model "${name}" has no previous version to roll back to`);
  }
  const target = await findVersion(db, name, model.previousVersion);
  if (target.status === "archived") {
    throw new GatewayError("VERSION_ARCHIVED", `the previous version ${modelIdOf(target)} is archived`);
  }
  const [, , , , after] = await db.batch([
    eventInsert(db, actor, {
      name,
      version: target.version,
      kind: "rolled_back",
      detail: sql`json_object('from', (SELECT active_version FROM models WHERE name = ${name}), 'to', ${target.version})`,
    }),
    demoteActive(db, name, target.version),
    db
      .update(modelVersions)
      .set({ status: "active", prepareUntil: null })
      .where(eq(modelVersions.id, target.id)),
    db
      .update(models)
      .set({
        activeVersion: models.previousVersion,
        previousVersion: models.activeVersion,
        previousWarm: true,
        updatedAt: new Date(),
      })
      .where(and(eq(models.name, name), eq(models.previousVersion, target.version))),
    db.select().from(models).where(eq(models.name, name)),
  ]);
  await publishRoutingTable(env);
  return { name, active: after[0]?.activeVersion ?? null, previous: after[0]?.previousVersion ?? null };
}

/** Stops serving `name` by name (pinned ids of its versions keep working); a no-op when none is active. */
export async function deactivate(env: Env, name: string, actor: Actor) {
  const db = registryDb(env.DB);
  const model = await findModel(db, name);
  if (model.activeVersion === null)
    return { name, active: null, previous: model.previousVersion, noop: true };
  await db.batch([
    eventInsert(db, actor, {
      name,
      version: model.activeVersion,
      kind: "deactivated",
      detail: sql`json_object('from', (SELECT active_version FROM models WHERE name = ${name}))`,
    }),
    demoteActive(db, name, null),
    db
      .update(models)
      .set({ previousVersion: models.activeVersion, activeVersion: null, updatedAt: new Date() })
      .where(and(eq(models.name, name), sql`${models.activeVersion} IS NOT NULL`)),
  ]);
  await publishRoutingTable(env);
  return { name, active: null, previous: model.activeVersion, noop: false };
}

/**
 * Deprecates (still serves requests that pin it, with a Deprecation header) or archives (refused)
 * a version. The active version can be neither: 409 VERSION_ACTIVE, deactivate or roll back first.
 */
export async function retire(
  env: Env,
  row: ModelVersionRow,
  status: "deprecated" | "archived",
  actor: Actor,
) {
  const db = registryDb(env.DB);
  const modelId = modelIdOf(row);
  const model = await findModel(db, row.name);
  if (model.activeVersion === row.version) {
    throw new GatewayError(
      "VERSION_ACTIVE",
      `${modelId} is the active version; deactivate it or roll back first`,
    );
  }
  if (row.status === status) return { model_id: modelId, status, noop: true };
  if (row.status === "archived") throw new GatewayError("VERSION_ARCHIVED", `${modelId} is archived`);
  await db.batch([
    db
      .update(modelVersions)
      .set({ status, prepareUntil: null })
      .where(and(eq(modelVersions.id, row.id), ne(modelVersions.status, "active"))),
    eventInsert(db, actor, {
      name: row.name,
      version: row.version,
      kind: status,
      detail: { from: row.status },
    }),
  ]);
  await publishRoutingTable(env);
  return { model_id: modelId, status, noop: false };
}

/** The update that returns the active version (other than `keep`) to registered. */
function demoteActive(db: Db, name: string, keep: string | null) {
  const conditions = [eq(modelVersions.name, name), eq(modelVersions.status, "active")];
  if (keep !== null) conditions.push(ne(modelVersions.version, keep));
  return db
    .update(modelVersions)
    .set({ status: "registered" })
    .where(and(...conditions));
}

async function waitForPlacement(
  env: Env,
  servedAs: string,
  placement: Placement,
  deadline: number,
): Promise<Readiness> {
  const pools = placement.pools ?? [...readConfig(env).pools.byName.keys()];
  for (;;) {
    const found = (await placementOf(env, [servedAs], pools)).get(servedAs);
    const loaded = new Set(found?.loaded);
    const loading = new Set(found?.loading);
    const failed: PlacementEntry["failed"] = found?.failed ?? [];
    const readiness = {
      ready: loaded.size >= placement.replicas,
      required: placement.replicas,
      loaded: [...loaded].sort(),
      loading: [...loading].sort(),
      failed,
    };
    const remaining = deadline - Date.now();
    if (readiness.ready || remaining <= 0) return readiness;
    await new Promise((resolve) => setTimeout(resolve, Math.min(POLL_INTERVAL_MS, remaining)));
  }
}

/**
 * Counts and failure codes, never agent ids (error bodies name no machine of the fleet): the
 * agents are in the version's activation_failed event, which admins read with the version.
 */
function notReadyMessage(modelId: string, timeoutMs: number, r: Readiness): string {
  const codes = [...new Set(r.failed.map((f) => f.code))].join(", ");
  return (
    `${modelId} was loaded on ${r.loaded.length} of ${r.required} agents within ${timeoutMs} ms; nothing switched ` +
    `(loading: ${r.loading.length}; failed: ${r.failed.length}${codes ? ` (${codes})` : ""}; the agents are in the ` +
    "version's activation_failed event)"
  );
}
