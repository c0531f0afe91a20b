// Runs the bench's requests through rollouts in progress, as production traffic would during a
// deployment: a canary holding at 50% on one benchmark model and an A/B test (split 0.5) on another,
// each between the agent-local version the registry routes to (`name:0.0.0-local`, activated by
// routeThroughRegistry) and a second version the synthetic agents announce beside it
// (`name:2.0.0`, see CANDIDATE_VERSION). One rollout per model is the gateway's rule (409
// ROLLOUT_IN_PROGRESS), so the two cannot share a model. A gateway built before rollouts (a
// --against ref) has no such routes and is measured as it is.
import { AGENT_LOCAL_VERSION } from "../../schema/registry.ts";
import { mintToken } from "../../scripts/lib/token.ts";
import { CANDIDATE_VERSION, MODEL_1, MODEL_4 } from "./context.ts";
import type { RegistryRouting } from "./registry-routing.ts";

export interface RolloutPlan {
  /** The model the canary deployment runs on (its candidate: `name:CANDIDATE_VERSION`). */
  canaryModel: string;
  /** The model the A/B test runs on (model_b: `name:CANDIDATE_VERSION`). */
  abModel: string;
  /** Distinguishes this run's A/B test id. */
  runId: string;
}

export type ActiveRollouts =
  | { active: false; reason: string }
  | {
      active: true;
      origin: string;
      token: string;
      canary: { id: string; model: string; candidate: string };
      abTest: { id: string; model: string; modelA: string; modelB: string };
    };

/** The canary's share while it holds: steps [50, 100], the first held far longer than any run. */
const CANARY_SHARE = 50;
const HOUR = 3_600_000;
/** Canary body: holds at 50% (min time and min requests never reached), judged every tick. */
const CANARY_BODY = {
  strategy: "canary",
  steps: [CANARY_SHARE, 100],
  min_step_ms: HOUR,
  // The step deadline must be at least min_step_ms (its default is 30 min).
  step_deadline_ms: 2 * HOUR,
  min_requests_per_arm: 1_000_000,
};

