// What the canary judge and the A/B report take and give over HTTP: the canary criteria (a
// deployment's `criteria` option), the success metric names of POST /ab-tests/start, and the
// judgement and report bodies that GET /deployments/{id} and GET /ab-tests/{id} show. The
// statistics behind them are in gateway/experiments/ (README "Statistics").
import { z } from "zod";

export const CANARY_METRICS = ["error_rate", "latency", "ttft", "tokens_per_second", "feedback"] as const;
export const CanaryMetric = z.enum(CANARY_METRICS);
export type CanaryMetric = z.infer<typeof CanaryMetric>;

/**
 * The canary judge's thresholds. Every key is optional; the defaults are DEFAULT_CANARY_CRITERIA.
 * Critical metrics are always judged, whether or not `metrics` lists them.
 */
export const CanaryCriteria = z
  .object({
    /** Level of each metric's confidence sequence. */
    alpha: z.number().gt(0).max(0.2).default(0.05),
    /** Observations per arm a metric needs before it is judged at all. */
    min_requests: z.number().int().min(2).max(10_000_000).default(50),
    /** Error rate: the canary may be at most this much (absolute) above the baseline. */
    max_error_rate_increase: z.number().gt(0).max(1).default(0.02),
    /** Latency and TTFT: largest tolerated ratio of geometric means, canary / baseline. */
    max_latency_ratio: z.number().gt(1).max(100).default(1.25),
    /** Latency and TTFT: largest tolerated p95 ratio, canary / baseline. */
    max_p95_ratio: z.number().gt(1).max(100).default(1.5),
    /** Tokens/s: smallest tolerated ratio of geometric means, canary / baseline. */
    min_tokens_per_second_ratio: z.number().gt(0).lt(1).default(0.8),
    /** Feedback: largest tolerated drop of the mean score (scores are in [0, 1]). */
    max_feedback_drop: z.number().gt(0).max(1).default(0.1),
    /** Metrics judged (default all). */
    metrics: z
      .array(CanaryMetric)
      .min(1)
      .max(CANARY_METRICS.length)
      .default([...CANARY_METRICS]),
    /** Metrics whose failure rolls the canary back and whose pass is needed to advance. */
    critical: z.array(CanaryMetric).min(1).max(CANARY_METRICS.length).default(["error_rate", "latency"]),
  })
  .strict();
export type CanaryCriteria = z.infer<typeof CanaryCriteria>;
export type CanaryCriteriaInput = z.input<typeof CanaryCriteria>;

export const DEFAULT_CANARY_CRITERIA: CanaryCriteria = CanaryCriteria.parse({});

export const MetricVerdict = z.enum(["pass", "fail", "not_enough_data"]);
export type MetricVerdict = z.infer<typeof MetricVerdict>;

/** A number, or null where it does not exist yet (no data) — JSON has no NaN or Infinity. */
const Num = z.number().nullable();
const Interval = z.tuple([z.number(), z.number()]).nullable();

const CanaryArmFigures = z.object({
  n: z.number().int(),
  /** Error rate for error_rate; geometric mean for latency, ttft, tokens_per_second; mean for feedback. */
  value: Num,
  p50: Num.optional(),
  p95: Num.optional(),
});

export const CanaryMetricResult = z.object({
  metric: CanaryMetric,
  critical: z.boolean(),
  verdict: MetricVerdict,
  /** One line a human can read: why this verdict. */
  reason: z.string(),
  baseline: CanaryArmFigures,
  canary: CanaryArmFigures,
  /** canary − baseline (error_rate, feedback) or canary / baseline (latency, ttft, tokens_per_second). */
  estimate: Num,
  /** The (1 − alpha) confidence sequence for `estimate`, on the same scale. */
  interval: Interval,
  /** Always-valid p-value for "no difference". */
  p_value: Num,
  /** The tolerance the interval is held against (the criterion's value). */
  threshold: z.number(),
  /** p50 and p95 ratios, canary / baseline (latency, ttft). */
  p50_ratio: Num.optional(),
  p95_ratio: Num.optional(),
  /** The p95 ratio's limit (latency, ttft). */
  p95_threshold: z.number().optional(),
});
export type CanaryMetricResult = z.infer<typeof CanaryMetricResult>;

