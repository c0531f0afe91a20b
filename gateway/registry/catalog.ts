// The registry's read side: models with their active version and pools, one model's versions
// (newest first by semver), one version with its three kinds of metrics and its events, the lineage
// graph, and which version served a name at a given time.
import { and, asc, desc, eq, inArray } from "drizzle-orm";
import {
  type ModelEventRow,
  type ModelMetricsRow,
  modelAliases,
  modelEvents,
  modelMetrics,
  models,
  modelTags,
  modelVersions,
} from "../../schema/db.ts";
import type {
  LineageResponse,
  MetricsRecord,
  ModelDetail,
  ModelEvent,
  ServingResponse,
  VersionDetail,
} from "../../schema/registry-api.ts";
import { type Pools, poolsForModel } from "../config.ts";
import { compareSemver } from "./semver.ts";
import { artifactPath, type Db, findModel, findVersion, iso, modelIdOf } from "./versions.ts";

/** The events that decide which version serves a name (serving?at=). */
const SERVING_KINDS = ["activated", "rolled_back", "deactivated"] as const;

export async function listModels(db: Db, pools: Pools) {
  const [modelRows, versionRows, tagRows] = await db.batch([
    db.select().from(models).orderBy(asc(models.name)),
    db
      .select({ name: modelVersions.name, version: modelVersions.version, status: modelVersions.status })
      .from(modelVersions),
    db.select().from(modelTags),
  ]);
  return modelRows.map((model) => {
    const versions = versionRows.filter((v) => v.name === model.name);
    const active = versions.find((v) => v.version === model.activeVersion);
    const tags = tagRows
      .filter((t) => t.name === model.name && (t.version === "" || t.version === model.activeVersion))
      .map((t) => t.tag);
    return {
      name: model.name,
      description: model.description,
      active_version: model.activeVersion,
      previous_version: model.previousVersion,
      status: active?.status ?? "registered",
      tags: [...new Set(tags)].sort(),
      pools: [...poolsForModel(pools, model.name)],
      versions: versions.length,
    };
  });
}

export async function modelDetail(db: Db, name: string, pools: Pools): Promise<ModelDetail> {
  const model = await findModel(db, name);
  const [versionRows, tagRows, aliasRows] = await db.batch([
    db.select().from(modelVersions).where(eq(modelVersions.name, name)),
    db.select().from(modelTags).where(eq(modelTags.name, name)),
    db.select().from(modelAliases).where(eq(modelAliases.name, name)),
  ]);
  const tagsOf = (version: string) =>
    tagRows
      .filter((t) => t.version === version)
      .map((t) => t.tag)
      .sort();
  const aliasesOf = (version: string) =>
    aliasRows
      .filter((a) => a.version === version)
      .map((a) => a.alias)
      .sort();
  const versions = versionRows
    .sort((a, b) => compareSemver(b.version, a.version))
    .map((v) => ({
      model_id: modelIdOf(v),
      version: v.version,
      status: v.status,
      tags: tagsOf(v.version),
      aliases: aliasesOf(v.version),
      created_at: v.createdAt.toISOString(),
    }));
  const active = versionRows.find((v) => v.version === model.activeVersion);
  return {
    name,
    description: model.description,
    active_version: model.activeVersion,
    previous_version: model.previousVersion,
    status: active?.status ?? "registered",
    tags: tagsOf(""),
    pools: [...poolsForModel(pools, name)],
    aliases: Object.fromEntries(aliasRows.map((a) => [a.alias, a.version])),
    versions,
  };
}

