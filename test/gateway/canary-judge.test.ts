// The canary judge on simulated arms: a canary failing every request fails at once, a healthy one
// passes once the data allows, a slow one (in the mean or only in its tail) fails, little data is
// "not enough data" and never a failure, non-critical failures are reported but not decisive, and
// healthy canaries judged again and again are rarely failed.
import { describe, expect, it } from "vitest";
import { judgeCanary } from "../../gateway/experiments/canary-judge.ts";
import { ArmStats } from "../../gateway/experiments/stats/arm-stats.ts";
import {
  CanaryCriteria,
  CanaryJudgement,
  type CanaryMetric,
  DEFAULT_CANARY_CRITERIA,
} from "../../schema/experiments.ts";
import { prng, type SimulatedArm, simulateArm } from "./stats-random.ts";

function arm(seed: number, spec: SimulatedArm): ArmStats {
  const stats = ArmStats.empty();
  simulateArm(stats, prng(seed), spec);
  return stats;
}

function metric(judgement: CanaryJudgement, name: CanaryMetric) {
  const found = judgement.metrics.find((m) => m.metric === name);
  if (found === undefined) throw new Error(`no ${name} in the judgement`);
  return found;
}

describe("CanaryCriteria", () => {
  it("has the documented defaults, and every key is optional", () => {
    expect(DEFAULT_CANARY_CRITERIA).toEqual({
      alpha: 0.05,
      min_requests: 50,
      max_error_rate_increase: 0.02,
      max_latency_ratio: 1.25,
      max_p95_ratio: 1.5,
      min_tokens_per_second_ratio: 0.8,
      max_feedback_drop: 0.1,
      metrics: ["error_rate", "latency", "ttft", "tokens_per_second", "feedback"],
      critical: ["error_rate", "latency"],
    });
    expect(CanaryCriteria.parse({ max_latency_ratio: 1.1 }).max_latency_ratio).toBe(1.1);
  });

  it("rejects unknown keys, unknown metrics and out-of-range values", () => {
    expect(CanaryCriteria.safeParse({ max_latency: 2 }).success).toBe(false);
    expect(CanaryCriteria.safeParse({ critical: ["cpu"] }).success).toBe(false);
    expect(CanaryCriteria.safeParse({ alpha: 0 }).success).toBe(false);
    expect(CanaryCriteria.safeParse({ max_latency_ratio: 0.9 }).success).toBe(false);
    expect(CanaryCriteria.safeParse({ critical: [] }).success).toBe(false);
  });
});

