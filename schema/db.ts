// D1 tables (drizzle). Migrations in ./migrations are generated from this file by drizzle-kit.
import { sql } from "drizzle-orm";
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";
import type { ModelParameters, ModelSource, Placement, VersionStatus } from "./registry.ts";

/**
 * Node agents known to the gateway. A row is created on an agent's first connection; an admin
 * revokes it (POST /agents/:id/revoke sets revoked_at), after which the agent is refused at
 * connect, and restores it by clearing revoked_at. `pool` says which AgentHub it joins.
 */
export const agents = sqliteTable(
  "agents",
  {
    id: text("id").primaryKey(),
    name: text("name").notNull(),
    pool: text("pool").notNull().default("default"),
    createdAt: integer("created_at", { mode: "timestamp_ms" }).notNull().default(sql`(unixepoch() * 1000)`),
    lastSeenAt: integer("last_seen_at", { mode: "timestamp_ms" }),
    revokedAt: integer("revoked_at", { mode: "timestamp_ms" }),
    /** The admin (token `sub`) who revoked it; null while not revoked. */
    revokedBy: text("revoked_by"),
    revokeReason: text("revoke_reason"),
  },
  (t) => [index("agents_pool_idx").on(t.pool)],
);
export type AgentRow = typeof agents.$inferSelect;

/**
 * Append-only record of admin actions: who did what to which target, when, and with what detail.
 * Rows are only ever inserted (the migration adds triggers that refuse UPDATE and DELETE), so the
 * table is the audit trail of the control plane. `target` names the object as "<kind>:<id>"
 * (e.g. "agent:mini-3"); `action` is "<kind>.<verb>" (e.g. "agent.revoke").
 */
export const auditLog = sqliteTable(
  "audit_log",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    at: integer("at", { mode: "timestamp_ms" }).notNull(),
    /** The acting token's `sub`. */
    actor: text("actor").notNull(),
    /** The acting token's role, as it was when the action was taken. */
    actorRole: text("actor_role").notNull(),
    action: text("action").notNull(),
    target: text("target").notNull(),
    /** The request's X-Request-Id, to find its log lines. */
    requestId: text("request_id").notNull(),
    /** JSON object: the action's inputs and what it found (e.g. the reason, whether it was a no-op). */
    detail: text("detail", { mode: "json" }).$type<Record<string, unknown>>().notNull(),
  },
  (t) => [
    index("audit_log_target_idx").on(t.target, t.at),
    index("audit_log_at_idx").on(t.at),
    // GET /audit?actor=: one admin's actions, newest first.
    index("audit_log_actor_idx").on(t.actor, t.id),
  ],
);
export type AuditLogRow = typeof auditLog.$inferSelect;

// ---- token revocation (issue 12) ----

/** What a token revocation names: one token by its `jti`, or every token of a subject (`sub`). */
export type TokenRevocationKind = "jti" | "sub";

/**
 * The deny-list of user tokens revoked before they expire (POST /tokens/revoke): one row per
 * (kind, value). Every isolate's auth middleware keeps a copy (gateway/middleware/auth/
 * token-deny-list.ts). Unlike audit_log it is mutable: lifting a revocation deletes its row, and
 * lapsed rows (`until` passed) are pruned by the next revoke; the audit log keeps the history.
 */
export const tokenRevocations = sqliteTable(
  "token_revocations",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    kind: text("kind").$type<TokenRevocationKind>().notNull(),
    /** The revoked `jti`, or the revoked subject's `sub`. */
    value: text("value").notNull(),
    reason: text("reason"),
    /** When the revocation lapses by itself; null: until an admin lifts it. */
    until: integer("until", { mode: "timestamp_ms" }),
    revokedAt: integer("revoked_at", { mode: "timestamp_ms" }).notNull(),
    /** The admin (token `sub`) who revoked it. */
    revokedBy: text("revoked_by").notNull(),
  },
  (t) => [uniqueIndex("token_revocations_kind_value_idx").on(t.kind, t.value)],
);
export type TokenRevocationRow = typeof tokenRevocations.$inferSelect;

/**
 * One row (id 1) whose revision every change of token_revocations increments in the same batch: an
 * isolate reads this one row every few seconds, and the whole deny-list only when it changed.
 */
export const tokenRevocationState = sqliteTable("token_revocation_state", {
  id: integer("id").primaryKey(),
  revision: integer("revision").notNull(),
  updatedAt: integer("updated_at", { mode: "timestamp_ms" }).notNull(),
});

// ---- the model registry (issue 9) ----

/**
 * A model name and the two versions that matter for serving it by name: the active one and the
 * one before it (rollback's target). Created by the first registration of any of its versions.
 */
export const models = sqliteTable("models", {
  name: text("name").primaryKey(),
  activeVersion: text("active_version"),
  previousVersion: text("previous_version"),
  description: text("description"),
  /**
   * Whether hubs keep the previous version loaded for an instant rollback: 1 unless a blue-green
   * deployment's rollback window or a rolling deployment ended it; every switch sets it again.
   */
  previousWarm: integer("previous_warm", { mode: "boolean" }).notNull().default(true),
  createdAt: integer("created_at", { mode: "timestamp_ms" }).notNull(),
  updatedAt: integer("updated_at", { mode: "timestamp_ms" }).notNull(),
});
export type ModelRow = typeof models.$inferSelect;

