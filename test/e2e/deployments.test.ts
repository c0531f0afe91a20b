// Deployments and A/B tests with real parts: the Worker in workerd, its RolloutController ticking
// every 250 ms, and two real agents serving four versions of one model through llama.cpp, two of
// them made truly bad with the agent's --fault option (3.0.0 fails a share of its requests, 4.0.0
// waits 40 ms before each piece). Traffic comes from many distinct end users (X-Orchard-User)
// while the controller works; every verdict is the controller's own, read from GET /deployments.
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ensureDemoModel } from "../../node-agent/demo-model.ts";
import { type Stack, startStack } from "../helpers/stack.ts";
import {
  type Answer,
  type Api,
  apiOf,
  byModel,
  type DeploymentView,
  driveTraffic,
  generate,
  type Judgement,
  json,
  mapLimit,
  stopAllTraffic,
  waitFor,
  waitForDeployment,
} from "./rollout-helpers.ts";

const NAME = "demo";
/** Version → demo model variant. 3.0.0 and 4.0.0 share 1.0.0's and 2.0.0's bytes: the faults make them bad. */
const VERSIONS = { "1.0.0": 1, "2.0.0": 2, "3.0.0": 1, "4.0.0": 2 } as const;
type Version = keyof typeof VERSIONS;
const FAILING: Version = "3.0.0";
const SLOW: Version = "4.0.0";
const FAULTS = ["--fault", `${NAME}:${FAILING}:fail=0.3`, "--fault", `${NAME}:${SLOW}:slow=40`];

let stack: Stack;
let admin: string;
let user: string;
let api: Api;

const id = (version: Version) => `${NAME}:${version}`;

async function activeVersion(): Promise<string | null> {
  const model = await json<{ active_version: string | null }>(await api(`/models/${NAME}`), 200);
  return model.active_version;
}

/** Makes `version` the active one on both agents (the registry's own switch), for a test's baseline. */
async function activate(version: Version): Promise<void> {
  await json(
    await api(`/models/${id(version)}/activate`, {
      method: "POST",
      body: JSON.stringify({ placement: { replicas: 2 }, timeout_ms: 60_000 }),
    }),
    200,
  );
  expect(await activeVersion()).toBe(version);
}

/** Agents holding `version` loaded. */
async function holders(version: Version): Promise<string[]> {
  const list = await stack.waitForAgents(() => true);
  return list
    .filter((a) =>
      (a.models as Array<{ name: string; loaded?: boolean }>).some(
        (m) => m.name === id(version) && m.loaded !== false,
      ),
    )
    .map((a) => a.id)
    .sort();
}

async function deploy(version: Version, body: Record<string, unknown>): Promise<DeploymentView> {
  return json<DeploymentView>(
    await api(`/models/${id(version)}/deploy`, { method: "POST", body: JSON.stringify(body) }),
    202,
  );
}

const failures = (answers: Answer[]) => answers.filter((a) => a.error !== null);
const eventsOf = (view: DeploymentView, kind: string) => view.events.filter((e) => e.kind === kind);

beforeAll(async () => {
  stack = await startStack({
    vars: { ROLLOUT_TICK_MS: "250", HEALTH_INTERVAL_MS: "500", LIVE_METRICS_FLUSH_MS: "1000" },
    logLevel: "warn",
  });
  admin = await stack.token("admin", "e2e-operator");
  user = await stack.token("user", "e2e-service");
  api = apiOf(stack, () => admin);
  for (const [version, variant] of Object.entries(VERSIONS)) {
    const bytes = readFileSync(await ensureDemoModel(stack.cacheDir, { variant }));
    await json(
      await api("/models/register", {
        method: "POST",
        body: JSON.stringify({
          name: NAME,
          version,
          description: `demo variant ${variant}`,
          model_type: "llm",
          framework: "llamacpp",
          source: { kind: "artifact", format: "gguf" },
          sha256: createHash("sha256").update(bytes).digest("hex"),
          size: bytes.length,
        }),
      }),
      201,
    );
    await json(
      await api(`/models/${id(version as Version)}/artifact`, {
        method: "PUT",
        headers: { "Content-Type": "application/octet-stream", "Content-Length": String(bytes.length) },
        body: bytes,
      }),
      201,
    );
  }
  // Both agents carry the same faults, so a bad version is bad wherever it is placed.
  await Promise.all(
    ["rollout-a", "rollout-b"].map((agentId) =>
      stack.startAgent({
        id: agentId,
        args: ["--cache-dir", mkdtempSync(join(tmpdir(), `orchard-${agentId}-`)), ...FAULTS],
      }),
    ),
  );
  await stack.waitForAgents((list) => list.length === 2);
}, 180_000);

