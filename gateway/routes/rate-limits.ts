// /rate-limits/:subject (role admin): a subject's limits at run time. PUT sets overrides (null
// removes one), GET shows the limits in force, where each comes from and the usage, DELETE removes
// every override. The state lives in the limiter's home, the default pool's hub (ratelimit/).
import { type Context, Hono } from "hono";
import { z } from "zod";
import { DEFAULT_POOL } from "../../schema/hub.ts";
import {
  RateLimitOverrideRequest,
  type RateLimitStatus,
  RateLimitSubject,
  type RateLimitUsage,
} from "../../schema/rate-limits-api.ts";
import { GatewayError } from "../errors.ts";
import { poolHub } from "../inference/hub-client.ts";
import { describeError, log } from "../log.ts";
import { auth } from "../middleware/auth/index.ts";
import { jsonBody } from "../middleware/json-body/index.ts";
import {
  effectiveLimit,
  LIMIT_NAMES,
  type LimitName,
  limitSource,
  type SubjectReport,
} from "../ratelimit/book.ts";
import { type LimitedRole, rateLimitConfig } from "../ratelimit/config.ts";
import type { RateLimitCommand } from "../ratelimit/hub-limits.ts";
import type { AppEnv } from "../types.ts";

const RoleQuery = z.enum(["user", "admin"]).optional();

function subjectOf<E extends AppEnv>(c: Context<E>): string {
  const parsed = RateLimitSubject.safeParse(c.req.param("subject"));
  if (!parsed.success) {
    throw new GatewayError("INVALID_REQUEST", "the subject is 1 to 128 characters (a token's sub)", {
      param: "subject",
    });
  }
  return parsed.data;
}

async function ask<E extends AppEnv>(c: Context<E>, command: RateLimitCommand): Promise<SubjectReport> {
  try {
    return (await poolHub(c.env, DEFAULT_POOL).rateLimit(command)) as SubjectReport;
  } catch (err) {
    log("error", "rate limits: the default pool's hub did not answer", {
      requestId: c.get("requestId"),
      ...describeError(err),
    });
    throw new GatewayError("UPSTREAM_ERROR", "the rate limiter (the default pool's hub) did not answer");
  }
}

/** ?role=: whose defaults to show (checked before anything changes). */
function roleOf<E extends AppEnv>(c: Context<E>): LimitedRole | undefined {
  const query = RoleQuery.safeParse(c.req.query("role"));
  if (!query.success) {
    throw new GatewayError("INVALID_REQUEST", "role must be user or admin", { param: "role" });
  }
  return query.data;
}

/** The report with RATE_LIMITS' defaults for the role: each limit, its source, what is left. */
function status<E extends AppEnv>(
  c: Context<E>,
  subject: string,
  asked: LimitedRole | undefined,
  report: SubjectReport,
): RateLimitStatus {
  const fromReport = report.role === "admin" || report.role === "user" ? report.role : undefined;
  const role: LimitedRole = asked ?? fromReport ?? "user";
  const config = rateLimitConfig(c.env);
  const defaults = config.roles[role].limits;
  const claim = report.claim ?? undefined;
  const limit = (name: LimitName) => ({
    limit: effectiveLimit(name, defaults, claim, report.overrides),
    source: limitSource(name, claim, report.overrides),
  });
  const limits = { rpm: limit("rpm"), tpm: limit("tpm"), concurrency: limit("concurrency") };
  const remaining = Object.fromEntries(
    LIMIT_NAMES.map((name) => [name, Math.max(0, limits[name].limit - report.usage[name])]),
  ) as RateLimitUsage;
  return {
    subject,
    role,
    enforced: config.enabled,
    limits,
    usage: report.usage,
    remaining,
    overrides: report.overrides,
    tokenClaim: report.claim,
    models: report.models,
  };
}

const admin = auth({ role: "admin" });

export const rateLimitRoutes = new Hono<AppEnv>()
  .get("/:subject", admin, async (c) => {
    const [subject, role] = [subjectOf(c), roleOf(c)];
    return c.json(status(c, subject, role, await ask(c, { op: "report", subject })));
  })
  .put("/:subject", admin, jsonBody(RateLimitOverrideRequest), async (c) => {
    const [subject, role] = [subjectOf(c), roleOf(c)];
    const patch = c.get("body");
    return c.json(status(c, subject, role, await ask(c, { op: "override", subject, patch })));
  })
  .delete("/:subject", admin, async (c) => {
    const [subject, role] = [subjectOf(c), roleOf(c)];
    return c.json(status(c, subject, role, await ask(c, { op: "clear", subject })));
  });
