// POST /agents/:id/revoke and /restore, GET /agents/:id/events (role admin): an agent's revocation,
// written to D1 together with its row in the append-only audit log (middleware/audit's auditRow),
// and the live socket closed.
import { and, desc, eq, isNull } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import { type DrizzleD1Database, drizzle } from "drizzle-orm/d1";
import type { Context } from "hono";
import { Hono } from "hono";
import { z } from "zod";
import {
  type AgentEventsResponse,
  AgentId,
  type AgentRevocation,
  AgentRevocationRequest,
  type AgentRevokeResponse,
} from "../../schema/api.ts";
import { type AgentRow, agents, auditLog } from "../../schema/db.ts";
import { CloseCode } from "../../schema/protocol.ts";
import { GatewayError } from "../errors.ts";
import { poolHub } from "../inference/hub-client.ts";
import { describeError, log } from "../log.ts";
import { auditRow, markAudited } from "../middleware/audit/index.ts";
import { auth } from "../middleware/auth/index.ts";
import { jsonBody } from "../middleware/json-body/index.ts";
import type { AppEnv, Caller } from "../types.ts";

const EventsLimit = z.coerce.number().int().min(1).max(500).default(50);
const optionalReason = jsonBody(AgentRevocationRequest, { whenAbsent: {} });

export const agentRevocationRoutes = new Hono<AppEnv>()
  .post("/:id/revoke", auth({ role: "admin" }), optionalReason, async (c) => {
    const { reason = null } = c.get("body");
    const row = await changeAgent(actionOf(c), "agent.revoke", (db, agentId, before, at, actor) => ({
      // A repeated revoke changes nothing (the first revokedAt, actor and reason stay), but is
      // recorded as asked.
      update: db
        .update(agents)
        .set({ revokedAt: at, revokedBy: actor, revokeReason: reason })
        .where(and(eq(agents.id, agentId), isNull(agents.revokedAt))),
      detail: { reason, alreadyRevoked: before.revokedAt !== null, pool: before.pool },
    }));
    // Closes a live connection with REVOKED (terminal: the agent does not retry) and fails its
    // requests over. If the hub does not answer, the revoke stands in D1 but a socket may still be
    // open: the admin must hear that, and repeating the revoke is safe.
    let disconnected: boolean;
    try {
      disconnected = await poolHub(c.env, row.pool).disconnectAgent(
        row.id,
        CloseCode.REVOKED,
        "agent revoked",
      );
    } catch (err) {
      log("error", "revoke: the pool did not answer", {
        agentId: row.id,
        pool: row.pool,
        ...describeError(err),
      });
      throw new GatewayError(
        "UPSTREAM_ERROR",
        "the agent is revoked, but its pool did not answer to close a live connection; repeat the revoke",
      );
    }
    log("info", "agent revoked", {
      agentId: row.id,
      actor: c.get("caller").sub,
      pool: row.pool,
      disconnected,
    });
    return c.json({ ...revocation(row), disconnected } satisfies AgentRevokeResponse);
  })
  .post("/:id/restore", auth({ role: "admin" }), optionalReason, async (c) => {
    const { reason = null } = c.get("body");
    const row = await changeAgent(actionOf(c), "agent.restore", (db, agentId, before) => ({
      update: db
        .update(agents)
        .set({ revokedAt: null, revokedBy: null, revokeReason: null })
        .where(eq(agents.id, agentId)),
      detail: {
        reason,
        wasRevoked: before.revokedAt !== null,
        revokedAt: before.revokedAt?.toISOString() ?? null,
        revokedBy: before.revokedBy,
      },
    }));
    log("info", "agent restored", { agentId: row.id, actor: c.get("caller").sub });
    return c.json(revocation(row) satisfies AgentRevocation);
  })
  .get("/:id/events", auth({ role: "admin" }), async (c) => {
    const agentId = agentIdParam(c.req.param("id"));
    const limit = EventsLimit.safeParse(c.req.query("limit"));
    if (!limit.success) throw new GatewayError("INVALID_REQUEST", "limit: 1 to 500", { param: "limit" });
    const db = drizzle(c.env.DB);
    const row = await knownAgent(db, agentId);
    const events = await db
      .select()
      .from(auditLog)
      .where(eq(auditLog.target, agentTarget(agentId)))
      .orderBy(desc(auditLog.at), desc(auditLog.id))
      .limit(limit.data);
    const body = {
      agentId,
      agent: { ...revocation(row), pool: row.pool, lastSeenAt: row.lastSeenAt?.toISOString() ?? null },
      events: events.map(({ at, ...event }) => ({ ...event, at: at.toISOString() })),
    } satisfies AgentEventsResponse;
    return c.json(body, 200, { "Cache-Control": "no-store" });
  });

type AuditedAction = "agent.revoke" | "agent.restore";

type Db = DrizzleD1Database;

/** The change an action makes to an agent's row, and what its audit row records about it. */
type AgentChange = (
  db: Db,
  agentId: string,
  before: AgentRow,
  at: Date,
  actor: string,
) => { update: BatchItem<"sqlite">; detail: Record<string, unknown> };

/** Who acts on which agent, in which request. */
interface AdminAction {
  d1: D1Database;
  /** The path's `:id`, not yet validated. */
  agentId: string;
  actor: Caller;
  requestId: string;
}

type RevocationContext = Context<
  AppEnv & { Variables: { body: AgentRevocationRequest } },
  "/:id/revoke" | "/:id/restore"
>;

/** The action of this request; its audit row is written with the change (not by the audit middleware). */
function actionOf(c: RevocationContext): AdminAction {
  markAudited(c);
  return { d1: c.env.DB, agentId: c.req.param("id"), actor: c.get("caller"), requestId: c.get("requestId") };
}

/**
 * Applies an admin action to the agent named by the path: its row change and its audit row (the
 * actor and role from the token, the time, the request id) commit together in one D1 batch, or
 * neither does. 404 AGENT_NOT_FOUND for an agent the gateway has never seen. The row after.
 */
async function changeAgent(
  { d1, agentId: rawId, actor, requestId }: AdminAction,
  action: AuditedAction,
  change: AgentChange,
): Promise<AgentRow> {
  const agentId = agentIdParam(rawId);
  const db = drizzle(d1);
  const before = await knownAgent(db, agentId);
  const at = new Date();
  const { update, detail } = change(db, agentId, before, at, actor.sub);
  const [, , after] = await db.batch([
    update,
    db
      .insert(auditLog)
      .values(auditRow({ at, actor, action, target: agentTarget(agentId), requestId, detail })),
    db.select().from(agents).where(eq(agents.id, agentId)),
  ]);
  return after[0] ?? before;
}

function agentIdParam(raw: string): string {
  const parsed = AgentId.safeParse(raw);
  if (!parsed.success) throw new GatewayError("INVALID_REQUEST", "id: 1 to 128 characters", { param: "id" });
  return parsed.data;
}

async function knownAgent(db: Db, agentId: string): Promise<AgentRow> {
  const row = await db.select().from(agents).where(eq(agents.id, agentId)).get();
  if (row === undefined) throw new GatewayError("AGENT_NOT_FOUND", `no agent "${agentId}"`);
  return row;
}

/** The audit log's name for an agent (targets are "<kind>:<id>"). */
const agentTarget = (agentId: string) => `agent:${agentId}`;

function revocation(row: AgentRow): AgentRevocation {
  return {
    agentId: row.id,
    revoked: row.revokedAt !== null,
    revokedAt: row.revokedAt?.toISOString() ?? null,
    revokedBy: row.revokedBy,
    reason: row.revokeReason,
  };
}
