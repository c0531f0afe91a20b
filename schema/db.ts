// D1 tables (drizzle). Migrations in ./migrations are generated from this file by drizzle-kit.
import { sql } from "drizzle-orm";
import { index, integer, sqliteTable, text } from "drizzle-orm/sqlite-core";

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
  (t) => [index("audit_log_target_idx").on(t.target, t.at), index("audit_log_at_idx").on(t.at)],
);
export type AuditLogRow = typeof auditLog.$inferSelect;
