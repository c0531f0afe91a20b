// Registering a version (immutable from then on) and recording evaluation metrics for one. Each
// write is one D1 batch with its event: it commits whole or not at all.
import { type ModelVersionRow, modelMetrics, models, modelTags, modelVersions } from "../../schema/db.ts";
import type { MetricsRequest, RegisterRequest } from "../../schema/registry-api.ts";
import { GatewayError } from "../errors.ts";
import { type Actor, type Db, eventInsert, findVersion, isUniqueViolation, modelIdOf } from "./versions.ts";

/**
 * Inserts the version, its tags, its declared metrics and a `registered` event. UNIQUE(name,
 * version) decides between concurrent registrations of one version: one batch commits, every
 * other fails on the constraint and answers 409 VERSION_EXISTS, having written nothing.
 */
export async function registerVersion(db: Db, body: RegisterRequest, actor: Actor) {
  const parent = body.parent === undefined ? null : `${body.parent.name}:${body.parent.version}`;
  if (body.parent !== undefined) {
    try {
      await findVersion(db, body.parent.name, body.parent.version);
    } catch (err) {
      if (err instanceof GatewayError && err.status === 404) {
        throw new GatewayError("PARENT_NOT_FOUND", `parent ${parent} is not registered`, { param: "parent" });
      }
      throw err;
    }
  }
  const now = new Date();
  const version = {
    name: body.name,
    version: body.version,
    status: "registered" as const,
    description: body.description ?? null,
    modelType: body.model_type ?? null,
    framework: body.framework ?? null,
    modelPath: body.model_path ?? null,
    source: body.source,
    sha256: body.sha256 ?? null,
    size: body.size ?? null,
    parameters: body.parameters,
    parent,
    dependencies: body.dependencies,
    performanceMetrics: body.performance_metrics,
    placement: body.placement ?? null,
    createdAt: now,
    createdBy: actor.sub,
  };
  const modelId = modelIdOf(body);
  try {
    await db.batch([
      db
        .insert(models)
        .values({ name: body.name, description: body.description ?? null, createdAt: now, updatedAt: now })
        .onConflictDoNothing(),
      db.insert(modelVersions).values(version),
      ...body.tags.map((tag) => db.insert(modelTags).values({ name: body.name, version: body.version, tag })),
      ...(Object.keys(body.performance_metrics).length === 0
        ? []
        : [
            db.insert(modelMetrics).values({
              modelId,
              name: body.name,
              version: body.version,
              source: "declared",
              recordedAt: now,
              metrics: body.performance_metrics,
            }),
          ]),
      eventInsert(db, actor, {
        name: body.name,
        version: body.version,
        kind: "registered",
        at: now,
        detail: { source: body.source, parent, dependencies: body.dependencies, tags: body.tags },
      }),
    ]);
  } catch (err) {
    if (isUniqueViolation(err)) {
      throw new GatewayError("VERSION_EXISTS", `${modelId} is already registered; versions are immutable`);
    }
    throw err;
  }
  return {
    model_id: modelId,
    name: body.name,
    version: body.version,
    status: version.status,
    source: body.source,
    tags: body.tags,
    created_at: now.toISOString(),
  };
}

/** Appends an evaluation's figures to the version's metric history, with a metrics_recorded event. */
export async function recordEvaluation(db: Db, row: ModelVersionRow, body: MetricsRequest, actor: Actor) {
  const now = new Date();
  const recordedAt = body.recorded_at === undefined ? now : new Date(body.recorded_at);
  const label = body.source ?? null;
  await db.batch([
    db.insert(modelMetrics).values({
      modelId: modelIdOf(row),
      name: row.name,
      version: row.version,
      source: "evaluation",
      label,
      recordedAt,
      metrics: body.metrics,
    }),
    eventInsert(db, actor, {
      name: row.name,
      version: row.version,
      kind: "metrics_recorded",
      at: now,
      detail: { source: label, recorded_at: recordedAt.toISOString(), metrics: body.metrics },
    }),
  ]);
  return {
    model_id: modelIdOf(row),
    source: label,
    recorded_at: recordedAt.toISOString(),
    metrics: body.metrics,
  };
}