export async function versionDetail(db: Db, name: string, version: string): Promise<VersionDetail> {
  const row = await findVersion(db, name, version);
  const [tagRows, aliasRows, metricRows, eventRows] = await db.batch([
    db
      .select()
      .from(modelTags)
      .where(and(eq(modelTags.name, name), eq(modelTags.version, version))),
    db
      .select()
      .from(modelAliases)
      .where(and(eq(modelAliases.name, name), eq(modelAliases.version, version))),
    db
      .select()
      .from(modelMetrics)
      .where(and(eq(modelMetrics.name, name), eq(modelMetrics.version, version)))
      .orderBy(asc(modelMetrics.recordedAt), asc(modelMetrics.id)),
    db
      .select()
      .from(modelEvents)
      .where(and(eq(modelEvents.name, name), eq(modelEvents.version, version)))
      .orderBy(asc(modelEvents.id)),
  ]);
  return {
    model_id: modelIdOf(row),
    name,
    version,
    status: row.status,
    tags: tagRows.map((t) => t.tag).sort(),
    aliases: aliasRows.map((a) => a.alias).sort(),
    created_at: row.createdAt.toISOString(),
    created_by: row.createdBy,
    description: row.description,
    model_type: row.modelType,
    framework: row.framework,
    model_path: row.modelPath,
    source: row.source,
    sha256: row.sha256,
    size: row.size,
    parameters: row.parameters,
    parent: row.parent,
    dependencies: row.dependencies,
    placement: row.placement,
    artifact:
      row.artifactStoredAt === null
        ? null
        : { path: artifactPath(row), stored_at: row.artifactStoredAt.toISOString() },
    performance_metrics: row.performanceMetrics,
    evaluation_metrics: metricRows.filter((m) => m.source === "evaluation").map(metricsRecord),
    live_metrics: metricRows.filter((m) => m.source === "live").map(metricsRecord),
    events: eventRows.map(eventView),
  };
}

export async function lineage(db: Db, name: string): Promise<LineageResponse> {
  await findModel(db, name);
  const [versionRows, eventRows, metricRows] = await db.batch([
    db.select().from(modelVersions).where(eq(modelVersions.name, name)),
    db.select().from(modelEvents).where(eq(modelEvents.name, name)).orderBy(asc(modelEvents.id)),
    db
      .select()
      .from(modelMetrics)
      .where(eq(modelMetrics.name, name))
      .orderBy(asc(modelMetrics.recordedAt), asc(modelMetrics.id)),
  ]);
  versionRows.sort((a, b) => compareSemver(a.version, b.version));
  const edges: LineageResponse["edges"] = [];
  for (const v of versionRows) {
    const to = modelIdOf(v);
    if (v.parent !== null) edges.push({ from: v.parent, to, kind: "parent" });
    for (const dependency of v.dependencies) edges.push({ from: dependency, to, kind: "dependency" });
  }
  const metrics: Record<string, MetricsRecord[]> = {};
  for (const v of versionRows) metrics[v.version] = [];
  for (const m of metricRows) {
    metrics[m.version] ??= [];
    metrics[m.version]?.push(metricsRecord(m));
  }
  return {
    name,
    versions: versionRows.map((v) => ({
      version: v.version,
      parent: v.parent,
      dependencies: v.dependencies,
      status: v.status,
      created_at: v.createdAt.toISOString(),
    })),
    edges,
    events: eventRows.map((e) => ({
      kind: e.kind,
      version: e.version,
      actor: e.actor,
      at: e.at.toISOString(),
      detail: e.detail,
    })),
    metrics,
  };
}

/** Which version served `name` at `at`: the last activation, rollback or deactivation at or before it. */
export async function servingAt(db: Db, name: string, at: Date): Promise<ServingResponse> {
  await findModel(db, name);
  const events = await db
    .select()
    .from(modelEvents)
    .where(and(eq(modelEvents.name, name), inArray(modelEvents.kind, [...SERVING_KINDS])))
    .orderBy(desc(modelEvents.id));
  const last = events.find((e) => e.at.getTime() <= at.getTime());
  return {
    name,
    at: at.toISOString(),
    version: last === undefined ? null : servedVersionAfter(last),
    since: last === undefined ? null : last.at.toISOString(),
  };
}

/** The version serving by name after a serving event (activated/rolled_back name it in detail.to). */
export function servedVersionAfter(event: Pick<ModelEventRow, "kind" | "detail">): string | null {
  if (event.kind === "deactivated") return null;
  const to = event.detail.to;
  return typeof to === "string" ? to : null;
}

export function metricsRecord(m: ModelMetricsRow): MetricsRecord {
  return {
    source: m.source,
    label: m.label,
    recorded_at: m.recordedAt.toISOString(),
    pool: m.pool,
    window_start: iso(m.windowStart),
    window_end: iso(m.windowEnd),
    metrics: m.metrics,
  };
}

export function eventView(e: ModelEventRow): ModelEvent {
  return {
    id: e.id,
    kind: e.kind,
    version: e.version,
    actor: e.actor,
    at: e.at.toISOString(),
    request_id: e.requestId,
    detail: e.detail,
  };
}
