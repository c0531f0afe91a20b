// /agents: the agents' WebSocket entry point (role agent) and the live agent list (role admin).
import { eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { z } from "zod";
import { agents } from "../../schema/db.ts";
import { GatewayError } from "../errors.ts";
import { DEFAULT_POOL, HubHeader } from "../hub/dispatch.ts";
import { poolHub } from "../inference/hub-client.ts";
import { auth } from "../middleware/auth/index.ts";
import type { AppEnv } from "../types.ts";

const AgentName = z.string().trim().min(1).max(128);

export const agentRoutes = new Hono<AppEnv>()
  .get("/connect", auth({ role: "agent" }), async (c) => {
    if (c.req.header("Upgrade")?.toLowerCase() !== "websocket") {
      throw new GatewayError("UPGRADE_REQUIRED", "GET /agents/connect expects a WebSocket upgrade", {
        headers: { Upgrade: "websocket" },
      });
    }
    const agentId = c.get("caller").sub;
    const nameParam = c.req.query("name");
    const name = nameParam === undefined ? undefined : AgentName.safeParse(nameParam);
    if (name?.success === false) {
      throw new GatewayError("INVALID_REQUEST", "name: 1 to 128 characters", { param: "name" });
    }

    const db = drizzle(c.env.DB);
    const row = await db.select().from(agents).where(eq(agents.id, agentId)).get();
    if (row?.revokedAt != null) throw new GatewayError("AGENT_REVOKED", "this agent has been revoked");
    const displayName = name?.data ?? agentId;
    const pool = row?.pool ?? DEFAULT_POOL;
    await db
      .insert(agents)
      .values({ id: agentId, name: displayName, pool })
      .onConflictDoUpdate({ target: agents.id, set: { name: displayName } });

    return poolHub(c.env, pool).fetch("https://hub/connect", {
      headers: {
        Upgrade: "websocket",
        [HubHeader.agentId]: agentId,
        [HubHeader.agentName]: displayName,
        [HubHeader.pool]: pool,
      },
    });
  })
  .get("/", auth({ role: "admin" }), async (c) => {
    const snapshot = await poolHub(c.env).snapshot();
    return c.json({
      pool: DEFAULT_POOL,
      agents: snapshot.agents,
      summary: {
        connected: snapshot.agents.length,
        ready: snapshot.agents.filter((a) => a.ready).length,
        models: snapshot.models.map((m) => m.id),
        queue: snapshot.queue,
        metrics: snapshot.metrics,
      },
    });
  });
