// The A/B report on simulated arms: the specification's metric names, a slower arm found slower,
// Bonferroni over the success metrics, the sample-ratio check blocking the verdict, when "no
// difference" is said, and an A/A test read after every batch rarely declaring a winner.
import { describe, expect, it } from "vitest";
import { abReport, parseSuccessMetrics } from "../../gateway/experiments/ab-report.ts";
import { ArmStats } from "../../gateway/experiments/stats/arm-stats.ts";
import { AbReport } from "../../schema/experiments.ts";
import { assignArm, subjectSampleHash } from "../../schema/rollouts.ts";
import { prng, type SimulatedArm, simulateArm } from "./stats-random.ts";

const TEST_ID = "ab-1";

/** Both arms of a test, with subjects assigned by the real hash at `split`. */
function experiment(
  seed: number,
  subjects: number,
  requests: number,
  split: number,
  specs: { a: SimulatedArm; b: SimulatedArm },
) {
  const random = prng(seed);
  const arms = { a: ArmStats.empty(), b: ArmStats.empty() };
  for (let i = 0; i < requests; i++) {
    const subject = `user-${Math.floor(random() * subjects)}`;
    const arm = assignArm(TEST_ID, subject, split);
    simulateArm(arms[arm], random, {
      ...specs[arm],
      requests: 1,
      subject,
      subjectHash: (s) => subjectSampleHash(TEST_ID, s),
    });
  }
  return arms;
}

const base: SimulatedArm = {
  requests: 0,
  errorRate: 0.01,
  latencyMs: 500,
  tokensPerSecond: 50,
  thumbsUp: 0.7,
};

describe("success metrics", () => {
  it("accepts the specification's names and maps them to measures", () => {
    expect(parseSuccessMetrics(["accuracy", "response_time"])).toEqual(["accuracy", "response_time"]);
    // Two names for one measure are one comparison.
    expect(parseSuccessMetrics(["latency", "response_time", "error_rate"])).toEqual([
      "latency",
      "error_rate",
    ]);
    expect(() => parseSuccessMetrics(["accuracy", "vibes"])).toThrow(/success_metrics\[1\]/);
    expect(() => parseSuccessMetrics([])).toThrow(/success_metrics/);
  });
});

