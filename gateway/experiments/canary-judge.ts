// The canary judge: one canary step's arms (the baseline serving at the same time, and the
// canary), each metric judged Pass / Fail / Not enough data against the deployment's criteria with
// always-valid confidence sequences (stats/sequential.ts), and an overall verdict. Kayenta-style:
// every metric carries the numbers that produced its verdict, so GET /deployments/{id} says why.
//
// The rule, per metric (README "Canary analysis"):
// - fewer than `min_requests` observations of the metric in either arm: not_enough_data;
// - fail when the confidence sequence shows the canary worse than the tolerance, i.e. the whole
//   interval lies beyond it (error rate: lower bound of canary − baseline > max_error_rate_increase;
//   latency and TTFT: lower bound of the geometric-mean ratio > max_latency_ratio, or p95 ratio >
//   max_p95_ratio while the lower bound is above 1, i.e. the canary is slower at all; tokens/s: upper
//   bound of the ratio < min_tokens_per_second_ratio; feedback: upper bound of the difference <
//   −max_feedback_drop);
// - pass when the interval shows it within tolerance (the whole interval on the good side, and for
//   latency and TTFT the p95 ratio at most max_p95_ratio);
// - otherwise not_enough_data: the data cannot tell yet. No data is never a failure.
// Overall: any critical metric failing fails the step; all critical metrics passing passes it;
// otherwise not_enough_data. Non-critical failures are reported, not decisive.
//
// Each metric is tested at `alpha` on its own: a fail needs the whole interval beyond a tolerance,
// not merely a difference, so a canary identical to its baseline fails a metric with probability
// well under alpha/2 even though it is looked at after every request.
import {
  CANARY_METRICS,
  type CanaryCriteria,
  type CanaryJudgement,
  type CanaryMetric,
  type CanaryMetricResult,
  type MetricVerdict,
} from "../../schema/experiments.ts";
import {
  armValue,
  compareArms,
  finiteOrNull,
  METRIC_DEFINITIONS,
  percentiles,
  ratioOrNull,
} from "./stats/arm-metrics.ts";
import type { ArmStats } from "./stats/arm-stats.ts";

/** The confidence sequences are narrowest at this many observations per arm (a few steps' worth). */
function tuningN(criteria: CanaryCriteria): number {
  return Math.max(100, 4 * criteria.min_requests);
}

export const CANARY_METHOD: Record<string, string> = {
  intervals:
    "always-valid (1 − alpha) confidence sequences of the normal-mixture mSPRT (Robbins 1970; Johari, Koomen, Pekelis & Walsh, Operations Research 2022), valid however often the step is judged",
  error_rate: "difference of two proportions, Agresti–Caffo regularized (+1 error, +1 success per arm)",
  latency:
    "ratio of geometric means (difference of mean log latency of successful requests) and p50/p95 ratios from DDSketch (1% relative accuracy)",
  ttft: "as latency, on time to first token",
  tokens_per_second: "ratio of geometric means of tokens/s",
  feedback: "difference of mean feedback scores",
  rule: "fail: the interval lies wholly beyond the tolerance; pass: wholly within it; otherwise not enough data",
};

function fmt(x: number | null, digits = 3): string {
  return x === null ? "n/a" : x.toPrecision(digits);
}

function intervalText(interval: [number, number] | null): string {
  return interval === null ? "n/a" : `[${fmt(interval[0])}, ${fmt(interval[1])}]`;
}

function judgeMetric(
  metric: CanaryMetric,
  baseline: ArmStats,
  canary: ArmStats,
  criteria: CanaryCriteria,
  critical: boolean,
): CanaryMetricResult {
  const definition = METRIC_DEFINITIONS[metric];
  const options = { alpha: criteria.alpha, tuningN: tuningN(criteria) };
  const n = { baseline: definition.n(baseline), canary: definition.n(canary) };
  const quantiles = { baseline: percentiles(metric, baseline), canary: percentiles(metric, canary) };
  const figures = (stats: ArmStats, arm: "baseline" | "canary") => ({
    n: n[arm],
    value: finiteOrNull(armValue(metric, stats, options).value),
    ...(quantiles[arm] ?? {}),
  });
  const comparison = compareArms(metric, baseline, canary, options);
  const interval = comparison.interval;
  const threshold = thresholdOf(metric, criteria);
  const result: CanaryMetricResult = {
    metric,
    critical,
    verdict: "not_enough_data",
    reason: "",
    baseline: figures(baseline, "baseline"),
    canary: figures(canary, "canary"),
    estimate: finiteOrNull(comparison.estimate),
    interval: interval === null ? null : [interval[0], interval[1]],
    p_value: finiteOrNull(comparison.test?.pValue),
    threshold,
  };
  let p95Ratio: number | null = null;
  if (quantiles.baseline !== null && quantiles.canary !== null) {
    result.p50_ratio = ratioOrNull(quantiles.canary.p50, quantiles.baseline.p50);
    p95Ratio = ratioOrNull(quantiles.canary.p95, quantiles.baseline.p95);
    result.p95_ratio = p95Ratio;
    result.p95_threshold = criteria.max_p95_ratio;
  }
  const [verdict, reason] = decide(metric, n, interval, p95Ratio, criteria);
  result.verdict = verdict;
  result.reason = reason;
  return result;
}

