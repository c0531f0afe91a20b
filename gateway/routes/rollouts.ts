// Deployments (POST /models/{model_id}/deploy, /deployments), A/B tests (/ab-tests) and feedback
// (POST /feedback). Starting, commanding and stopping go through the model's RolloutController
// (gateway/rollouts/controller.ts), which serializes them with its own ticks; reads come from D1,
// and a running A/B test's figures from the hubs, merged over every pool.
import type { Context } from "hono";
import { Hono } from "hono";
import type { RolloutRow } from "../../schema/db.ts";
import {
  AbTestListQuery,
  AbTestStartRequest,
  DeploymentCommand,
  DeploymentListQuery,
  DeployRequest,
  FeedbackRequest,
  TEST_ID_PATTERN,
} from "../../schema/rollouts-api.ts";
import { GatewayError } from "../errors.ts";
import { abReport } from "../experiments/ab-report.ts";
import { auth } from "../middleware/auth/index.ts";
import { invalidRequest, jsonBody } from "../middleware/json-body/index.ts";
import { iso, parseVersionedId, registryDb, resolveVersion } from "../registry/versions.ts";
import type { ControllerAnswer, StoredAbSpec, StoredDeploymentSpec } from "../rollouts/controller.ts";
import { phaseStats, recordFeedback, rolloutStats } from "../rollouts/observe.ts";
import { findRollout, listRollouts, rolloutEventsOf } from "../rollouts/store.ts";
import type { AppEnv } from "../types.ts";
import { actorOf } from "./model-lifecycle.ts";

const user = auth({ role: "user" });
const admin = auth({ role: "admin" });

const controller = (env: Env, model: string) => env.ROLLOUTS.getByName(model);

function unwrap(answer: ControllerAnswer): RolloutRow {
  if (answer.ok) return answer.row;
  throw new GatewayError(answer.code, answer.message, answer.param ? { param: answer.param } : {});
}

function query<S extends typeof DeploymentListQuery | typeof AbTestListQuery>(c: Context<AppEnv>, schema: S) {
  const parsed = schema.safeParse(c.req.query());
  if (!parsed.success) throw invalidRequest(parsed.error);
  return parsed.data as ReturnType<S["parse"]>;
}

// ---- deployments ----

export const modelDeployRoutes = new Hono<AppEnv>().post(
  "/:model_id/deploy",
  admin,
  jsonBody(DeployRequest),
  async (c) => {
    const row = await resolveVersion(registryDb(c.env.DB), c.req.param("model_id"));
    const started = unwrap(
      await controller(c.env, row.name).startDeployment(row.version, c.get("body"), actorOf(c)),
    );
    return c.json(deploymentView(started, []), 202, { Location: `/deployments/${started.id}` });
  },
);

async function deploymentOr404(c: Context<AppEnv>): Promise<RolloutRow> {
  const row = await findRollout(registryDb(c.env.DB), c.req.param("id") ?? "");
  if (row === undefined || row.kind !== "deployment") {
    throw new GatewayError(
      "DEPLOYMENT_NOT_FOUND",
      `no deployment "${(c.req.param("id") ?? "").slice(0, 100)}"`,
    );
  }
  return row;
}

export const deploymentRoutes = new Hono<AppEnv>()
  .get("/", user, async (c) => {
    const q = query(c, DeploymentListQuery);
    const rows = await listRollouts(registryDb(c.env.DB), { kind: "deployment", ...q });
    return c.json({ deployments: rows.map((row) => deploymentView(row, null)) });
  })
  .get("/:id", user, async (c) => {
    const row = await deploymentOr404(c);
    return c.json(deploymentView(row, await rolloutEventsOf(registryDb(c.env.DB), row.id)));
  })
  .post("/:id/:command", admin, async (c) => {
    const command = DeploymentCommand.safeParse(c.req.param("command"));
    if (!command.success) {
      throw new GatewayError("NOT_FOUND", `no deployment command "${c.req.param("command").slice(0, 32)}"`);
    }
    const row = await deploymentOr404(c);
    const after = unwrap(await controller(c.env, row.model).command(row.id, command.data, actorOf(c)));
    return c.json(deploymentView(after, await rolloutEventsOf(registryDb(c.env.DB), row.id)));
  });

type EventRow = Awaited<ReturnType<typeof rolloutEventsOf>>[number];

function deploymentView(row: RolloutRow, events: EventRow[] | null) {
  const spec = row.spec as unknown as StoredDeploymentSpec;
  const state = row.state as {
    route: { share: number; phase: number } | null;
    machine: Record<string, unknown> & { steps?: unknown[]; share?: number; phase?: number };
    smoke?: unknown;
  };
  return {
    deployment_id: row.id,
    model: row.model,
    strategy: row.strategy,
    status: row.status,
    running: row.running,
    baseline: spec.baseline === null ? null : `${spec.model}:${spec.baseline}`,
    candidate: `${spec.model}:${spec.candidate}`,
    /** The share of end users the new version serves now (0 once it ended or before it serves). */
    traffic_share: state.route?.share ?? (row.status === "succeeded" ? 1 : 0),
    phase: state.machine.phase ?? 0,
    options: spec.options,
    criteria: spec.criteria ?? null,
    state: state.machine,
    smoke_test: state.smoke ?? null,
    result: row.result ?? null,
    created_by: row.createdBy,
    created_at: iso(row.createdAt),
    updated_at: iso(row.updatedAt),
    ended_at: iso(row.endedAt),
    ...(events === null ? {} : { events: events.map(eventView) }),
  };
}