describe("abReport", () => {
  it("finds the slowed arm slower on response_time, with the ratio and its interval", () => {
    const arms = experiment(1, 2000, 6000, 0.5, { a: base, b: { ...base, latencyMs: 700 } });
    const report = abReport(arms.a, arms.b, { split: 0.5, successMetrics: ["accuracy", "response_time"] });
    expect(() => AbReport.parse(JSON.parse(JSON.stringify(report)))).not.toThrow();
    expect(report.sample_ratio.mismatch).toBe(false);
    expect(report.sample_ratio.observed.a + report.sample_ratio.observed.b).toBeGreaterThan(1850); // 2000·(1 − e^−3) ≈ 1900 distinct expected
    const latency = report.metrics.find((m) => m.metric === "response_time");
    expect(latency).toMatchObject({
      measures: "latency",
      direction: "lower_is_better",
      winner: "a",
      status: "a_better",
      significant: true,
    });
    expect(latency?.difference.kind).toBe("ratio");
    expect(latency?.difference.value).toBeGreaterThan(1.3);
    expect(latency?.difference.value).toBeLessThan(1.5);
    expect(latency?.difference.interval?.[0]).toBeGreaterThan(1);
    expect(latency?.adjusted_p_value).toBeCloseTo(Math.min(1, (latency?.p_value ?? 1) * 2), 12);
    // accuracy is first, but not significant: the verdict follows response_time.
    expect(report.metrics[0]).toMatchObject({ metric: "accuracy", measures: "feedback", significant: false });
    expect(report.verdict).toBe("a_better");
    expect(report.per_metric_alpha).toBe(0.025);
    const a = report.arms.a.metrics.latency;
    expect(a?.value).toBeGreaterThan(470);
    expect(a?.value).toBeLessThan(530);
    expect(a?.interval?.[0]).toBeLessThan(a?.value ?? 0);
    expect(a?.p50).toBeGreaterThan(470);
    expect(a?.p95).toBeGreaterThan(900);
    expect(report.arms.b.metrics.feedback?.value).toBeGreaterThan(0.6);
    expect(report.method.intervals).toMatch(/Johari/);
  });

  it("finds the more accurate arm better on accuracy (feedback)", () => {
    const arms = experiment(2, 3000, 6000, 0.5, { a: base, b: { ...base, thumbsUp: 0.85 } });
    const report = abReport(arms.a, arms.b, { split: 0.5, successMetrics: ["accuracy"] });
    expect(report.verdict).toBe("b_better");
    expect(report.metrics[0]).toMatchObject({ winner: "b", direction: "higher_is_better" });
    expect(report.metrics[0]?.difference.value).toBeGreaterThan(0.1);
  });

  it("blocks any verdict on a sample-ratio mismatch, and shows it", () => {
    const arms = experiment(3, 4000, 8000, 0.5, { a: base, b: { ...base, latencyMs: 900 } });
    // As if b lost a quarter of its users: the split promised is 60/40 the other way.
    const report = abReport(arms.a, arms.b, { split: 0.6, successMetrics: ["latency"] });
    expect(report.sample_ratio.mismatch).toBe(true);
    expect(report.sample_ratio.p_value).toBeLessThan(0.001);
    expect(report.verdict).toBe("sample_ratio_mismatch");
    expect(report.reason).toMatch(/do not match the split 0.6/);
    expect(report.metrics[0]?.winner).toBe("a");
  });

  it("says not enough data below min_requests, and no difference when an A/A test ends", () => {
    const small = experiment(4, 100, 150, 0.5, { a: base, b: base });
    expect(abReport(small.a, small.b, { split: 0.5, successMetrics: ["latency"], final: true }).verdict).toBe(
      "not_enough_data",
    );
    const arms = experiment(5, 2000, 4000, 0.5, { a: base, b: base });
    const running = abReport(arms.a, arms.b, { split: 0.5, successMetrics: ["latency", "error_rate"] });
    expect(running.verdict).toBe("not_enough_data");
    expect(running.reason).toMatch(/equivalence margins/);
    const final = abReport(arms.a, arms.b, {
      split: 0.5,
      successMetrics: ["latency", "error_rate"],
      final: true,
    });
    expect(final.verdict).toBe("no_difference");
    expect(final.final).toBe(true);
    expect(final.metrics.every((m) => m.status === "no_difference")).toBe(true);
  });

  it("says no difference early when every interval lies within the equivalence margin", () => {
    const arms = experiment(6, 50_000, 60_000, 0.5, {
      a: { ...base, latencySigma: 0.05 },
      b: { ...base, latencySigma: 0.05 },
    });
    const report = abReport(arms.a, arms.b, { split: 0.5, successMetrics: ["latency"] });
    expect(report.verdict).toBe("no_difference");
    expect(report.reason).toMatch(/equivalence margin/);
    expect(report.sample_ratio.level).toBeGreaterThan(0);
  });

  it("an A/A test read after every 100 requests rarely declares a winner (simulation)", () => {
    const runs = 300;
    let winners = 0;
    for (let r = 0; r < runs; r++) {
      const random = prng(500 + r);
      const a = ArmStats.empty();
      const b = ArmStats.empty();
      for (let look = 0; look < 20; look++) {
        simulateArm(a, random, { ...base, requests: 50 });
        simulateArm(b, random, { ...base, requests: 50 });
        const verdict = abReport(a, b, {
          split: 0.5,
          successMetrics: ["response_time", "tokens_per_second"],
        }).verdict;
        if (verdict === "a_better" || verdict === "b_better") {
          winners += 1;
          break;
        }
      }
    }
    console.log(`A/A reports: ${winners}/${runs} declared a winner over 20 looks`);
    expect(winners / runs).toBeLessThanOrEqual(0.05 + 3 * Math.sqrt((0.05 * 0.95) / runs));
  });
});