afterEach(stopAllTraffic);

afterAll(async () => {
  await stack?.stop();
});

describe("canary deployments", () => {
  it("rolls a failing version back on its own, and the name keeps serving the old one", async () => {
    await activate("1.0.0");
    const traffic = driveTraffic(api, user, NAME, { prefix: "fail-canary" });
    const started = await deploy(FAILING, {
      strategy: "canary",
      steps: [50, 100],
      min_step_ms: 1000,
      min_requests_per_arm: 30,
      rollback_window_ms: 1000,
    });
    const ended = await waitForDeployment(api, started.deployment_id, ["rolled_back", "succeeded", "paused"]);
    const answers = await traffic.stop();
    expect(ended.status, ended.state.reason).toBe("rolled_back");
    expect(ended.traffic_share).toBe(0);
    // The failing judgement, with its numbers: the canary's error rate interval lies above the tolerance.
    const [failed] = eventsOf(ended, "canary_failed");
    const detail = failed?.detail as {
      step: number;
      share: number;
      requests: { a: number; b: number };
      summary: Judgement;
    };
    expect(detail.step).toBe(0);
    expect(detail.share).toBe(0.5);
    expect(detail.summary.verdict).toBe("fail");
    const errorRate = detail.summary.metrics.find((m) => m.metric === "error_rate");
    expect(errorRate?.verdict).toBe("fail");
    expect(errorRate?.canary.n).toBeGreaterThanOrEqual(30);
    expect(errorRate?.baseline.n).toBeGreaterThanOrEqual(30);
    expect(errorRate?.interval?.[0]).toBeGreaterThan(0.02);
    expect(eventsOf(ended, "rolled_back")).toHaveLength(1);
    expect(eventsOf(ended, "step_passed")).toEqual([]);
    // Only canary users saw errors, and as many as the fault makes (floor(k·0.3) of k requests).
    const bad = failures(answers);
    const canary = answers.filter((a) => a.variant === "canary");
    expect(Math.abs(bad.length - 0.3 * canary.length)).toBeLessThanOrEqual(1);
    expect(bad.every((a) => a.variant === "canary" && a.experiment === started.deployment_id)).toBe(true);
    expect(
      answers
        .filter((a) => a.variant === "baseline")
        .every((a) => a.error === null && a.model === id("1.0.0")),
    ).toBe(true);
    // The name keeps serving the old version, to everyone, with no rollout left on it.
    expect(await activeVersion()).toBe("1.0.0");
    const after = await Promise.all(
      Array.from({ length: 20 }, (_, n) => generate(api, user, NAME, `after-fail-${n}`)),
    );
    expect(after.map((a) => [a.model, a.error, a.variant])).toEqual(
      after.map(() => [id("1.0.0"), null, null]),
    );
    // Unloaded once the rollback window passed.
    await waitFor("3.0.0 unloaded", async () => ((await holders(FAILING)).length === 0 ? true : undefined));
  });

  it("promotes a healthy version on its own, step by step", async () => {
    await activate("1.0.0");
    const traffic = driveTraffic(api, user, NAME, { prefix: "good-canary" });
    // Thresholds loosened from the defaults so the run stays short: with max_error_rate_increase
    // 0.02 a healthy canary needs ~230 requests per arm before its error-rate interval clears the
    // tolerance, and with max_latency_ratio 1.25 ~120; at 0.1 and 2 (p95 3) ~50 suffice. Two
    // agents on two shared cores make latency noisy, which a real fleet would not.
    const started = await deploy("2.0.0", {
      strategy: "canary",
      steps: [50, 100],
      min_step_ms: 1000,
      min_requests_per_arm: 60,
      criteria: { max_error_rate_increase: 0.1, max_latency_ratio: 2, max_p95_ratio: 3 },
    });
    const ended = await waitForDeployment(
      api,
      started.deployment_id,
      ["succeeded", "rolled_back", "paused"],
      100_000,
    );
    const answers = await traffic.stop();
    expect(ended.status, ended.state.reason).toBe("succeeded");
    expect(await activeVersion()).toBe("2.0.0");
    const passed = eventsOf(ended, "step_passed").map(
      (e) =>
        e.detail as { step: number; share: number; requests: { a: number; b: number }; summary: Judgement },
    );
    expect(passed.map((p) => [p.step, p.share])).toEqual([
      [0, 0.5],
      [1, 1],
    ]);
    for (const p of passed) expect(p.summary.verdict).toBe("pass");
    // At 100 % nobody is on the baseline: the last step is judged against the previous step's
    // baseline figures (before that fix it held for want of baseline data until its deadline).
    const latency = passed.map((p) => p.summary.metrics.find((m) => m.metric === "latency"));
    expect(latency[1]?.baseline.n).toBeGreaterThanOrEqual(latency[0]?.baseline.n ?? Number.NaN);
    expect(latency[1]?.canary.n).toBeGreaterThanOrEqual(60);
    expect(eventsOf(ended, "candidate_activated")).toHaveLength(1);
    expect(failures(answers)).toEqual([]);
  }, 150_000);
});

