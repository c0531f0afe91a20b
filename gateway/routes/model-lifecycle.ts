// POST /models/:model_id/activate, /deprecate, /archive and /models/:name/rollback, /deactivate
// (role admin): the registry decides which version serves a name, and every hub follows.
import type { Context } from "hono";
import { Hono } from "hono";
import { ActivateRequest } from "../../schema/registry-api.ts";
import { auth } from "../middleware/auth/index.ts";
import { jsonBody } from "../middleware/json-body/index.ts";
import { activate, deactivate, retire, rollback } from "../registry/lifecycle.ts";
import { type Actor, registryDb, resolveVersion } from "../registry/versions.ts";
import type { AppEnv } from "../types.ts";

const admin = auth({ role: "admin" });

export function actorOf<E extends AppEnv>(c: Context<E>): Actor {
  return { sub: c.get("caller").sub, requestId: c.get("requestId") };
}

export const modelLifecycleRoutes = new Hono<AppEnv>()
  .post("/:model_id/activate", admin, jsonBody(ActivateRequest, { whenAbsent: {} }), async (c) => {
    const row = await resolveVersion(registryDb(c.env.DB), c.req.param("model_id"));
    return c.json(await activate(c.env, row, c.get("body"), actorOf(c)));
  })
  .post("/:name/rollback", admin, async (c) => c.json(await rollback(c.env, c.req.param("name"), actorOf(c))))
  .post("/:name/deactivate", admin, async (c) =>
    c.json(await deactivate(c.env, c.req.param("name"), actorOf(c))),
  )
  .post("/:model_id/deprecate", admin, async (c) => {
    const row = await resolveVersion(registryDb(c.env.DB), c.req.param("model_id"));
    return c.json(await retire(c.env, row, "deprecated", actorOf(c)));
  })
  .post("/:model_id/archive", admin, async (c) => {
    const row = await resolveVersion(registryDb(c.env.DB), c.req.param("model_id"));
    return c.json(await retire(c.env, row, "archived", actorOf(c)));
  });