/**
 * One registered version: immutable once inserted except for its lifecycle (status, placement,
 * prepare_until while an activation prepares it, and the artifact once uploaded). UNIQUE(name,
 * version) is what makes a concurrent second registration of a version fail (409 VERSION_EXISTS).
 */
export const modelVersions = sqliteTable(
  "model_versions",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    name: text("name").notNull(),
    version: text("version").notNull(),
    status: text("status").$type<VersionStatus>().notNull().default("registered"),
    description: text("description"),
    modelType: text("model_type"),
    framework: text("framework"),
    modelPath: text("model_path"),
    source: text("source", { mode: "json" }).$type<ModelSource>().notNull(),
    sha256: text("sha256"),
    size: integer("size"),
    parameters: text("parameters", { mode: "json" }).$type<ModelParameters>().notNull(),
    /** The model id (`name:version`) this version derives from, if any. */
    parent: text("parent"),
    /** Model ids (or free-form references) it needs: tokenizer, base model, adapters. */
    dependencies: text("dependencies", { mode: "json" }).$type<string[]>().notNull(),
    /** The metrics declared at registration (the specification's `performance_metrics`). */
    performanceMetrics: text("performance_metrics", { mode: "json" })
      .$type<Record<string, number>>()
      .notNull(),
    placement: text("placement", { mode: "json" }).$type<Placement>(),
    /** Epoch ms until which an activation prepares this version (hubs load it ahead of the switch). */
    prepareUntil: integer("prepare_until"),
    /** The R2 key of the uploaded artifact; set once, when its hash and size were verified. */
    artifactKey: text("artifact_key"),
    artifactStoredAt: integer("artifact_stored_at", { mode: "timestamp_ms" }),
    createdAt: integer("created_at", { mode: "timestamp_ms" }).notNull(),
    createdBy: text("created_by").notNull(),
  },
  (t) => [uniqueIndex("model_versions_name_version_idx").on(t.name, t.version)],
);
export type ModelVersionRow = typeof modelVersions.$inferSelect;

/** Tags of a model (version '') or of one version. */
export const modelTags = sqliteTable(
  "model_tags",
  {
    name: text("name").notNull(),
    /** '' for a tag of the model itself. */
    version: text("version").notNull().default(""),
    tag: text("tag").notNull(),
  },
  (t) => [primaryKey({ columns: [t.name, t.version, t.tag] })],
);

/** `name@alias` -> version. */
export const modelAliases = sqliteTable(
  "model_aliases",
  {
    name: text("name").notNull(),
    alias: text("alias").notNull(),
    version: text("version").notNull(),
  },
  (t) => [primaryKey({ columns: [t.name, t.alias] })],
);

/** What happens to a model, as model_events.kind. */
export const MODEL_EVENT_KINDS = [
  "registered",
  "artifact_uploaded",
  "artifact_refused",
  "activation_started",
  "activation_failed",
  "activated",
  "deactivated",
  "rolled_back",
  "deployed",
  "metrics_recorded",
  "tags_changed",
  "alias_set",
  "alias_removed",
  "deprecated",
  "archived",
  "load_failed",
  "rollout_started",
  "rollout_changed",
  "rollout_ended",
] as const;
export type ModelEventKind = (typeof MODEL_EVENT_KINDS)[number];

/**
 * Append-only history of the registry (the migration adds triggers refusing UPDATE and DELETE).
 * Every registry change writes one, so max(id) is the registry's revision: the routing table's.
 */
export const modelEvents = sqliteTable(
  "model_events",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    name: text("name").notNull(),
    version: text("version"),
    kind: text("kind").$type<ModelEventKind>().notNull(),
    /** The token's `sub`, or `agent:<id>` for what a hub recorded on an agent's behalf. */
    actor: text("actor").notNull(),
    at: integer("at", { mode: "timestamp_ms" }).notNull(),
    requestId: text("request_id"),
    detail: text("detail", { mode: "json" }).$type<Record<string, unknown>>().notNull(),
  },
  (t) => [index("model_events_name_idx").on(t.name, t.id)],
);
export type ModelEventRow = typeof modelEvents.$inferSelect;

/** Metric history per version: declared at registration, evaluations posted later, live windows. */
export const modelMetrics = sqliteTable(
  "model_metrics",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    modelId: text("model_id").notNull(),
    name: text("name").notNull(),
    version: text("version").notNull(),
    source: text("source").$type<"declared" | "evaluation" | "live">().notNull(),
    /** An evaluation's own name for where its figures come from (POST .../metrics `source`). */
    label: text("label"),
    recordedAt: integer("recorded_at", { mode: "timestamp_ms" }).notNull(),
    pool: text("pool"),
    windowStart: integer("window_start", { mode: "timestamp_ms" }),
    windowEnd: integer("window_end", { mode: "timestamp_ms" }),
    metrics: text("metrics", { mode: "json" }).$type<Record<string, number | null>>().notNull(),
  },
  (t) => [index("model_metrics_version_idx").on(t.name, t.version, t.recordedAt)],
);
export type ModelMetricsRow = typeof modelMetrics.$inferSelect;