/** Each version's greedy text is one and the same every time, and the two versions' differ. */
function expectConsistentTexts(answers: Answer[]): void {
  const texts = new Map<string, Set<string>>();
  for (const a of answers) texts.set(a.model, (texts.get(a.model) ?? new Set()).add(a.text));
  for (const [model, set] of texts) expect([model, set.size]).toEqual([model, 1]);
  const distinct = new Set([...texts.values()].map((set) => [...set][0]));
  expect(distinct.size).toBe(texts.size);
}

describe("blue-green deployments", () => {
  it("switches under 32 concurrent streams with no failed request, and abort restores the old version at once", async () => {
    await activate("1.0.0");
    const traffic = driveTraffic(api, user, NAME, {
      concurrency: 32,
      prefix: "bg",
      stream: true,
      maxTokens: 12,
    });
    await waitFor("streams under way", async () => (traffic.results.length >= 32 ? true : undefined));
    const started = await deploy("2.0.0", {
      strategy: "blue-green",
      smoke_prompts: ["Say hello.", "Once upon a time"],
      smoke_deadline_ms: 10_000,
      rollback_window_ms: 60_000,
    });
    const switched = await waitForDeployment(api, started.deployment_id, ["switched", "failed"]);
    expect(switched.status, JSON.stringify(switched.events.filter((e) => e.kind.startsWith("smoke")))).toBe(
      "switched",
    );
    // Capacity parity: the new version was brought up on both agents; the old one is still warm.
    expect(await holders("2.0.0")).toEqual(["rollout-a", "rollout-b"]);
    expect(await holders("1.0.0")).toEqual(["rollout-a", "rollout-b"]);
    // Once one stream came back from 2.0.0 the hub has the switch: every stream begun after it is 2.0.0's.
    const firstNew = await waitFor("a stream served by 2.0.0", async () =>
      traffic.results.find((a) => a.model === id("2.0.0")),
    );
    await waitFor("streams after the switch", async () =>
      traffic.results.filter((a) => a.startedAt > firstNew.endedAt).length >= 64 ? true : undefined,
    );
    const abortAsked = Date.now();
    const aborted = await json<DeploymentView>(
      await api(`/deployments/${started.deployment_id}/abort`, { method: "POST" }),
      200,
    );
    const abortMs = Date.now() - abortAsked;
    await waitFor("streams after the abort", async () =>
      traffic.results.filter((a) => a.startedAt > abortAsked + abortMs).length >= 64 ? true : undefined,
    );
    const answers = await traffic.stop();

    expect(aborted.status).toBe("aborted");
    expect(eventsOf(aborted, "smoke_test_passed")).toHaveLength(1);
    expect(eventsOf(aborted, "baseline_restored")).toHaveLength(1);
    expect(await activeVersion()).toBe("1.0.0");
    // Instant: the abort answers once the old version is routed again, with nothing to load.
    expect(abortMs).toBeLessThan(5_000);
    expect(failures(answers)).toEqual([]);
    expectConsistentTexts(answers);
    const afterSwitch = answers.filter((a) => a.startedAt > firstNew.endedAt && a.endedAt < abortAsked);
    expect(afterSwitch.length).toBeGreaterThan(0);
    expect(afterSwitch.every((a) => a.model === id("2.0.0"))).toBe(true);
    const afterAbort = answers.filter((a) => a.startedAt > abortAsked + abortMs);
    expect(afterAbort.length).toBeGreaterThanOrEqual(64);
    expect(afterAbort.every((a) => a.model === id("1.0.0"))).toBe(true);
  });

  it("keeps the old version warm for the rollback window, then unloads it", async () => {
    await activate("1.0.0");
    const traffic = driveTraffic(api, user, NAME, { prefix: "bg-window" });
    const started = await deploy("2.0.0", { strategy: "blue_green", rollback_window_ms: 2_000 });
    const ended = await waitForDeployment(api, started.deployment_id, ["succeeded", "failed", "aborted"]);
    await waitFor("1.0.0 unloaded", async () => ((await holders("1.0.0")).length === 0 ? true : undefined));
    const answers = await traffic.stop();
    expect(ended.status, ended.state.reason).toBe("succeeded");
    expect(eventsOf(ended, "previous_cooled")).toHaveLength(1);
    expect(await activeVersion()).toBe("2.0.0");
    expect(await holders("2.0.0")).toEqual(["rollout-a", "rollout-b"]);
    expect(failures(answers)).toEqual([]);
    expect(answers.at(-1)?.model).toBe(id("2.0.0"));
  });
});