export const CanaryJudgement = z.object({
  verdict: MetricVerdict,
  reason: z.string(),
  metrics: z.array(CanaryMetricResult),
  criteria: CanaryCriteria,
  method: z.record(z.string(), z.string()),
});
export type CanaryJudgement = z.infer<typeof CanaryJudgement>;

/**
 * Success metrics of an A/B test. The specification's names: `accuracy` is the user feedback score
 * (higher is better) and `response_time` is latency; the rest are the canary metrics' names.
 */
export const SUCCESS_METRICS = [
  "accuracy",
  "response_time",
  "latency",
  "ttft",
  "tokens_per_second",
  "error_rate",
  "feedback",
] as const;
export const SuccessMetric = z.enum(SUCCESS_METRICS);
export type SuccessMetric = z.infer<typeof SuccessMetric>;

/** What each success metric measures. */
export const SUCCESS_METRIC_MEASURES: Record<SuccessMetric, CanaryMetric> = {
  accuracy: "feedback",
  response_time: "latency",
  latency: "latency",
  ttft: "ttft",
  tokens_per_second: "tokens_per_second",
  error_rate: "error_rate",
  feedback: "feedback",
};

export const AbVerdict = z.enum([
  "a_better",
  "b_better",
  "no_difference",
  "not_enough_data",
  "sample_ratio_mismatch",
]);
export type AbVerdict = z.infer<typeof AbVerdict>;

const Estimate = z.object({ value: Num, interval: Interval });

export const AbArmMetric = z.object({
  n: z.number().int(),
  /** Error rate, geometric mean (latency, ttft in ms; tokens/s), or mean score, with its always-valid interval. */
  value: Num,
  interval: Interval,
  p50: Num.optional(),
  p95: Num.optional(),
});

export const AbArm = z.object({
  requests: z.number().int(),
  errors: z.number().int(),
  feedback_count: z.number().int(),
  /** Distinct subjects in the sample at the SRM check's level, and the estimate of all distinct subjects. */
  sampled_subjects: z.number().int(),
  estimated_subjects: z.number(),
  metrics: z.record(z.string(), AbArmMetric),
});

export const AbMetricResult = z.object({
  /** The name as the test was started with (e.g. `accuracy`). */
  metric: SuccessMetric,
  /** What it measures. */
  measures: CanaryMetric,
  direction: z.enum(["higher_is_better", "lower_is_better"]),
  /** b − a (error_rate, feedback) or b / a (latency, ttft, tokens_per_second). */
  difference: Estimate.extend({ kind: z.enum(["difference", "ratio"]) }),
  /** Always-valid p-value, and Bonferroni-adjusted over the success metrics. */
  p_value: Num,
  adjusted_p_value: Num,
  significant: z.boolean(),
  winner: z.enum(["a", "b"]).nullable(),
  status: z.enum(["a_better", "b_better", "no_difference", "not_enough_data"]),
  reason: z.string(),
});
export type AbMetricResult = z.infer<typeof AbMetricResult>;

export const SampleRatioReport = z.object({
  observed: z.object({ a: z.number(), b: z.number() }),
  expected: z.object({ a: z.number(), b: z.number() }),
  split: z.number(),
  /** Sampling level: each subject is in the sample with probability 2^-level. */
  level: z.number().int(),
  chi_square: Num,
  p_value: z.number(),
  threshold: z.number(),
  mismatch: z.boolean(),
});

export const AbReport = z.object({
  verdict: AbVerdict,
  reason: z.string(),
  final: z.boolean(),
  alpha: z.number(),
  /** alpha / number of success metrics: each metric's level. */
  per_metric_alpha: z.number(),
  min_requests: z.number().int(),
  arms: z.object({ a: AbArm, b: AbArm }),
  metrics: z.array(AbMetricResult),
  sample_ratio: SampleRatioReport,
  method: z.record(z.string(), z.string()),
});
export type AbReport = z.infer<typeof AbReport>;
