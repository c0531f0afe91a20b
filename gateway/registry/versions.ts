// Reading the registry in D1: a model, a version by id or alias (404 naming which is missing), and
// the one way every write records what it did (an append-only model_events row).
import { and, eq, type SQL } from "drizzle-orm";
import { type DrizzleD1Database, drizzle } from "drizzle-orm/d1";
import {
  type ModelEventKind,
  type ModelRow,
  type ModelVersionRow,
  modelAliases,
  modelEvents,
  models,
  modelVersions,
} from "../../schema/db.ts";
import { ModelIdError, parseModelId } from "../../schema/model-id.ts";
import { ALIAS_PATTERN } from "../../schema/registry.ts";
import { GatewayError } from "../errors.ts";

export type Db = DrizzleD1Database;

export const registryDb = (d1: D1Database): Db => drizzle(d1);

/** Who acts, in which request: recorded on every event. */
export interface Actor {
  sub: string;
  requestId: string | null;
}

export interface EventInput {
  name: string;
  version: string | null;
  kind: ModelEventKind;
  /** A JSON object, or SQL building one inside the batch (to record the state a switch replaces). */
  detail: Record<string, unknown> | SQL;
  at?: Date;
}

/** The insert of one event, for a batch beside the change it records. */
export function eventInsert(db: Db, actor: Actor, event: EventInput) {
  return db.insert(modelEvents).values({
    name: event.name,
    version: event.version,
    kind: event.kind,
    actor: actor.sub,
    at: event.at ?? new Date(),
    requestId: actor.requestId,
    detail: event.detail,
  });
}

export async function findModel(db: Db, name: string): Promise<ModelRow> {
  const row = await db.select().from(models).where(eq(models.name, name)).get();
  if (row === undefined)
    throw new GatewayError("MODEL_NOT_FOUND", `no model "${name.slice(0, 128)}" in the registry`);
  return row;
}

/** The version, or 404: MODEL_NOT_FOUND when the name is unknown, VERSION_NOT_FOUND when only the version is. */
export async function findVersion(db: Db, name: string, version: string): Promise<ModelVersionRow> {
  const row = await db
    .select()
    .from(modelVersions)
    .where(and(eq(modelVersions.name, name), eq(modelVersions.version, version)))
    .get();
  if (row !== undefined) return row;
  await findModel(db, name);
  throw new GatewayError("VERSION_NOT_FOUND", `model "${name}" has no version "${version.slice(0, 128)}"`);
}

/**
 * A path's model id: `name:version`, or `name@alias` resolved through the alias table. Anything
 * else is 400 INVALID_MODEL_ID; an unknown alias is 404 ALIAS_NOT_FOUND.
 */
export async function resolveVersion(db: Db, modelId: string): Promise<ModelVersionRow> {
  const at = modelId.lastIndexOf("@");
  if (at > 0 && ALIAS_PATTERN.test(modelId.slice(at + 1))) {
    const name = modelId.slice(0, at);
    const alias = modelId.slice(at + 1);
    const row = await db
      .select()
      .from(modelAliases)
      .where(and(eq(modelAliases.name, name), eq(modelAliases.alias, alias)))
      .get();
    if (row === undefined) {
      await findModel(db, name);
      throw new GatewayError("ALIAS_NOT_FOUND", `model "${name}" has no alias "${alias}"`);
    }
    return findVersion(db, name, row.version);
  }
  const parsed = parseVersionedId(modelId);
  return findVersion(db, parsed.name, parsed.version);
}

export function parseVersionedId(modelId: string): { name: string; version: string } {
  try {
    const { name, version } = parseModelId(modelId);
    if (version !== null) return { name, version };
  } catch (err) {
    if (!(err instanceof ModelIdError)) throw err;
  }
  throw new GatewayError("INVALID_MODEL_ID", "a model id here is name:version or name@alias", {
    param: "model_id",
  });
}

export const modelIdOf = (row: { name: string; version: string }) => `${row.name}:${row.version}`;

/** The path agents fetch a version's artifact from (schema/registry.ts ArtifactRef.path). */
export const artifactPath = (row: { name: string; version: string }) => `/models/${modelIdOf(row)}/artifact`;

/** Whether a D1 error is a UNIQUE or PRIMARY KEY constraint failure (drizzle wraps it as `cause`). */
export function isUniqueViolation(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (/UNIQUE constraint failed|PRIMARY KEY constraint failed|SQLITE_CONSTRAINT/.test(e.message))
      return true;
  }
  return false;
}

export const iso = (d: Date | null | undefined) => (d ? d.toISOString() : null);