describe("rolling deployments", () => {
  it("converts agent by agent while serving throughout", async () => {
    await activate("1.0.0");
    const traffic = driveTraffic(api, user, NAME, { prefix: "rolling" });
    const started = await deploy("2.0.0", {
      strategy: "rolling",
      max_unavailable: 1,
      health_check_ms: 1_000,
    });
    const ended = await waitForDeployment(api, started.deployment_id, ["succeeded", "rolled_back", "paused"]);
    const endedSeen = Date.now();
    await waitFor("answers after the end", async () =>
      traffic.results.filter((a) => a.startedAt > endedSeen).length >= 16 ? true : undefined,
    );
    const answers = await traffic.stop();
    expect(ended.status, ended.state.reason).toBe("succeeded");
    expect(await activeVersion()).toBe("2.0.0");
    expect(answers.filter((a) => a.startedAt > endedSeen).every((a) => a.model === id("2.0.0"))).toBe(true);
    expect(
      eventsOf(ended, "agent_converted")
        .map((e) => e.detail.agentId)
        .sort(),
    ).toEqual(["rollout-a", "rollout-b"]);
    expect(failures(answers)).toEqual([]);
    const counts = byModel(answers);
    expect(counts[id("1.0.0")]).toBeGreaterThan(0);
    expect(counts[id("2.0.0")]).toBeGreaterThan(0);
    expectConsistentTexts(answers);
  });
});

