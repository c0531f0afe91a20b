// PUT /models/:model_id/artifact (admin) streams a version's weights into R2; GET (agent or admin)
// serves them with Range, so agents resume interrupted downloads.
import type { MiddlewareHandler } from "hono";
import { Hono } from "hono";
import { GatewayError } from "../errors.ts";
import { auth } from "../middleware/auth/index.ts";
import { serveArtifact, storeArtifact } from "../registry/artifacts.ts";
import { registryDb, resolveVersion } from "../registry/versions.ts";
import type { AppEnv } from "../types.ts";

const asAgent = auth({ role: "agent" });
const asAdmin = auth({ role: "admin" });

/** Agents fetch artifacts with their own token; admins may too (to check an upload). */
const agentOrAdmin: MiddlewareHandler<AppEnv> = async (c, next) => {
  let verified = false;
  try {
    await asAgent(c, async () => {
      verified = true;
    });
  } catch (err) {
    if (!(err instanceof GatewayError && err.code === "FORBIDDEN")) throw err;
  }
  if (!verified) {
    try {
      await asAdmin(c, async () => {
        verified = true;
      });
    } catch (err) {
      if (err instanceof GatewayError && err.code === "FORBIDDEN") {
        throw new GatewayError("FORBIDDEN", "this route requires role agent or admin");
      }
      throw err;
    }
  }
  await next();
};

export const modelArtifactRoutes = new Hono<AppEnv>()
  .put("/:model_id/artifact", asAdmin, async (c) => {
    const row = await resolveVersion(registryDb(c.env.DB), c.req.param("model_id"));
    const stored = await storeArtifact(c.env, row, c.req.raw, {
      sub: c.get("caller").sub,
      requestId: c.get("requestId"),
    });
    return c.json(stored, 201);
  })
  .get("/:model_id/artifact", agentOrAdmin, async (c) => {
    const row = await resolveVersion(registryDb(c.env.DB), c.req.param("model_id"));
    return serveArtifact(c.env, row, c.req.raw);
  });