/**
 * Deployments and A/B tests (kind). At most one running per model (the partial unique index the
 * migration adds over `running = 1`): a second is refused with 409, however concurrent. `spec` is
 * what was asked (immutable), `state` what the controller made of it so far, `result` the final
 * statistics once it ended.
 */
export const rollouts = sqliteTable(
  "rollouts",
  {
    id: text("id").primaryKey(),
    kind: text("kind").$type<"deployment" | "ab_test">().notNull(),
    /** The model whose traffic it splits (an A/B test's model_a's name). */
    model: text("model").notNull(),
    /** immediate | blue_green | canary | rolling | ab_test */
    strategy: text("strategy").notNull(),
    status: text("status").notNull(),
    /** 1 while running (the one-per-model index), 0 once ended. */
    running: integer("running", { mode: "boolean" }).notNull(),
    spec: text("spec", { mode: "json" }).$type<Record<string, unknown>>().notNull(),
    state: text("state", { mode: "json" }).$type<Record<string, unknown>>().notNull(),
    result: text("result", { mode: "json" }).$type<Record<string, unknown>>(),
    createdBy: text("created_by").notNull(),
    createdAt: integer("created_at", { mode: "timestamp_ms" }).notNull(),
    updatedAt: integer("updated_at", { mode: "timestamp_ms" }).notNull(),
    /** An A/B test's planned end (duration_hours); null for deployments. */
    endsAt: integer("ends_at", { mode: "timestamp_ms" }),
    endedAt: integer("ended_at", { mode: "timestamp_ms" }),
  },
  (t) => [
    index("rollouts_kind_created_idx").on(t.kind, t.createdAt),
    uniqueIndex("rollouts_one_running_per_model_idx").on(t.model).where(sql`running = 1`),
  ],
);
export type RolloutRow = typeof rollouts.$inferSelect;

/** Append-only history of each rollout: every decision with its numbers, and who made it. */
export const rolloutEvents = sqliteTable(
  "rollout_events",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    rolloutId: text("rollout_id").notNull(),
    at: integer("at", { mode: "timestamp_ms" }).notNull(),
    /** The token's `sub`, or `controller` for the controller's own decisions. */
    actor: text("actor").notNull(),
    kind: text("kind").notNull(),
    requestId: text("request_id"),
    detail: text("detail", { mode: "json" }).$type<Record<string, unknown>>().notNull(),
  },
  (t) => [index("rollout_events_rollout_idx").on(t.rolloutId, t.id)],
);
export type RolloutEventRow = typeof rolloutEvents.$inferSelect;

// ---- input and output security (issue 12) ----

/**
 * The admins' prompt-injection policy lines (PUT /security/injection-policy), over INJECTION_POLICY's:
 * one per scope, route and model "" meaning any (a primary key over NULLs would not be unique).
 * Every Worker isolate reads the table at most every INJECTION_POLICY_CACHE_MS.
 */
export const injectionPolicies = sqliteTable(
  "injection_policies",
  {
    /** "generate", "chat", or "" for every route. */
    route: text("route").notNull(),
    /** A model name (covering its versions and aliases), a name:version or name@alias, or "" for every model. */
    model: text("model").notNull(),
    mode: text("mode").$type<"off" | "flag" | "block">().notNull(),
    updatedAt: integer("updated_at", { mode: "timestamp_ms" }).notNull(),
    /** The admin (token `sub`) who set it. */
    updatedBy: text("updated_by").notNull(),
  },
  (t) => [primaryKey({ columns: [t.route, t.model] })],
);

/**
 * ml_inference_injection_detections_total: prompts the injection rules flagged or blocked, by route,
 * the rule that scored most, and the mode. Counted from the Worker (a blocked prompt never reaches a
 * hub), so in D1, where every isolate adds to the same row.
 */
export const injectionDetections = sqliteTable(
  "injection_detections",
  {
    route: text("route").notNull(),
    rule: text("rule").notNull(),
    mode: text("mode").notNull(),
    count: integer("count").notNull(),
  },
  (t) => [primaryKey({ columns: [t.route, t.rule, t.mode] })],
);

// ---- structured outputs (issue 13) ----

/**
 * Schemas registered by name (POST /schemas), which POST /generate/structured's `schema` may name.
 * Checked with the gateway's schema check when registered; a name holds one schema for good
 * (re-registering the same schema is accepted, another one is SCHEMA_EXISTS) until deleted.
 */
export const structuredSchemas = sqliteTable("structured_schemas", {
  name: text("name").primaryKey(),
  /** The JSON Schema as JSON text (at most SchemaLimits.maxBytes). */
  schema: text("schema").notNull(),
  description: text("description"),
  createdAt: integer("created_at", { mode: "timestamp_ms" }).notNull(),
  /** The admin (token `sub`) who registered it. */
  createdBy: text("created_by").notNull(),
});
export type StructuredSchemaRow = typeof structuredSchemas.$inferSelect;
