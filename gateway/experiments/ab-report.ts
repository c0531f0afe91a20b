// The A/B test report: per arm its counts and each metric's value with an always-valid interval,
// per success metric the difference (or ratio) b vs a with its interval and p-value, Bonferroni-
// corrected over the success metrics, the sample-ratio check, and the verdict. Pure: a function of
// the two arms' ArmStats and the test's options (README "A/B tests: statistics").
//
// Verdicts:
// - sample_ratio_mismatch: the subjects seen per arm do not match the split (chi-square p < 0.001);
//   the arms are not comparable, so nothing else is concluded, whatever the metrics say;
// - a_better / b_better: a success metric's difference is significant at alpha/m (its confidence
//   sequence at that level excludes 0). Success metrics are in priority order: the verdict follows
//   the first one, in the order the test was started with, that is significant; the per-metric
//   results show any trade-off (b faster but less accurate);
// - no_difference: nothing is significant, every success metric has at least `minRequests`
//   observations per arm, and either the test is final (stopped or its duration over) or every
//   interval already lies within the equivalence margin (EQUIVALENCE_MARGINS), so no difference
//   worth having is left to find;
// - not_enough_data: otherwise (too few observations, or intervals still wide while running).
import {
  type AbMetricResult,
  type AbReport,
  type AbVerdict,
  type CanaryMetric,
  SUCCESS_METRIC_MEASURES,
  SuccessMetric,
} from "../../schema/experiments.ts";
import { armValue, compareArms, finiteOrNull, METRIC_DEFINITIONS, percentiles } from "./stats/arm-metrics.ts";
import type { ArmStats } from "./stats/arm-stats.ts";
import { bonferroniAlpha } from "./stats/multiple-comparisons.ts";
import { DEFAULT_TUNING_N } from "./stats/sequential.ts";
import { sampleRatioCheck } from "./stats/srm.ts";

export const DEFAULT_AB_ALPHA = 0.05;
export const DEFAULT_AB_MIN_REQUESTS = 100;

/**
 * Differences too small to matter: a running test whose every interval lies inside these is called
 * no_difference early. Ratios (latency, ttft, tokens/s) within ±5%; error rate within ±0.5 points;
 * mean feedback score within ±0.05.
 */
export const EQUIVALENCE_MARGINS: Record<CanaryMetric, { kind: "ratio" | "difference"; margin: number }> = {
  latency: { kind: "ratio", margin: 1.05 },
  ttft: { kind: "ratio", margin: 1.05 },
  tokens_per_second: { kind: "ratio", margin: 1.05 },
  error_rate: { kind: "difference", margin: 0.005 },
  feedback: { kind: "difference", margin: 0.05 },
};

export interface AbReportOptions {
  /** Share of subjects assigned to b. */
  split: number;
  /** Success metric names (SuccessMetric), in priority order; an unknown name throws. */
  successMetrics: readonly string[];
  alpha?: number;
  /** The test has ended (stopped, or its duration is over). */
  final?: boolean;
  /** Observations per arm each metric needs (DEFAULT_AB_MIN_REQUESTS). */
  minRequests?: number;
}

export const AB_METHOD: Record<string, string> = {
  intervals:
    "always-valid confidence sequences and p-values of the normal-mixture mSPRT (Robbins 1970; Johari, Koomen, Pekelis & Walsh, 'Always Valid Inference: Continuous Monitoring of A/B Tests', Operations Research 2022), valid however often the report is read",
  mixing_variance: `tau^2 = rho(alpha) * sigma^2 / n*, n* = ${DEFAULT_TUNING_N} observations per arm: the sequences are narrowest there`,
  multiple_comparisons:
    "Bonferroni: each of the m success metrics is tested at alpha/m, p-values multiplied by m",
  proportions: "error rate: Agresti–Caffo (+1 error, +1 success per arm)",
  log_metrics: "latency, ttft, tokens/s: geometric means; b vs a as the ratio exp(mean log b − mean log a)",
  percentiles: "p50/p95 from DDSketch (Masson, Rim & Lee, VLDB 2019), 1% relative accuracy",
  sample_ratio:
    "chi-square goodness of fit (1 dof) of distinct subjects per arm against the split, on a Gibbons distinct sample; mismatch at p < 0.001 (Fabijan et al., KDD 2019)",
};

/** Validates success metric names: the zod error names the unknown one. */
export function parseSuccessMetrics(names: readonly string[]): SuccessMetric[] {
  const parsed = SuccessMetric.array().min(1).safeParse(names);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(
      `success_metrics${issue?.path.length ? `[${issue.path.join(".")}]` : ""}: ${issue?.message ?? "invalid"}`,
    );
  }
  // Two names of one measure (latency and response_time) are one comparison.
  const seen = new Set<CanaryMetric>();
  return parsed.data.filter((name) => {
    const measure = SUCCESS_METRIC_MEASURES[name];
    if (seen.has(measure)) return false;
    seen.add(measure);
    return true;
  });
}

function withinMargin(measure: CanaryMetric, interval: [number, number]): boolean {
  const { kind, margin } = EQUIVALENCE_MARGINS[measure];
  return kind === "ratio"
    ? interval[0] > 1 / margin && interval[1] < margin
    : interval[0] > -margin && interval[1] < margin;
}