const eventView = (e: EventRow) => ({
  at: iso(e.at),
  actor: e.actor,
  kind: e.kind,
  ...(e.requestId ? { request_id: e.requestId } : {}),
  detail: e.detail,
});

// ---- A/B tests ----

async function abTestOr404(c: Context<AppEnv>): Promise<RolloutRow> {
  const id = c.req.param("id") ?? "";
  const row = TEST_ID_PATTERN.test(id) ? await findRollout(registryDb(c.env.DB), id) : undefined;
  if (row === undefined || row.kind !== "ab_test") {
    throw new GatewayError("AB_TEST_NOT_FOUND", `no A/B test "${id.slice(0, 100)}"`);
  }
  return row;
}

export const abTestRoutes = new Hono<AppEnv>()
  .post("/start", admin, jsonBody(AbTestStartRequest), async (c) => {
    const body = c.get("body");
    // The A/B test belongs to model_a's name (its requests are split); a malformed id names model_a.
    const { name } = (() => {
      try {
        return parseVersionedId(body.model_a);
      } catch {
        throw new GatewayError("INVALID_MODEL_ID", "model_a must be name:version", { param: "model_a" });
      }
    })();
    const started = unwrap(await controller(c.env, name).startAbTest(body, actorOf(c)));
    return c.json(await abTestView(c.env, started, []), 201, { Location: `/ab-tests/${started.id}` });
  })
  .get("/", user, async (c) => {
    const q = query(c, AbTestListQuery);
    const rows = await listRollouts(registryDb(c.env.DB), {
      kind: "ab_test",
      limit: q.limit,
      ...(q.status === "running" ? { running: true } : q.status === "all" ? {} : { status: q.status }),
    });
    return c.json({ ab_tests: await Promise.all(rows.map((row) => abTestView(c.env, row, null, false))) });
  })
  .get("/:id", user, async (c) => {
    const row = await abTestOr404(c);
    return c.json(await abTestView(c.env, row, await rolloutEventsOf(registryDb(c.env.DB), row.id)));
  })
  .post("/:id/stop", admin, async (c) => {
    const row = await abTestOr404(c);
    const stopped = unwrap(await controller(c.env, row.model).stopAbTest(row.id, actorOf(c)));
    return c.json(await abTestView(c.env, stopped, await rolloutEventsOf(registryDb(c.env.DB), row.id)));
  });

/** A test as the API shows it; `withResults` false (lists) leaves the live figures out. */
async function abTestView(env: Env, row: RolloutRow, events: EventRow[] | null, withResults = true) {
  const spec = row.spec as unknown as StoredAbSpec;
  let results: unknown = null;
  let extra: Record<string, unknown> = {};
  if (!row.running && row.result) {
    const stored = row.result as { report?: unknown; unavailable?: number; missing_pools?: string[] };
    results = stored.report ?? null;
    extra = { unavailable: stored.unavailable ?? 0, missing_pools: stored.missing_pools ?? [] };
  } else if (withResults && row.running) {
    const stats = await rolloutStats(env, row.id);
    const arms = phaseStats(stats, 0);
    results = abReport(arms.a, arms.b, {
      split: spec.traffic_split,
      successMetrics: spec.success_metrics,
      alpha: spec.alpha,
      minRequests: spec.min_requests,
      final: false,
    });
    extra = { unavailable: stats.unavailable, missing_pools: stats.missingPools };
  }
  return {
    test_id: row.id,
    status: row.status,
    running: row.running,
    model: row.model,
    model_a: spec.model_a,
    model_b: spec.model_b,
    traffic_split: spec.traffic_split,
    duration_hours: spec.duration_hours,
    success_metrics: spec.success_metrics,
    alpha: spec.alpha,
    min_requests: spec.min_requests,
    created_by: row.createdBy,
    started_at: iso(row.createdAt),
    ends_at: iso(row.endsAt),
    ended_at: iso(row.endedAt),
    results,
    ...extra,
    ...(events === null ? {} : { events: events.map(eventView) }),
  };
}

// ---- feedback ----

export const feedbackRoutes = new Hono<AppEnv>().post("/", user, jsonBody(FeedbackRequest), async (c) => {
  const body = c.get("body");
  const score = body.score ?? (body.thumbs === "up" ? 1 : 0);
  const caller = c.get("caller").sub;
  const answer = await recordFeedback(c.env, body.request_id, caller, score);
  switch (answer.status) {
    case "recorded":
      return c.json(
        {
          request_id: body.request_id,
          score,
          recorded: true,
          experiment: answer.rollout === null ? null : { id: answer.rollout.id, variant: answer.rollout.arm },
        },
        201,
      );
    case "forbidden":
      throw new GatewayError(
        "FEEDBACK_FORBIDDEN",
        "feedback is accepted only from the caller who made the request",
      );
    case "duplicate":
      throw new GatewayError("FEEDBACK_EXISTS", `request ${body.request_id} already has feedback`);
    case "not_found":
      throw new GatewayError(
        "REQUEST_NOT_FOUND",
        `no recent request ${body.request_id.slice(0, 100)} is known (feedback is kept for 24 h)`,
      );
  }
});
