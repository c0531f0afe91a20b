// D1 tables (drizzle). Migrations in ./migrations are generated from this file by drizzle-kit.
import { sql } from "drizzle-orm";
import { index, integer, sqliteTable, text } from "drizzle-orm/sqlite-core";

/**
 * Node agents known to the gateway. A row is created on an agent's first connection; an admin
 * revokes it by setting revoked_at, after which the agent is refused at connect.
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
  },
  (t) => [index("agents_pool_idx").on(t.pool)],
);
export type AgentRow = typeof agents.$inferSelect;
