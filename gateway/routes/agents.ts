// /agents: the agents' WebSocket entry point (role agent) and the live agent list over every pool
// (role admin); revoking and restoring an agent are in agent-revocation.ts, mounted here.
import { eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { z } from "zod";
import type { AgentsResponse, PoolSummary } from "../../schema/agents-api.ts";
import { agents } from "../../schema/db.ts";
import { DEFAULT_POOL, HubHeader, type HubSnapshot } from "../../schema/hub.ts";
import { CloseCode } from "../../schema/protocol.ts";
import { readConfig } from "../config.ts";
import { GatewayError } from "../errors.ts";
import { addMetrics, emptyMetrics } from "../hub/hub-metrics.ts";
import { observePools, poolHub } from "../inference/hub-client.ts";
import { auth } from "../middleware/auth/index.ts";
import type { AppEnv } from "../types.ts";
import { agentRevocationRoutes } from "./agent-revocation.ts";

// No control characters: the name travels to the hub in a header, where NUL, CR and LF are refused
// (a TypeError, so a 500: found by the HTTP fuzz, seed 1100528108), and into log lines.
const AgentName = z
  .string()
  .trim()
  .min(1)
  .max(128)
  .regex(/^[^\p{Cc}]*$/u);

export const agentRoutes = new Hono<AppEnv>()
  .get("/connect", auth({ role: "agent" }), async (c) => {
    if (c.req.header("Upgrade")?.toLowerCase() !== "websocket") {
      throw new GatewayError("UPGRADE_REQUIRED", "GET /agents/connect expects a WebSocket upgrade", {
        headers: { Upgrade: "websocket" },
      });
    }
    const caller = c.get("caller");
    const agentId = caller.sub;
    const nameParam = c.req.query("name");
    const name = nameParam === undefined ? undefined : AgentName.safeParse(nameParam);
    if (name?.success === false) {
      throw new GatewayError("INVALID_REQUEST", "name: 1 to 128 characters, no control characters", {
        param: "name",
      });
    }

    const db = drizzle(c.env.DB);
    const row = await db.select().from(agents).where(eq(agents.id, agentId)).get();
    if (row?.revokedAt != null) throw new GatewayError("AGENT_REVOKED", "this agent has been revoked");
    const pool = row?.pool ?? DEFAULT_POOL;
    const pools = readConfig(c.env).pools;
    if (!pools.byName.has(pool)) {
      throw new GatewayError("POOL_NOT_CONFIGURED", `this agent's pool "${pool}" is not configured`);
    }
    const displayName = name?.data ?? agentId;
    await db
      .insert(agents)
      .values({ id: agentId, name: displayName, pool })
      .onConflictDoUpdate({ target: agents.id, set: { name: displayName } });

    const hub = poolHub(c.env, pool, pools);
    const upgrade = await hub.fetch("https://hub/connect", {
      headers: {
        Upgrade: "websocket",
        [HubHeader.agentId]: agentId,
        [HubHeader.agentName]: displayName,
        [HubHeader.pool]: pool,
        [HubHeader.tokenExp]: String(caller.exp),
      },
    });
    // A revoke that landed between the check above and the hub accepting the socket found nothing
    // to close: look again now that the socket is live (a revoke after this read closes it itself).
    if (upgrade.status === 101) {
      const now = await db
        .select({ revokedAt: agents.revokedAt })
        .from(agents)
        .where(eq(agents.id, agentId))
        .get();
      if (now?.revokedAt != null) await hub.disconnectAgent(agentId, CloseCode.REVOKED, "agent revoked");
    }
    return upgrade;
  })
  .get("/", auth({ role: "admin" }), async (c) => {
    const observed = await observePools(c.env);
    const pools = observed.map(({ pool, snapshot }) => ({
      pool: pool.name,
      locationHint: pool.locationHint ?? null,
      reachable: snapshot !== null,
      ...poolSummary(snapshot),
    }));
    const body = {
      agents: observed.flatMap((o) => o.snapshot?.agents ?? []),
      summary: sumPools(pools),
      pools,
    } satisfies AgentsResponse;
    return c.json(body, 200, { "Cache-Control": "no-store" });
  })
  .route("/", agentRevocationRoutes);

/** What one pool reports in /agents (zeros for a pool whose hub did not answer). */
function poolSummary(snapshot: HubSnapshot | null): PoolSummary {
  if (snapshot === null) {
    return { connected: 0, ready: 0, models: [], queue: { total: 0, byModel: {} }, metrics: emptyMetrics() };
  }
  return {
    connected: snapshot.agents.length,
    ready: snapshot.agents.filter((a) => a.ready).length,
    models: snapshot.models.map((m) => m.id),
    queue: snapshot.queue,
    metrics: snapshot.metrics,
  };
}

/** The pools' summaries added up: counts summed (per model too), models merged. */
function sumPools(pools: readonly PoolSummary[]): PoolSummary {
  const total = poolSummary(null);
  const models = new Set<string>();
  for (const pool of pools) {
    total.connected += pool.connected;
    total.ready += pool.ready;
    for (const model of pool.models) models.add(model);
    total.queue.total += pool.queue.total;
    addCounts(total.queue.byModel, pool.queue.byModel);
    addMetrics(total.metrics, pool.metrics);
  }
  total.models = [...models].sort();
  return total;
}

function addCounts<K extends string>(into: Record<K, number>, from: Record<K, number>): void {
  for (const key of Object.keys(from) as K[]) into[key] = (into[key] ?? 0) + from[key];
}