async function call(
  origin: string,
  token: string,
  method: "GET" | "POST",
  path: string,
  body?: unknown,
): Promise<{ status: number; code: string | null; json: Record<string, unknown> | null; text: string }> {
  const res = await fetch(`${origin}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let json: Record<string, unknown> | null = null;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {}
  return { status: res.status, code: res.headers.get("x-error-code"), json, text: text.slice(0, 300) };
}

/** A route this build does not have answers 404 NOT_FOUND (a missing version names itself). */
const noSuchRoute = (r: { status: number; code: string | null }) =>
  r.status === 404 && r.code === "NOT_FOUND";

/** POSTs until accepted; a version not registered yet (the hub registers announcements) is retried. */
async function startWithRetry(
  origin: string,
  token: string,
  path: string,
  body: unknown,
  timeoutMs: number,
): Promise<{ ok: true; json: Record<string, unknown> } | { ok: false; noRoute: true }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await call(origin, token, "POST", path, body);
    if (r.status === 201 || r.status === 202) return { ok: true, json: r.json ?? {} };
    if (noSuchRoute(r)) return { ok: false, noRoute: true };
    const retryable = r.code === "VERSION_NOT_FOUND" || r.code === "MODEL_NOT_FOUND";
    if (!retryable || Date.now() > deadline) throw new Error(`POST ${path}: ${r.status} ${r.text}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/**
 * Starts the canary and the A/B test on the gateway at `origin`, and waits until the canary
 * serves its share (its first tick runs right after the start; ROLLOUT_TICK_MS after that).
 */
export async function startRollouts(
  origin: string,
  secret: string,
  plan: RolloutPlan,
  timeoutMs = 30_000,
): Promise<ActiveRollouts> {
  if (plan.canaryModel === plan.abModel)
    throw new Error("one rollout per model: canary and A/B test need two");
  const token = await mintToken({ secret, role: "admin", sub: "bench", ttlSeconds: 6 * 3600 });
  const candidate = `${plan.canaryModel}:${CANDIDATE_VERSION}`;
  const deployed = await startWithRetry(origin, token, `/models/${candidate}/deploy`, CANARY_BODY, timeoutMs);
  if (!deployed.ok) return { active: false, reason: "no rollouts in this build" };
  const deploymentId = String(deployed.json.deployment_id);
  const modelA = `${plan.abModel}:${AGENT_LOCAL_VERSION}`;
  const modelB = `${plan.abModel}:${CANDIDATE_VERSION}`;
  const testId = `bench-ab-${plan.runId}`;
  const active: ActiveRollouts = {
    active: true,
    origin,
    token,
    canary: { id: deploymentId, model: plan.canaryModel, candidate },
    abTest: { id: testId, model: plan.abModel, modelA, modelB },
  };
  try {
    const ab = await startWithRetry(
      origin,
      token,
      "/ab-tests/start",
      {
        test_id: testId,
        model_a: modelA,
        model_b: modelB,
        traffic_split: 0.5,
        duration_hours: 24,
        success_metrics: ["response_time"],
      },
      timeoutMs,
    );
    if (!ab.ok) throw new Error("POST /ab-tests/start: no such route, yet /deploy exists");
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const d = await call(origin, token, "GET", `/deployments/${deploymentId}`);
      const share = Number(d.json?.traffic_share ?? 0);
      if (d.json?.status === "progressing" && share === CANARY_SHARE / 100) break;
      if (d.json?.running === false || Date.now() > deadline) {
        throw new Error(
          `canary ${deploymentId} is not serving ${CANARY_SHARE}%: status ${String(d.json?.status)}, share ${share}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  } catch (err) {
    await stopRollouts(active);
    throw err;
  }
  return active;
}

/**
 * The bench's rollouts on one gateway, after routeThroughRegistry: the canary on MODEL_1 (the model
 * of the headline overhead figure), the A/B test on MODEL_4; none when `enabled` is false
 * (--rollouts off) or the build has no registry. `label` (a copy's name) goes into the test id.
 */
export function benchRollouts(
  origin: string,
  secret: string,
  routing: RegistryRouting,
  enabled: boolean,
  label = "",
): Promise<ActiveRollouts> {
  if (!enabled) return Promise.resolve({ active: false, reason: "off (--rollouts off)" });
  if (routing !== "registry") return Promise.resolve({ active: false, reason: "no rollouts in this build" });
  const prefix = label === "" ? "" : `${label.replace(/[^A-Za-z0-9._-]/g, "-").slice(0, 40)}-`;
  return startRollouts(origin, secret, {
    canaryModel: MODEL_1,
    abModel: MODEL_4,
    runId: `${prefix}${Date.now().toString(36)}`,
  });
}

/** One line for the run header: which rollouts the requests go through. */
export function describeRollouts(r: ActiveRollouts): string {
  if (!r.active) return r.reason;
  return (
    `canary ${r.canary.id} on ${r.canary.model} (${AGENT_LOCAL_VERSION} → ${CANDIDATE_VERSION}, holding at ${CANARY_SHARE}% of end users), ` +
    `A/B test ${r.abTest.id} on ${r.abTest.model} (${r.abTest.modelA} vs ${r.abTest.modelB}, split 0.5); ` +
    `one rollout per model, so the canary is on ${r.canary.model} (the overhead, TTFT and 1-agent streaming rows) ` +
    `and the A/B test on ${r.abTest.model} (the warm-up and 4-agent streaming rows)`
  );
}

export interface RolloutTraffic {
  deployment: { id: string; status: string; share: number; requests: { a: number; b: number } | null };
  abTest: {
    id: string;
    status: string;
    requests: { a: number; b: number } | null;
    sampleRatioMismatch: boolean | null;
    verdict: string | null;
  };
}

type StepRequests = { a: number; b: number } | null;

async function canaryNow(r: Extract<ActiveRollouts, { active: true }>) {
  const d = (await call(r.origin, r.token, "GET", `/deployments/${r.canary.id}`)).json ?? {};
  const steps = (d.state as { steps?: { requests?: { a: number; b: number } }[] } | undefined)?.steps ?? [];
  return { d, requests: (steps.at(-1)?.requests ?? null) as StepRequests };
}

/**
 * What the rollouts saw: the canary's share and per-arm requests, the A/B test's per-arm n (live
 * from the hubs). The canary's counts are those of its last tick, so its next tick (every
 * ROLLOUT_TICK_MS, 5 s by default) is waited for, up to `waitMs`, to include the last requests.
 */
export async function rolloutTraffic(r: ActiveRollouts, waitMs = 7_000): Promise<RolloutTraffic | undefined> {
  if (!r.active) return undefined;
  let { d, requests } = await canaryNow(r);
  const first = JSON.stringify(requests);
  for (const deadline = Date.now() + waitMs; Date.now() < deadline; ) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    ({ d, requests } = await canaryNow(r));
    if (JSON.stringify(requests) !== first) break;
  }
  const ab = (await call(r.origin, r.token, "GET", `/ab-tests/${r.abTest.id}`)).json ?? {};
  const results = ab.results as
    | {
        verdict?: string;
        arms?: { a?: { requests?: number }; b?: { requests?: number } };
        sample_ratio?: { mismatch?: boolean };
      }
    | null
    | undefined;
  return {
    deployment: {
      id: r.canary.id,
      status: String(d.status),
      share: Number(d.traffic_share),
      requests,
    },
    abTest: {
      id: r.abTest.id,
      status: String(ab.status),
      requests:
        results?.arms === undefined
          ? null
          : { a: results.arms.a?.requests ?? 0, b: results.arms.b?.requests ?? 0 },
      sampleRatioMismatch: results?.sample_ratio?.mismatch ?? null,
      verdict: results?.verdict ?? null,
    },
  };
}

export function formatTraffic(t: RolloutTraffic): string {
  const arms = (x: { a: number; b: number } | null) =>
    x === null ? "n/a" : `a ${x.a.toLocaleString("en-US")}, b ${x.b.toLocaleString("en-US")}`;
  const share = (x: { a: number; b: number } | null) =>
    x === null || x.a + x.b === 0 ? "" : ` (b ${((x.b / (x.a + x.b)) * 100).toFixed(1)}%)`;
  return [
    `canary ${t.deployment.id}: ${t.deployment.status}, traffic share ${t.deployment.share}, ` +
      `requests this step ${arms(t.deployment.requests)}${share(t.deployment.requests)} (as of its last tick)`,
    `A/B test ${t.abTest.id}: ${t.abTest.status}, n per arm ${arms(t.abTest.requests)}${share(t.abTest.requests)}, ` +
      `sample-ratio mismatch ${t.abTest.sampleRatioMismatch ?? "n/a"}, verdict ${t.abTest.verdict ?? "n/a"}`,
  ].join("\n");
}

/** Aborts the canary and stops the A/B test (best effort: the gateway is stopped next anyway). */
export async function stopRollouts(r: ActiveRollouts): Promise<string> {
  if (!r.active) return r.reason;
  const outcome = (p: Promise<{ status: number; json: Record<string, unknown> | null }>) =>
    p.then(
      (x) => `${x.status} ${String(x.json?.status ?? x.json?.code ?? "")}`.trim(),
      (err: unknown) => `failed: ${err instanceof Error ? err.message : String(err)}`,
    );
  const [canary, ab] = await Promise.all([
    outcome(call(r.origin, r.token, "POST", `/deployments/${r.canary.id}/abort`)),
    outcome(call(r.origin, r.token, "POST", `/ab-tests/${r.abTest.id}/stop`)),
  ]);
  return `canary ${r.canary.id} abort: ${canary}; A/B test ${r.abTest.id} stop: ${ab}`;
}
