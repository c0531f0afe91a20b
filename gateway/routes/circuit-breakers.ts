// /circuit-breaker (role admin): the pool's breakers as they stand, and resetting them by hand
// after an agent or a model was fixed.
import { Hono } from "hono";
import { BreakerResetRequest, type BreakerStatusResponse } from "../../schema/api.ts";
import { GatewayError } from "../errors.ts";
import { poolHub } from "../inference/hub-client.ts";
import { auth } from "../middleware/auth/index.ts";
import { jsonBody } from "../middleware/json-body/index.ts";
import type { AppEnv } from "../types.ts";

export const circuitBreakerRoutes = new Hono<AppEnv>()
  .get("/status", auth({ role: "admin" }), async (c) => {
    const body: BreakerStatusResponse = { breakers: await poolHub(c.env).breakerStatus() };
    return c.json(body, 200, { "Cache-Control": "no-store" });
  })
  .post("/reset", auth({ role: "admin" }), jsonBody(BreakerResetRequest), async (c) => {
    const selector = c.get("body");
    const result = await poolHub(c.env).resetBreakers(selector);
    if (result === null) {
      const what =
        selector.model === undefined
          ? `agent "${selector.agentId}"`
          : `agent "${selector.agentId}" and model "${selector.model}"`;
      throw new GatewayError("BREAKER_NOT_FOUND", `no circuit breaker for ${what}`);
    }
    return c.json(result);
  });
