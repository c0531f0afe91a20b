// GET /health (liveness, always 200, reports what is degraded) and GET /ready (200 only when D1
// answers and at least one agent serves a model). Neither needs a token.
import { Hono } from "hono";
import type { z } from "zod";
import type { HealthResponse } from "../../schema/api.ts";
import { readConfig } from "../config.ts";
import type { HubSnapshot } from "../hub/dispatch.ts";
import { poolHub } from "../inference/hub-client.ts";
import { describeError, log } from "../log.ts";
import type { AppEnv } from "../types.ts";

const NO_STORE = { "Cache-Control": "no-store" };

export const healthRoutes = new Hono<AppEnv>()
  .get("/health", async (c) => {
    const [d1, hub] = await Promise.all([checkD1(c.env), hubSnapshot(c.env)]);
    const body: z.infer<typeof HealthResponse> = {
      status: d1 === "ok" && hub !== null ? "ok" : "degraded",
      version: readConfig(c.env).version,
      d1,
      agentsConnected: hub?.agents.filter((a) => a.ready).length ?? 0,
    };
    return c.json(body, 200, NO_STORE);
  })
  .get("/ready", async (c) => {
    const [d1, hub] = await Promise.all([checkD1(c.env), hubSnapshot(c.env)]);
    const models = hub?.models.map((m) => m.id) ?? [];
    const reason =
      d1 !== "ok"
        ? "D1 is not answering"
        : hub === null
          ? "the agent pool is not answering"
          : models.length === 0
            ? "no connected agent serves a model"
            : undefined;
    return c.json(
      { ready: reason === undefined, reason, d1, models },
      reason === undefined ? 200 : 503,
      NO_STORE,
    );
  });

async function checkD1(env: Env): Promise<"ok" | "error"> {
  try {
    await env.DB.prepare("SELECT 1").first();
    return "ok";
  } catch (err) {
    log("error", "D1 health check failed", describeError(err));
    return "error";
  }
}

async function hubSnapshot(env: Env): Promise<HubSnapshot | null> {
  try {
    return await poolHub(env).snapshot();
  } catch (err) {
    log("error", "hub health check failed", describeError(err));
    return null;
  }
}
