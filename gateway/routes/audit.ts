// GET /audit (role admin): the audit trail of admin actions, newest first, a page at a time,
// optionally of one target, actor or action (rows written by middleware/audit and the routes that
// audit their own changes).
import { and, desc, eq, lt } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { type AuditList, AuditQuery } from "../../schema/api.ts";
import { auditLog } from "../../schema/db.ts";
import { auth } from "../middleware/auth/index.ts";
import { invalidRequest } from "../middleware/json-body/index.ts";
import type { AppEnv } from "../types.ts";

export const auditRoutes = new Hono<AppEnv>().get("/", auth({ role: "admin" }), async (c) => {
  const query = AuditQuery.safeParse(c.req.query());
  if (!query.success) throw invalidRequest(query.error);
  const { limit, before, target, actor, action } = query.data;
  const rows = await drizzle(c.env.DB)
    .select()
    .from(auditLog)
    .where(
      and(
        before === undefined ? undefined : lt(auditLog.id, before),
        target === undefined ? undefined : eq(auditLog.target, target),
        actor === undefined ? undefined : eq(auditLog.actor, actor),
        action === undefined ? undefined : eq(auditLog.action, action),
      ),
    )
    .orderBy(desc(auditLog.id))
    .limit(limit + 1);
  const page = rows.slice(0, limit);
  const body = {
    events: page.map(({ at, ...event }) => ({ ...event, at: at.toISOString() })),
    nextBefore: rows.length > limit ? (page.at(-1)?.id ?? null) : null,
  } satisfies AuditList;
  return c.json(body, 200, { "Cache-Control": "no-store" });
});
