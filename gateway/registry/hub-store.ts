// What an AgentHub reads from and writes to the registry in D1: the routing table when it wakes,
// agent-local versions it sees announced, and the live traffic figures it rolls up every minute.
// Never called on the request path.
import { parseModelId } from "../../schema/model-id.ts";
import {
  AGENT_LOCAL_VERSION,
  type ModelParameters,
  type ModelSource,
  type Placement,
  type RoutedModel,
  type RoutingTable,
  type VersionStatus,
} from "../../schema/registry.ts";
import type { RolloutRoute } from "../../schema/rollouts.ts";

/** An agent-local model some agent announced: `name` and its version (null when announced bare). */
export interface AnnouncedModel {
  name: string;
  version: string | null;
  /** The id the agent announced (`name` or `name:version`). */
  servedAs: string;
  /** The announcing agent, recorded in the registration event. */
  agentId: string;
}

/** One minute (or so) of live traffic of one version in one pool, as a hub measured it. */
export interface LiveMetricsWindow {
  /** Registry id `name:version`. */
  modelId: string;
  pool: string;
  windowStart: number;
  windowEnd: number;
  requests: number;
  errors: number;
  latencyP50Ms: number | null;
  latencyP95Ms: number | null;
  ttftP50Ms: number | null;
  tokensPerSecond: number | null;
}

/** The routing table as D1 holds it now (the registry's current revision). */
export async function loadRoutingTable(db: D1Database, now: number = Date.now()): Promise<RoutingTable> {
  // One batch is one transaction: the four reads see the same registry revision.
  const [revision, modelRows, versionRows, aliasRows, rolloutRows] = await db.batch([
    db.prepare("SELECT COALESCE(MAX(id), 0) AS revision FROM model_events"),
    db.prepare("SELECT name, active_version, previous_version, previous_warm FROM models"),
    db.prepare(
      "SELECT name, version, status, source, sha256, size, parameters, placement, prepare_until FROM model_versions",
    ),
    db.prepare("SELECT name, alias, version FROM model_aliases"),
    // Only the route: a rollout's state also holds its step history, which hubs do not need.
    db.prepare("SELECT model, json_extract(state, '$.route') AS route FROM rollouts WHERE running = 1"),
  ]);
  const table: RoutingTable = {
    revision: Number((revision?.results[0] as { revision: number } | undefined)?.revision ?? 0),
    builtAt: now,
    models: {},
    preparing: {},
  };
  for (const row of (modelRows?.results ?? []) as ModelTableRow[]) {
    table.models[row.name] = {
      name: row.name,
      active: row.active_version,
      previous: row.previous_version,
      aliases: {},
      warmPrevious: row.previous_warm !== 0,
      rollout: null,
      versions: {},
    };
  }
  for (const row of (versionRows?.results ?? []) as VersionTableRow[]) {
    const model = table.models[row.name];
    if (model === undefined) continue;
    const source = JSON.parse(row.source) as ModelSource;
    const servedAs = servedAsOf(row.name, row.version, source);
    const placement = row.placement === null ? null : (JSON.parse(row.placement) as Placement);
    model.versions[row.version] = {
      version: row.version,
      status: row.status,
      servedAs,
      source,
      sha256: row.sha256,
      size: row.size,
      parameters: JSON.parse(row.parameters) as ModelParameters,
      placement,
    };
    if (row.prepare_until !== null && row.prepare_until > now) {
      table.preparing[servedAs] = placement ?? { replicas: 1 };
    }
  }
  for (const row of (aliasRows?.results ?? []) as { name: string; alias: string; version: string }[]) {
    const model: RoutedModel | undefined = table.models[row.name];
    if (model !== undefined) model.aliases[row.alias] = row.version;
  }
  for (const row of (rolloutRows?.results ?? []) as { model: string; route: string | null }[]) {
    const model = table.models[row.model];
    if (model !== undefined && row.route !== null) model.rollout = JSON.parse(row.route) as RolloutRoute;
  }
  return table;
}

/**
 * The id agents serve a version under: `name:version`, or the bare name of an agent-local model
 * announced without a version (registered as AGENT_LOCAL_VERSION).
 */
export function servedAsOf(name: string, version: string, source: ModelSource): string {
  return source.kind === "agent-local" && version === AGENT_LOCAL_VERSION ? name : `${name}:${version}`;
}

interface ModelTableRow {
  name: string;
  active_version: string | null;
  previous_version: string | null;
  previous_warm: number;
}

interface VersionTableRow {
  name: string;
  version: string;
  status: VersionStatus;
  source: string;
  sha256: string | null;
  size: number | null;
  parameters: string;
  placement: string | null;
  prepare_until: number | null;
}

const AGENT_LOCAL_SOURCE = JSON.stringify({ kind: "agent-local" } satisfies ModelSource);