interface AbView {
  test_id: string;
  status: string;
  running: boolean;
  results: {
    verdict: string;
    reason: string;
    arms: Record<
      "a" | "b",
      { requests: number; errors: number; feedback_count: number; estimated_subjects: number }
    >;
    metrics: Array<{
      metric: string;
      difference: { value: number | null; interval: [number, number] | null; kind: string };
      p_value: number | null;
      adjusted_p_value: number | null;
      significant: boolean;
      winner: "a" | "b" | null;
      status: string;
    }>;
    sample_ratio: { observed: { a: number; b: number }; p_value: number; mismatch: boolean };
  } | null;
}

describe("A/B tests", () => {
  it("splits 2,000 subjects within binomial bounds, sticks, takes feedback and finds the slowed arm slower", async () => {
    await activate("2.0.0");
    const testId = `e2e-ab-${Date.now().toString(36)}`;
    // The specification's body, as written.
    const body = {
      test_id: testId,
      model_a: id("2.0.0"),
      model_b: id(SLOW),
      traffic_split: 0.2,
      duration_hours: 24,
      success_metrics: ["accuracy", "response_time"],
    };
    const started = await json<AbView>(
      await api("/ab-tests/start", { method: "POST", body: JSON.stringify(body) }),
      201,
    );
    expect(started).toMatchObject({ test_id: testId, status: "running", running: true });
    // Arm b is loaded on one agent before traffic, so every subject is served by its own arm.
    await waitFor("4.0.0 loaded", async () => ((await holders(SLOW)).length > 0 ? true : undefined));
    // A deployment of the same model cannot start meanwhile.
    const refused = await json<{ error: { code: string } }>(
      await api(`/models/${id("1.0.0")}/deploy`, {
        method: "POST",
        body: JSON.stringify({ strategy: "immediate" }),
      }),
      409,
    );
    expect(refused.error.code).toBe("ROLLOUT_IN_PROGRESS");

    const n = 2_000;
    const subjects = Array.from({ length: n }, (_, i) => `ab-subject-${i}`);
    const first = await mapLimit(subjects, 8, (subject) => generate(api, user, NAME, subject));
    expect(failures(first)).toEqual([]);
    const arms = { a: id("2.0.0"), b: id(SLOW) } as Record<string, string>;
    for (const answer of first) {
      expect(answer.experiment).toBe(testId);
      expect(answer.model).toBe(arms[answer.variant ?? ""]);
    }
    const inB = first.filter((a) => a.variant === "b").length;
    const bound = 4 * Math.sqrt(n * 0.2 * 0.8);
    expect(Math.abs(inB - 0.2 * n)).toBeLessThanOrEqual(bound);

    // Stickiness: every 7th subject again, same arm every time.
    const again = first.filter((_, i) => i % 7 === 0);
    const second = await mapLimit(again, 8, (a) => generate(api, user, NAME, a.user));
    expect(second.map((a) => [a.user, a.variant])).toEqual(again.map((a) => [a.user, a.variant]));

    // Feedback on 120 answers of each arm, the same scores for both (the arms answer alike); only
    // the caller who made the request may give it.
    const scored = ["a", "b"].flatMap((arm) => first.filter((a) => a.variant === arm).slice(0, 120));
    const other = await stack.token("user", "e2e-someone-else");
    const forbidden = await json<{ error: { code: string } }>(
      await api("/feedback", {
        method: "POST",
        token: other,
        body: JSON.stringify({ request_id: scored[0]?.requestId, thumbs: "up" }),
      }),
      403,
    );
    expect(forbidden.error.code).toBe("FEEDBACK_FORBIDDEN");
    const recorded = await mapLimit(scored, 8, async (a) =>
      json<{ experiment: { id: string; variant: string } }>(
        await api("/feedback", {
          method: "POST",
          token: user,
          body: JSON.stringify({
            request_id: a.requestId,
            score: (Number(a.user.split("-").at(-1)) % 5) / 4,
          }),
        }),
        201,
      ),
    );
    expect(recorded.map((r) => r.experiment)).toEqual(
      scored.map((a) => ({ id: testId, variant: a.variant })),
    );
    const duplicate = await api("/feedback", {
      method: "POST",
      token: user,
      body: JSON.stringify({ request_id: scored[0]?.requestId, thumbs: "down" }),
    });
    expect(duplicate.status).toBe(409);
    await duplicate.body?.cancel();

    const report = await waitFor("both arms' figures", async () => {
      const view = await json<AbView>(await api(`/ab-tests/${testId}`), 200);
      const r = view.results;
      return r !== null &&
        r.arms.a.requests + r.arms.b.requests >= n + again.length &&
        r.arms.b.feedback_count >= 120
        ? view
        : undefined;
    });
    const results = report.results;
    if (results === null) throw new Error("no results");
    expect(results.arms.b.requests).toBe(first.concat(second).filter((a) => a.variant === "b").length);
    expect(results.sample_ratio.mismatch).toBe(false);
    const responseTime = results.metrics.find((m) => m.metric === "response_time");
    expect(responseTime).toMatchObject({ significant: true, winner: "a", status: "a_better" });
    expect(responseTime?.difference.value).toBeGreaterThan(1);
    expect(responseTime?.difference.interval?.[0]).toBeGreaterThan(1);
    expect(results.metrics.find((m) => m.metric === "accuracy")?.significant).toBe(false);
    expect(results.verdict).toBe("a_better");

    const stopped = await json<AbView>(await api(`/ab-tests/${testId}/stop`, { method: "POST" }), 200);
    expect(stopped).toMatchObject({ status: "stopped", running: false });
    expect(stopped.results?.verdict).toBe("a_better");
    const afterStop = await json<AbView>(await api(`/ab-tests/${testId}`), 200);
    expect(afterStop.results).toEqual(stopped.results);
    // The split has left the routing table: everyone gets the active version, with no arm.
    const plain = await generate(api, user, NAME, subjects.find((_, i) => first[i]?.variant === "b") ?? "");
    expect([plain.model, plain.variant, plain.error]).toEqual([id("2.0.0"), null, null]);
  }, 180_000);
});

