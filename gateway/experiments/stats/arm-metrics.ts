// The metrics an experiment compares, read off two arms' ArmStats: which sufficient statistics
// each uses, on which scale (log for durations and tokens/s, so their comparison is a ratio), which
// direction is better, and the always-valid comparison of b against a. Shared by the canary judge
// and the A/B report.
import type { CanaryMetric } from "../../../schema/experiments.ts";
import type { ArmStats } from "./arm-stats.ts";
import type { DDSketch } from "./ddsketch.ts";
import type { Moments } from "./moments.ts";
import {
  differenceOfMeans,
  differenceOfProportions,
  meanConfidenceSequence,
  proportionConfidenceSequence,
  type SequentialResult,
  type TestOptions,
} from "./sequential.ts";

export interface MetricDefinition {
  /** Log metrics are compared as ratios b/a (exp of the difference of mean logs). */
  scale: "log" | "linear" | "proportion";
  higherIsBetter: boolean;
  /** Observations this metric has in an arm. */
  n(stats: ArmStats): number;
  sketch?(stats: ArmStats): DDSketch;
  moments?(stats: ArmStats): Moments;
}

export const METRIC_DEFINITIONS: Record<CanaryMetric, MetricDefinition> = {
  error_rate: { scale: "proportion", higherIsBetter: false, n: (s) => s.requests },
  latency: {
    scale: "log",
    higherIsBetter: false,
    n: (s) => s.latencyLog.n,
    moments: (s) => s.latencyLog,
    sketch: (s) => s.latencySketch,
  },
  ttft: {
    scale: "log",
    higherIsBetter: false,
    n: (s) => s.ttftLog.n,
    moments: (s) => s.ttftLog,
    sketch: (s) => s.ttftSketch,
  },
  tokens_per_second: {
    scale: "log",
    higherIsBetter: true,
    n: (s) => s.tokensPerSecondLog.n,
    moments: (s) => s.tokensPerSecondLog,
  },
  feedback: { scale: "linear", higherIsBetter: true, n: (s) => s.feedback.n, moments: (s) => s.feedback },
};

/** A comparison b vs a on the metric's natural scale: a difference, or a ratio for log metrics. */
export interface ArmComparison {
  /** On the test's scale (difference of means, of mean logs, or of proportions). */
  test: SequentialResult | null;
  /** Reported: b − a, or b / a for log metrics. */
  estimate: number | null;
  interval: [number, number] | null;
}

function summary(moments: Moments) {
  return { n: moments.n, mean: moments.mean, variance: moments.variance };
}

/** Transforms a test-scale value to the reported scale. */
export function reported(metric: CanaryMetric, value: number): number {
  return METRIC_DEFINITIONS[metric].scale === "log" ? Math.exp(value) : value;
}

export function compareArms(
  metric: CanaryMetric,
  a: ArmStats,
  b: ArmStats,
  options: TestOptions,
): ArmComparison {
  const definition = METRIC_DEFINITIONS[metric];
  let test: SequentialResult | null;
  if (definition.scale === "proportion") {
    test = differenceOfProportions(
      { events: a.errors, n: a.requests },
      { events: b.errors, n: b.requests },
      options,
    );
  } else {
    const moments = definition.moments as (s: ArmStats) => Moments;
    test = differenceOfMeans(summary(moments(a)), summary(moments(b)), options);
  }
  if (test === null) return { test, estimate: null, interval: null };
  return {
    test,
    estimate: reported(metric, test.estimate),
    interval: [reported(metric, test.lower), reported(metric, test.upper)],
  };
}

/** One arm's value of the metric (error rate, geometric mean, or mean score) with its interval. */
export function armValue(
  metric: CanaryMetric,
  stats: ArmStats,
  options: TestOptions,
): { value: number | null; interval: [number, number] | null } {
  const definition = METRIC_DEFINITIONS[metric];
  if (definition.scale === "proportion") {
    const value = stats.requests > 0 ? stats.errors / stats.requests : null;
    const cs = proportionConfidenceSequence({ events: stats.errors, n: stats.requests }, options);
    return { value, interval: cs === null ? null : [cs.lower, cs.upper] };
  }
  const moments = (definition.moments as (s: ArmStats) => Moments)(stats);
  const value = moments.n > 0 ? reported(metric, moments.mean) : null;
  const cs = meanConfidenceSequence(summary(moments), options);
  return { value, interval: cs === null ? null : [reported(metric, cs.lower), reported(metric, cs.upper)] };
}

/** p50 and p95 from the metric's sketch (latency, ttft), null while it is empty. */
export function percentiles(
  metric: CanaryMetric,
  stats: ArmStats,
): { p50: number | null; p95: number | null } | null {
  const sketch = METRIC_DEFINITIONS[metric].sketch?.(stats);
  if (sketch === undefined) return null;
  return { p50: finiteOrNull(sketch.quantile(0.5)), p95: finiteOrNull(sketch.quantile(0.95)) };
}

/** JSON carries no NaN or Infinity. */
export function finiteOrNull(x: number | null | undefined): number | null {
  return x !== null && x !== undefined && Number.isFinite(x) ? x : null;
}

export function ratioOrNull(numerator: number | null, denominator: number | null): number | null {
  if (numerator === null || denominator === null || !(denominator > 0)) return null;
  return finiteOrNull(numerator / denominator);
}