function compareMetric(
  name: SuccessMetric,
  a: ArmStats,
  b: ArmStats,
  perMetricAlpha: number,
  m: number,
  minRequests: number,
): AbMetricResult & { equivalent: boolean } {
  const measure = SUCCESS_METRIC_MEASURES[name];
  const definition = METRIC_DEFINITIONS[measure];
  const comparison = compareArms(measure, a, b, { alpha: perMetricAlpha });
  const p = finiteOrNull(comparison.test?.pValue);
  const na = definition.n(a);
  const nb = definition.n(b);
  const enough = na >= minRequests && nb >= minRequests && comparison.test !== null;
  const significant = enough && p !== null && p < perMetricAlpha;
  const bHigher = (comparison.test?.estimate ?? 0) > 0;
  const winner = significant ? (bHigher === definition.higherIsBetter ? "b" : "a") : null;
  const interval = comparison.interval;
  const equivalent = enough && !significant && interval !== null && withinMargin(measure, interval);
  const kind = definition.scale === "log" ? "ratio" : "difference";
  const shown = interval === null ? "n/a" : `[${interval[0].toPrecision(3)}, ${interval[1].toPrecision(3)}]`;
  let status: AbMetricResult["status"];
  let reason: string;
  if (!enough) {
    status = "not_enough_data";
    reason = `${na} (a) and ${nb} (b) observations; ${minRequests} per arm needed`;
  } else if (winner !== null) {
    status = winner === "a" ? "a_better" : "b_better";
    reason = `${kind} b vs a ${shown} excludes ${kind === "ratio" ? 1 : 0} at level ${perMetricAlpha.toPrecision(3)}`;
  } else {
    status = "no_difference";
    reason = `${kind} b vs a ${shown} includes ${kind === "ratio" ? 1 : 0}${equivalent ? ", within the equivalence margin" : ""}`;
  }
  return {
    metric: name,
    measures: measure,
    direction: definition.higherIsBetter ? "higher_is_better" : "lower_is_better",
    difference: { kind, value: finiteOrNull(comparison.estimate), interval },
    p_value: p,
    adjusted_p_value: p === null ? null : Math.min(1, p * m),
    significant,
    winner,
    status,
    reason,
    equivalent,
  };
}

function armReport(stats: ArmStats, measures: CanaryMetric[], alpha: number, sampledSubjects: number) {
  const metrics: AbReport["arms"]["a"]["metrics"] = {};
  for (const measure of measures) {
    const { value, interval } = armValue(measure, stats, { alpha });
    metrics[measure] = {
      n: METRIC_DEFINITIONS[measure].n(stats),
      value: finiteOrNull(value),
      interval,
      ...(percentiles(measure, stats) ?? {}),
    };
  }
  return {
    requests: stats.requests,
    errors: stats.errors,
    feedback_count: stats.feedbackCount,
    sampled_subjects: sampledSubjects,
    estimated_subjects: stats.subjects.estimate,
    metrics,
  };
}

/** The report on arms a and b of an A/B test. */
export function abReport(a: ArmStats, b: ArmStats, options: AbReportOptions): AbReport {
  const names = parseSuccessMetrics(options.successMetrics);
  const alpha = options.alpha ?? DEFAULT_AB_ALPHA;
  const minRequests = options.minRequests ?? DEFAULT_AB_MIN_REQUESTS;
  const final = options.final ?? false;
  const m = names.length;
  const perMetricAlpha = bonferroniAlpha(alpha, m);
  const srm = sampleRatioCheck(a.subjects, b.subjects, options.split);
  const results = names.map((name) => compareMetric(name, a, b, perMetricAlpha, m, minRequests));
  const measures = [...new Set(results.map((r) => r.measures))];

  let verdict: AbVerdict;
  let reason: string;
  const firstSignificant = results.find((r) => r.significant);
  const allEnough = results.every((r) => r.status !== "not_enough_data");
  if (srm.mismatch) {
    verdict = "sample_ratio_mismatch";
    reason = `subjects per arm ${srm.observed.a} : ${srm.observed.b} do not match the split ${options.split} (chi-square p = ${srm.pValue.toPrecision(3)} < ${srm.threshold}); no verdict`;
  } else if (firstSignificant !== undefined) {
    verdict = firstSignificant.winner === "a" ? "a_better" : "b_better";
    reason = `${firstSignificant.metric}: ${firstSignificant.reason}`;
  } else if (allEnough && (final || results.every((r) => r.equivalent))) {
    verdict = "no_difference";
    reason = final
      ? "the test has ended with enough data and no success metric differs significantly"
      : "every success metric's interval lies within its equivalence margin";
  } else {
    verdict = "not_enough_data";
    const waiting = results.filter((r) => r.status === "not_enough_data").map((r) => r.metric);
    reason =
      waiting.length > 0
        ? `waiting on ${waiting.join(", ")} (${minRequests} observations per arm needed)`
        : "no success metric differs significantly yet, and the intervals are still wider than the equivalence margins";
  }

  return {
    verdict,
    reason,
    final,
    alpha,
    per_metric_alpha: perMetricAlpha,
    min_requests: minRequests,
    arms: {
      a: armReport(a, measures, perMetricAlpha, srm.observed.a),
      b: armReport(b, measures, perMetricAlpha, srm.observed.b),
    },
    metrics: results.map(({ equivalent: _, ...r }) => r),
    sample_ratio: {
      observed: srm.observed,
      expected: srm.expected,
      split: srm.split,
      level: srm.level,
      chi_square: finiteOrNull(srm.chiSquare),
      p_value: srm.pValue,
      threshold: srm.threshold,
      mismatch: srm.mismatch,
    },
    method: AB_METHOD,
  };
}