describe("a deployment across a gateway restart", () => {
  it("carries on after the Worker restarts mid-step, driven by its controller's alarm, and is promoted", async () => {
    await activate("1.0.0");
    const started = await deploy("2.0.0", {
      strategy: "canary",
      steps: [50, 100],
      min_step_ms: 1000,
      min_requests_per_arm: 60,
      criteria: { max_error_rate_increase: 0.1, max_latency_ratio: 2, max_p95_ratio: 3 },
    });
    await waitFor("the first step to serve half the users", async () => {
      const view = await json<DeploymentView>(await api(`/deployments/${started.deployment_id}`), 200);
      return view.traffic_share === 0.5 ? view : undefined;
    });
    // Every Durable Object and socket dies with the Worker; D1, DO storage and alarms are kept.
    const restartedAt = Date.now();
    await stack.restartGateway();
    await stack.waitForAgents((list) => list.length === 2);
    const traffic = driveTraffic(api, user, NAME, { prefix: "restart-canary" });
    const ended = await waitForDeployment(
      api,
      started.deployment_id,
      ["succeeded", "rolled_back", "paused"],
      100_000,
    );
    const answers = await traffic.stop();
    expect(ended.status, ended.state.reason).toBe("succeeded");
    expect(await activeVersion()).toBe("2.0.0");
    // The steps after the restart were decided by the controller, not replayed from before it.
    const passedAfter = eventsOf(ended, "step_passed").filter((e) => Date.parse(e.at) > restartedAt);
    expect(passedAfter.length).toBeGreaterThanOrEqual(1);
    expect(passedAfter.every((e) => e.actor === "controller")).toBe(true);
    expect(failures(answers)).toEqual([]);
  }, 150_000);
});