/**
 * Registers each announced model that the registry lacks as a version with source "agent-local"
 * (idempotent: a version already registered is left alone). Returns true when anything was added.
 */
export async function registerAgentLocalVersions(
  db: D1Database,
  announced: readonly AnnouncedModel[],
): Promise<boolean> {
  if (announced.length === 0) return false;
  const now = Date.now();
  const statements: D1PreparedStatement[] = [];
  const versionInserts: number[] = [];
  for (const model of announced) {
    const version = model.version ?? AGENT_LOCAL_VERSION;
    const actor = `agent:${model.agentId}`;
    statements.push(
      db
        .prepare(
          "INSERT INTO models (name, description, created_at, updated_at) VALUES (?1, NULL, ?2, ?2) ON CONFLICT DO NOTHING",
        )
        .bind(model.name, now),
      // The event first, only when the version is new, so event and version commit together.
      db
        .prepare(
          `INSERT INTO model_events (name, version, kind, actor, at, request_id, detail)
           SELECT ?1, ?2, 'registered', ?3, ?4, NULL, ?5
           WHERE NOT EXISTS (SELECT 1 FROM model_versions WHERE name = ?1 AND version = ?2)`,
        )
        .bind(
          model.name,
          version,
          actor,
          now,
          JSON.stringify({ source: "agent-local", servedAs: model.servedAs, agentId: model.agentId }),
        ),
    );
    versionInserts.push(statements.length);
    statements.push(
      db
        .prepare(
          `INSERT INTO model_versions (name, version, status, source, parameters, dependencies, performance_metrics, created_at, created_by)
           VALUES (?1, ?2, 'registered', ?3, '{}', '[]', '{}', ?4, ?5) ON CONFLICT DO NOTHING`,
        )
        .bind(model.name, version, AGENT_LOCAL_SOURCE, now, actor),
    );
  }
  const results = await db.batch(statements);
  return versionInserts.some((i) => (results[i]?.meta.changes ?? 0) > 0);
}

/** Appends live traffic windows to the versions' metric history (unknown versions are skipped). */
export async function recordLiveMetrics(
  db: D1Database,
  windows: readonly LiveMetricsWindow[],
): Promise<void> {
  const statements: D1PreparedStatement[] = [];
  for (const w of windows) {
    const id = registryVersionOf(w.modelId);
    if (id === undefined) continue;
    const metrics = {
      requests: w.requests,
      errors: w.errors,
      latency_p50_ms: w.latencyP50Ms,
      latency_p95_ms: w.latencyP95Ms,
      ttft_p50_ms: w.ttftP50Ms,
      tokens_per_second: w.tokensPerSecond,
    };
    statements.push(
      db
        .prepare(
          `INSERT INTO model_metrics (model_id, name, version, source, label, recorded_at, pool, window_start, window_end, metrics)
           SELECT ?1, ?2, ?3, 'live', NULL, ?4, ?5, ?6, ?4, ?7
           WHERE EXISTS (SELECT 1 FROM model_versions WHERE name = ?2 AND version = ?3)`,
        )
        .bind(
          `${id.name}:${id.version}`,
          id.name,
          id.version,
          w.windowEnd,
          w.pool,
          w.windowStart,
          JSON.stringify(metrics),
        ),
    );
  }
  if (statements.length > 0) await db.batch(statements);
}

/** A load failure an agent reported for a version: recorded as a load_failed event. */
export interface LoadFailure {
  /** The id the agent was asked to load (`name:version`, or a bare agent-local name). */
  modelId: string;
  agentId: string;
  code: string;
  message: string;
}

/** Records a load failure in the version's history (unknown versions are skipped). */
export async function recordLoadFailure(db: D1Database, failure: LoadFailure): Promise<void> {
  const id = registryVersionOf(failure.modelId);
  if (id === undefined) return;
  const detail = { agentId: failure.agentId, code: failure.code, message: failure.message.slice(0, 512) };
  await db
    .prepare(
      `INSERT INTO model_events (name, version, kind, actor, at, request_id, detail)
       SELECT ?1, ?2, 'load_failed', ?3, ?4, NULL, ?5
       WHERE EXISTS (SELECT 1 FROM model_versions WHERE name = ?1 AND version = ?2)`,
    )
    .bind(id.name, id.version, `agent:${failure.agentId}`, Date.now(), JSON.stringify(detail))
    .run();
}

/** The registry's name and version for a served id; a bare name is its agent-local version. */
function registryVersionOf(modelId: string): { name: string; version: string } | undefined {
  try {
    const { name, version } = parseModelId(modelId);
    return { name, version: version ?? AGENT_LOCAL_VERSION };
  } catch {
    return undefined;
  }
}
