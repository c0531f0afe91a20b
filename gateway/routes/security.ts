// /security (role admin): the prompt-injection policy. GET shows every line (INJECTION_POLICY's and
// the admins') and the mode each route gets, for ?model= when given; PUT sets or (mode null)
// removes the admin line of one scope, in D1, seen by every isolate within the policy cache's TTL.
import { Hono } from "hono";
import { ModelName } from "../../schema/protocol.ts";
import {
  type InjectionPolicyLine,
  InjectionPolicyRequest,
  type InjectionPolicyResponse,
} from "../../schema/security-api.ts";
import { GatewayError } from "../errors.ts";
import { log } from "../log.ts";
import { auth } from "../middleware/auth/index.ts";
import { jsonBody } from "../middleware/json-body/index.ts";
import { readSecurityConfig, type SecurityConfig } from "../security/config.ts";
import {
  DEFAULT_INJECTION_MODE,
  PromptRoute,
  resolveInjectionMode,
  type SourcedEntry,
} from "../security/injection-policy.ts";
import { INJECTION_THRESHOLD, RULES } from "../security/injection-rules.ts";
import { readAdminEntries, writeAdminEntry } from "../security/policy-store.ts";
import { policyLines } from "../security/screen-prompt.ts";
import type { AppEnv } from "../types.ts";

export const securityRoutes = new Hono<AppEnv>()
  .get("/injection-policy", auth({ role: "admin" }), async (c) => {
    const model = c.req.query("model");
    if (model !== undefined && !ModelName.safeParse(model).success) {
      throw new GatewayError("INVALID_REQUEST", "model: a model name", { param: "model" });
    }
    const config = readSecurityConfig(c.env);
    return c.json(describePolicy(config, await readAdminEntries(c.env.DB), model));
  })
  .put("/injection-policy", auth({ role: "admin" }), jsonBody(InjectionPolicyRequest), async (c) => {
    const body = c.get("body");
    const actor = c.get("caller").sub;
    await writeAdminEntry(c.env.DB, body, body.mode, actor);
    log("info", "injection policy changed", {
      requestId: c.get("requestId"),
      actor,
      mode: body.mode,
      route: body.route ?? null,
      model: body.model ?? null,
    });
    const config = readSecurityConfig(c.env);
    return c.json(describePolicy(config, await readAdminEntries(c.env.DB), body.model));
  });

function describePolicy(
  config: SecurityConfig,
  admin: readonly SourcedEntry[],
  model: string | undefined,
): InjectionPolicyResponse {
  const lines = policyLines(config.injectionPolicy, admin);
  const effective = {} as InjectionPolicyResponse["effective"];
  for (const route of PromptRoute.options) {
    const { mode, from } = resolveInjectionMode(lines, route, model);
    effective[route] = { mode, from: from === null ? null : line(from) };
  }
  return {
    default: DEFAULT_INJECTION_MODE,
    threshold: INJECTION_THRESHOLD,
    rules: RULES.map((r) => ({ name: r.name, weight: r.weight })),
    cacheMs: config.injectionPolicyCacheMs,
    lines: lines.map(line),
    model: model ?? null,
    effective,
  };
}

function line(entry: SourcedEntry): InjectionPolicyLine {
  return {
    mode: entry.mode,
    route: entry.route ?? null,
    model: entry.model ?? null,
    source: entry.source,
    updatedAt: entry.updatedAt ?? null,
    updatedBy: entry.updatedBy ?? null,
  };
}