describe("judgeCanary", () => {
  const healthy: SimulatedArm = { requests: 0, errorRate: 0.005, latencyMs: 400, tokensPerSecond: 60 };

  it("fails at once a canary that errors on every request (50 vs 50)", () => {
    const baseline = arm(1, { ...healthy, requests: 50, errorRate: 0 });
    const canary = arm(2, { ...healthy, requests: 50, errorRate: 1 });
    const judgement = judgeCanary(baseline, canary, DEFAULT_CANARY_CRITERIA);
    expect(judgement.verdict).toBe("fail");
    const errors = metric(judgement, "error_rate");
    expect(errors).toMatchObject({
      verdict: "fail",
      critical: true,
      baseline: { n: 50, value: 0 },
      canary: { n: 50, value: 1 },
    });
    expect(errors.interval?.[0]).toBeGreaterThan(0.8);
    expect(errors.p_value).toBeLessThan(1e-6);
    expect(errors.reason).toMatch(/above the tolerated \+0\.02/);
    // The canary has no successful request: its latency is not judged, and not held against it.
    expect(metric(judgement, "latency")).toMatchObject({
      verdict: "not_enough_data",
      canary: { n: 0, value: null },
    });
    expect(judgement.reason).toMatch(/error_rate/);
    expect(() => CanaryJudgement.parse(JSON.parse(JSON.stringify(judgement)))).not.toThrow();
  });

  it("says not enough data below min_requests, whatever the numbers", () => {
    const baseline = arm(3, { ...healthy, requests: 49 });
    const canary = arm(4, { ...healthy, requests: 49, errorRate: 1 });
    const judgement = judgeCanary(baseline, canary, DEFAULT_CANARY_CRITERIA);
    expect(judgement.verdict).toBe("not_enough_data");
    expect(judgement.metrics.every((m) => m.verdict === "not_enough_data")).toBe(true);
    expect(metric(judgement, "error_rate").reason).toMatch(/50 per arm needed/);
    const empty = judgeCanary(ArmStats.empty(), ArmStats.empty(), DEFAULT_CANARY_CRITERIA);
    expect(empty.verdict).toBe("not_enough_data");
    expect(metric(empty, "latency")).toMatchObject({ estimate: null, interval: null, p_value: null });
  });

  it("passes a canary like its baseline once the intervals fit inside the tolerances", () => {
    const baseline = arm(5, { ...healthy, requests: 3000 });
    const canary = arm(6, { ...healthy, requests: 1000 });
    const judgement = judgeCanary(baseline, canary, DEFAULT_CANARY_CRITERIA);
    expect(judgement.verdict).toBe("pass");
    const latency = metric(judgement, "latency");
    expect(latency.verdict).toBe("pass");
    expect(latency.estimate).toBeGreaterThan(0.95);
    expect(latency.estimate).toBeLessThan(1.05);
    expect(latency.interval?.[1]).toBeLessThan(1.25);
    expect(latency.p95_ratio).toBeGreaterThan(0.9);
    expect(latency.p95_ratio).toBeLessThan(1.1);
    expect(latency.baseline.p50).toBeGreaterThan(380);
    expect(latency.baseline.p50).toBeLessThan(420);
    expect(metric(judgement, "tokens_per_second").verdict).toBe("pass");
    // No feedback at all: not enough data, and not critical.
    expect(metric(judgement, "feedback")).toMatchObject({ verdict: "not_enough_data", critical: false });
  });

  it("holds a healthy canary at not enough data while the error-rate interval is still wide", () => {
    const judgement = judgeCanary(
      arm(7, { ...healthy, requests: 150 }),
      arm(8, { ...healthy, requests: 150 }),
      DEFAULT_CANARY_CRITERIA,
    );
    expect(metric(judgement, "latency").verdict).toBe("pass");
    expect(metric(judgement, "error_rate").verdict).toBe("not_enough_data");
    expect(judgement.verdict).toBe("not_enough_data");
    expect(judgement.reason).toMatch(/waiting on error_rate/);
  });

  it("fails a canary twice as slow", () => {
    const judgement = judgeCanary(
      arm(9, { ...healthy, requests: 200 }),
      arm(10, { ...healthy, requests: 60, latencyMs: 800 }),
      DEFAULT_CANARY_CRITERIA,
    );
    const latency = metric(judgement, "latency");
    expect(latency.verdict).toBe("fail");
    expect(latency.estimate).toBeGreaterThan(1.7);
    expect(latency.interval?.[0]).toBeGreaterThan(1.25);
    expect(metric(judgement, "ttft").verdict).toBe("fail");
    expect(judgement.verdict).toBe("fail");
  });

  it("fails a canary whose median is fine but whose p95 is far worse", () => {
    const judgement = judgeCanary(
      arm(11, { ...healthy, requests: 3000, latencySigma: 0.2 }),
      arm(12, { ...healthy, requests: 1000, latencySigma: 0.2, tailShare: 0.1, tailFactor: 4 }),
      DEFAULT_CANARY_CRITERIA,
    );
    const latency = metric(judgement, "latency");
    expect(latency.p50_ratio).toBeLessThan(1.1);
    expect(latency.p95_ratio).toBeGreaterThan(1.5);
    expect(latency.interval?.[1]).toBeLessThan(1.25);
    expect(latency.verdict).toBe("fail");
    expect(latency.reason).toMatch(/p95 ratio/);
  });

  it("reports a non-critical failure without failing the step", () => {
    const judgement = judgeCanary(
      arm(13, { ...healthy, requests: 3000 }),
      arm(14, { ...healthy, requests: 1000, tokensPerSecond: 30 }),
      DEFAULT_CANARY_CRITERIA,
    );
    expect(metric(judgement, "tokens_per_second")).toMatchObject({ verdict: "fail", critical: false });
    expect(judgement.verdict).toBe("pass");
    expect(judgement.reason).toMatch(/non-critical failing: tokens_per_second/);
    const strict = judgeCanary(
      arm(13, { ...healthy, requests: 3000 }),
      arm(14, { ...healthy, requests: 1000, tokensPerSecond: 30 }),
      CanaryCriteria.parse({ critical: ["error_rate", "latency", "tokens_per_second"] }),
    );
    expect(strict.verdict).toBe("fail");
  });

  it("judges feedback: a drop beyond max_feedback_drop fails it", () => {
    const criteria = CanaryCriteria.parse({ metrics: ["feedback"], critical: ["feedback"] });
    const judgement = judgeCanary(
      arm(15, { ...healthy, requests: 2000, thumbsUp: 0.8 }),
      arm(16, { ...healthy, requests: 2000, thumbsUp: 0.5 }),
      criteria,
    );
    expect(judgement.metrics.map((m) => m.metric)).toEqual(["feedback"]);
    expect(metric(judgement, "feedback").verdict).toBe("fail");
    expect(judgement.verdict).toBe("fail");
  });

  it("rarely fails a healthy canary judged after every 25 requests (simulation)", () => {
    const runs = 300;
    let failed = 0;
    let passed = 0;
    for (let r = 0; r < runs; r++) {
      const random = prng(1000 + r);
      const baseline = ArmStats.empty();
      const canary = ArmStats.empty();
      for (let step = 0; step < 40; step++) {
        simulateArm(baseline, random, { ...healthy, requests: 25 });
        simulateArm(canary, random, { ...healthy, requests: 25 });
        const verdict = judgeCanary(baseline, canary, DEFAULT_CANARY_CRITERIA).verdict;
        if (verdict === "fail") {
          failed += 1;
          break;
        }
        if (verdict === "pass") {
          passed += 1;
          break;
        }
      }
    }
    console.log(
      `healthy canaries: ${failed}/${runs} failed, ${passed}/${runs} passed within 1,000 requests per arm`,
    );
    expect(failed / runs).toBeLessThanOrEqual(0.025);
    expect(passed / runs).toBeGreaterThan(0.9);
  });
});