function thresholdOf(metric: CanaryMetric, criteria: CanaryCriteria): number {
  switch (metric) {
    case "error_rate":
      return criteria.max_error_rate_increase;
    case "latency":
    case "ttft":
      return criteria.max_latency_ratio;
    case "tokens_per_second":
      return criteria.min_tokens_per_second_ratio;
    case "feedback":
      return -criteria.max_feedback_drop;
  }
}

function decide(
  metric: CanaryMetric,
  n: { baseline: number; canary: number },
  interval: [number, number] | null,
  p95Ratio: number | null,
  criteria: CanaryCriteria,
): [MetricVerdict, string] {
  const min = criteria.min_requests;
  if (n.baseline < min || n.canary < min) {
    return [
      "not_enough_data",
      `${n.baseline} baseline and ${n.canary} canary observations; ${min} per arm needed`,
    ];
  }
  if (interval === null) return ["not_enough_data", "no interval can be computed yet"];
  const [lower, upper] = interval;
  const shown = intervalText(interval);
  switch (metric) {
    case "error_rate": {
      const tol = criteria.max_error_rate_increase;
      if (lower > tol) return ["fail", `error rate increase ${shown} lies above the tolerated +${tol}`];
      if (upper < tol) return ["pass", `error rate increase ${shown} stays below the tolerated +${tol}`];
      return ["not_enough_data", `error rate increase ${shown} straddles the tolerated +${tol}`];
    }
    case "latency":
    case "ttft": {
      const tol = criteria.max_latency_ratio;
      const p95Limit = criteria.max_p95_ratio;
      const name = metric === "latency" ? "latency" : "TTFT";
      if (lower > tol) return ["fail", `${name} ratio ${shown} lies above the tolerated ${tol}`];
      if (p95Ratio !== null && p95Ratio > p95Limit && lower > 1) {
        return [
          "fail",
          `${name} p95 ratio ${fmt(p95Ratio)} exceeds ${p95Limit} and the canary is slower (${shown})`,
        ];
      }
      if (upper < tol && (p95Ratio === null || p95Ratio <= p95Limit)) {
        return [
          "pass",
          `${name} ratio ${shown} stays below ${tol}, p95 ratio ${fmt(p95Ratio)} within ${p95Limit}`,
        ];
      }
      return [
        "not_enough_data",
        `${name} ratio ${shown} (tolerated ${tol}) and p95 ratio ${fmt(p95Ratio)} (limit ${p95Limit}) do not decide yet`,
      ];
    }
    case "tokens_per_second": {
      const tol = criteria.min_tokens_per_second_ratio;
      if (upper < tol) return ["fail", `tokens/s ratio ${shown} lies below the tolerated ${tol}`];
      if (lower > tol) return ["pass", `tokens/s ratio ${shown} stays above ${tol}`];
      return ["not_enough_data", `tokens/s ratio ${shown} straddles the tolerated ${tol}`];
    }
    case "feedback": {
      const tol = -criteria.max_feedback_drop;
      if (upper < tol) return ["fail", `feedback change ${shown} lies below the tolerated ${tol}`];
      if (lower > tol) return ["pass", `feedback change ${shown} stays above ${tol}`];
      return ["not_enough_data", `feedback change ${shown} straddles the tolerated ${tol}`];
    }
  }
}

/** Judges a canary step: `baseline` is arm a (the active version), `canary` arm b. */
export function judgeCanary(baseline: ArmStats, canary: ArmStats, criteria: CanaryCriteria): CanaryJudgement {
  const critical = new Set(criteria.critical);
  const judged = CANARY_METRICS.filter((m) => critical.has(m) || criteria.metrics.includes(m));
  const metrics = judged.map((m) => judgeMetric(m, baseline, canary, criteria, critical.has(m)));
  const criticalResults = metrics.filter((m) => m.critical);
  const failed = criticalResults.filter((m) => m.verdict === "fail");
  const waiting = criticalResults.filter((m) => m.verdict === "not_enough_data");
  const advisory = metrics.filter((m) => !m.critical && m.verdict === "fail").map((m) => m.metric);
  const note = advisory.length > 0 ? ` (non-critical failing: ${advisory.join(", ")})` : "";
  let verdict: MetricVerdict;
  let reason: string;
  if (failed.length > 0) {
    verdict = "fail";
    reason = `critical ${failed.map((m) => `${m.metric}: ${m.reason}`).join("; ")}`;
  } else if (waiting.length === 0) {
    verdict = "pass";
    reason = `every critical metric passes (${criticalResults.map((m) => m.metric).join(", ")})${note}`;
  } else {
    verdict = "not_enough_data";
    reason = `waiting on ${waiting.map((m) => `${m.metric} (${m.reason})`).join("; ")}${note}`;
  }
  return { verdict, reason, metrics, criteria, method: CANARY_METHOD };
}
