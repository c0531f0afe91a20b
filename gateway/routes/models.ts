// /models: the model registry. Reads for role user (and admin); writes for admin; artifacts for
// agents too. Registration, metrics, tags and aliases here; the lifecycle and artifacts in their
// own sub-apps, mounted first so `/:model_id/artifact` is not read as `/:name/:version`.
import type { MiddlewareHandler } from "hono";
import { Hono } from "hono";
import { ModelIdError, parseModelId } from "../../schema/model-id.ts";
import {
  AliasName,
  AliasRequest,
  MetricsRequest,
  RegisterRequest,
  RegistryLimits,
  Tag,
} from "../../schema/registry-api.ts";
import { readConfig } from "../config.ts";
import { GatewayError } from "../errors.ts";
import { auth } from "../middleware/auth/index.ts";
import { invalidRequest, jsonBody } from "../middleware/json-body/index.ts";
import { lineage, listModels, modelDetail, servingAt, versionDetail } from "../registry/catalog.ts";
import { changeTag, removeAlias, setAlias, type TagTarget } from "../registry/labels.ts";
import { publishRoutingTable } from "../registry/publish.ts";
import { recordEvaluation, registerVersion } from "../registry/registration.ts";
import { registryDb, resolveVersion } from "../registry/versions.ts";
import type { AppEnv } from "../types.ts";
import { modelArtifactRoutes } from "./model-artifacts.ts";
import { actorOf, modelLifecycleRoutes } from "./model-lifecycle.ts";
import { modelDeployRoutes } from "./rollouts.ts";

const user = auth({ role: "user" });
const admin = auth({ role: "admin" });

/** A registry body over RegistryLimits.maxBodyBytes is METADATA_TOO_LARGE, like every other metadata limit. */
function registryBody<S extends Parameters<typeof jsonBody>[0]>(schema: S) {
  const parse = jsonBody(schema, { maxBytes: RegistryLimits.maxBodyBytes });
  const handler: typeof parse = async (c, next) => {
    try {
      return await parse(c, next);
    } catch (err) {
      if (err instanceof GatewayError && err.code === "PAYLOAD_TOO_LARGE") {
        throw new GatewayError(
          "METADATA_TOO_LARGE",
          `registry bodies are limited to ${RegistryLimits.maxBodyBytes} bytes`,
        );
      }
      throw err;
    }
  };
  return handler;
}

const tagParam: MiddlewareHandler<AppEnv> = async (c, next) => {
  const parsed = Tag.safeParse(c.req.param("tag"));
  if (!parsed.success) throw invalidRequest(parsed.error);
  await next();
};

const aliasParam: MiddlewareHandler<AppEnv> = async (c, next) => {
  const parsed = AliasName.safeParse(c.req.param("alias"));
  if (!parsed.success) throw invalidRequest(parsed.error);
  await next();
};

export const modelRoutes = new Hono<AppEnv>()
  .route("/", modelArtifactRoutes)
  .route("/", modelLifecycleRoutes)
  .route("/", modelDeployRoutes)
  .post("/register", admin, registryBody(RegisterRequest), async (c) => {
    const registered = await registerVersion(registryDb(c.env.DB), c.get("body"), actorOf(c));
    await publishRoutingTable(c.env);
    return c.json(registered, 201);
  })
  .get("/", user, async (c) =>
    c.json({ models: await listModels(registryDb(c.env.DB), readConfig(c.env).pools) }),
  )
  .get("/:name/lineage", user, async (c) => c.json(await lineage(registryDb(c.env.DB), c.req.param("name"))))
  .get("/:name/serving", user, async (c) =>
    c.json(await servingAt(registryDb(c.env.DB), c.req.param("name"), instant(c.req.query("at")))),
  )
  .get("/:name", user, async (c) =>
    c.json(await modelDetail(registryDb(c.env.DB), c.req.param("name"), readConfig(c.env).pools)),
  )
  .get("/:name/:version", user, async (c) =>
    c.json(await versionDetail(registryDb(c.env.DB), c.req.param("name"), c.req.param("version"))),
  )
  .post("/:model_id/metrics", admin, registryBody(MetricsRequest), async (c) => {
    const db = registryDb(c.env.DB);
    const row = await resolveVersion(db, c.req.param("model_id"));
    return c.json(await recordEvaluation(db, row, c.get("body"), actorOf(c)), 201);
  })
  .put("/:target/tags/:tag", admin, tagParam, tagChange("add"))
  .delete("/:target/tags/:tag", admin, tagParam, tagChange("remove"))
  .put("/:name/aliases/:alias", admin, aliasParam, jsonBody(AliasRequest), async (c) => {
    const db = registryDb(c.env.DB);
    const result = await setAlias(
      db,
      c.req.param("name"),
      c.req.param("alias"),
      c.get("body").version,
      actorOf(c),
    );
    await publishRoutingTable(c.env);
    return c.json(result);
  })
  .delete("/:name/aliases/:alias", admin, aliasParam, async (c) => {
    const result = await removeAlias(
      registryDb(c.env.DB),
      c.req.param("name"),
      c.req.param("alias"),
      actorOf(c),
    );
    await publishRoutingTable(c.env);
    return c.json(result);
  });

/** PUT adds the path's tag to its target, DELETE removes it; the answer is the target's tags after. */
function tagChange(op: "add" | "remove"): MiddlewareHandler<AppEnv, "/:target/tags/:tag"> {
  return async (c) => {
    const target = await tagTarget(c.env.DB, c.req.param("target"));
    const result = await changeTag(registryDb(c.env.DB), target, c.req.param("tag"), op, actorOf(c));
    if (result.changed) await publishRoutingTable(c.env);
    return c.json(result);
  };
}

/** A tag's target in the path: `name@alias` or `name:version` is a version, anything else a model. */
async function tagTarget(d1: D1Database, text: string): Promise<TagTarget> {
  let versioned = text.includes("@");
  if (!versioned) {
    try {
      versioned = parseModelId(text).version !== null;
    } catch (err) {
      if (!(err instanceof ModelIdError)) throw err;
    }
  }
  if (!versioned) return { name: text, version: null };
  const row = await resolveVersion(registryDb(d1), text);
  return { name: row.name, version: row.version };
}

/** `at` as ISO 8601 or epoch milliseconds; absent: now. Anything else is 400 INVALID_TIME. */
function instant(raw: string | undefined): Date {
  if (raw === undefined) return new Date();
  const ms = /^\d{1,15}$/.test(raw)
    ? Number(raw)
    : /^\d{4}-\d{2}-\d{2}/.test(raw)
      ? Date.parse(raw)
      : Number.NaN;
  if (!Number.isFinite(ms)) {
    throw new GatewayError("INVALID_TIME", "at is an ISO 8601 time or epoch milliseconds", { param: "at" });
  }
  return new Date(ms);
}
