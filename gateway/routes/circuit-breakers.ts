// /circuit-breaker (role admin): every pool's breakers as they stand, and resetting them by hand
// after an agent or a model was fixed (in whichever pool holds them).
import { Hono } from "hono";
import { BreakerResetRequest, type BreakerStatusResponse } from "../../schema/api.ts";
import { GatewayError } from "../errors.ts";
import { askPools } from "../inference/hub-client.ts";
import { auth } from "../middleware/auth/index.ts";
import { jsonBody } from "../middleware/json-body/index.ts";
import type { AppEnv } from "../types.ts";

/** A hub slower than this is reported unreachable rather than holding the request. */
const HUB_TIMEOUT_MS = 5_000;

export const circuitBreakerRoutes = new Hono<AppEnv>()
  .get("/status", auth({ role: "admin" }), async (c) => {
    const answers = await askPools(c.env, (hub) => hub.breakerStatus(), { timeoutMs: HUB_TIMEOUT_MS });
    const body: BreakerStatusResponse = {
      breakers: answers.flatMap(({ pool, answer }) => (answer ?? []).map((b) => ({ pool: pool.name, ...b }))),
    };
    const unreachable = answers.filter((a) => a.answer === null).map((a) => a.pool.name);
    if (unreachable.length > 0) body.unreachablePools = unreachable;
    return c.json(body, 200, { "Cache-Control": "no-store" });
  })
  .post("/reset", auth({ role: "admin" }), jsonBody(BreakerResetRequest), async (c) => {
    const selector = c.get("body");
    // An agent belongs to one pool, but which one is the hubs' to know: ask every pool. The
    // answer is wrapped so a hub that did not answer (null) differs from one without the breaker.
    const answers = await askPools(c.env, async (hub) => ({ reset: await hub.resetBreakers(selector) }), {
      timeoutMs: HUB_TIMEOUT_MS,
    });
    const unreachable = answers.filter((a) => a.answer === null).map((a) => a.pool.name);
    const resets = answers.flatMap((a) => (a.answer?.reset ? [a.answer.reset.reset] : []));
    const result =
      resets.length === 0 && unreachable.length === 0
        ? null
        : {
            reset: resets.reduce((n, r) => n + r, 0),
            ...(unreachable.length > 0 ? { unreachablePools: unreachable } : {}),
          };
    if (result === null) {
      const what =
        selector.model === undefined
          ? `agent "${selector.agentId}"`
          : `agent "${selector.agentId}" and model "${selector.model}"`;
      throw new GatewayError("BREAKER_NOT_FOUND", `no circuit breaker for ${what}`);
    }
    return c.json(result);
  });
