// Always-valid inference for continuously monitored experiments: the normal-mixture sequential
// probability ratio test (mSPRT) and its confidence sequence (Robbins 1970; Johari, Koomen, Pekelis
// & Walsh, "Always Valid Inference: Continuous Monitoring of A/B Tests", Operations Research 2022).
// For an estimate θ̂ with (estimated) variance v, mixing the likelihood ratio over θ ~ N(θ0, τ²) gives
//   Λ = sqrt(v/(v+τ²)) · exp(τ²(θ̂−θ0)² / (2v(v+τ²))),
// a nonnegative martingale under θ = θ0, so by Ville's inequality P(sup_t Λ_t >= 1/α) <= α: looking
// after every request and stopping at the first significant look is still a level-α test. The
// interval {θ0 : Λ(θ0) < 1/α} is a (1−α) confidence sequence, valid at every time at once:
//   |θ̂−θ0| <= sqrt(v(v+τ²)/τ² · (2 ln(1/α) + ln((v+τ²)/v))).
// With plug-in variances and the CLT the guarantee is asymptotic (the A/A simulations in
// test/gateway/stats-sequential.test.ts measure it at the sample sizes we use).
//
// The p-value returned is the stateless min(1, 1/Λ_t) of the current look. It is below α exactly
// when the current confidence sequence excludes θ0, and P(it is ever below α) <= α; a caller that
// wants a p-value that never rises again keeps the running minimum (only monotonicity needs it).
//
// Choice of τ²: the mixing variance is set on the standardized scale, τ² = ρ·σ²/n*, where σ² is the
// per-observation variance of the estimate (σ²_a + σ²_b for a difference of two arms), n* is the
// tuning sample size per arm at which the sequence should be narrowest, and ρ ≈ 8–11 (depending on
// α) is the ratio τ²/v that minimizes the half-width relative to sqrt(v). So τ is "the effect size of
// interest in standard deviations", chosen once, as Johari et al. recommend, and the test is
// scale-free across metrics (a proportion, log milliseconds, a [0, 1] score). The width barely
// depends on n*: within a factor 10 of it, the half-width is ~3.1–3.5·sqrt(v) at α = 0.05 (against
// 1.96·sqrt(v) for a single fixed-horizon look). GrowthBook's sequential engine does the same.

/** Observations per arm at which the confidence sequence is narrowest, unless a caller says otherwise. */
export const DEFAULT_TUNING_N = 1000;

export interface SequentialResult {
  /** θ̂ (b − a). */
  estimate: number;
  /** Its estimated variance v. */
  variance: number;
  /** The mixing variance τ². */
  tau2: number;
  alpha: number;
  /** The (1 − α) confidence sequence at this look. */
  lower: number;
  upper: number;
  /** Always-valid p-value for θ = 0 at this look, min(1, 1/Λ). */
  pValue: number;
}

/** ln Λ for null θ0: the mixture likelihood ratio's logarithm. */
export function mixtureLogLikelihoodRatio(
  estimate: number,
  variance: number,
  tau2: number,
  theta0 = 0,
): number {
  const d = estimate - theta0;
  if (variance === 0) return d === 0 ? 0 : Number.POSITIVE_INFINITY;
  return 0.5 * Math.log(variance / (variance + tau2)) + (tau2 * d * d) / (2 * variance * (variance + tau2));
}

/** min(1, 1/Λ): below α exactly when the confidence sequence excludes θ0. */
export function alwaysValidPValue(estimate: number, variance: number, tau2: number, theta0 = 0): number {
  return Math.min(1, Math.exp(-mixtureLogLikelihoodRatio(estimate, variance, tau2, theta0)));
}

/** The confidence sequence's half-width at this look. */
export function confidenceSequenceHalfWidth(variance: number, tau2: number, alpha: number): number {
  if (variance === 0) return 0;
  return Math.sqrt(
    ((variance * (variance + tau2)) / tau2) *
      (2 * Math.log(1 / alpha) + Math.log((variance + tau2) / variance)),
  );
}

/**
 * ρ = τ²/v minimizing the half-width relative to sqrt(v), (1+ρ)/ρ · (2 ln(1/α) + ln(1+ρ)), by a
 * golden-section search on ln ρ (the function is unimodal there).
 */
export function optimalVarianceRatio(alpha: number): number {
  const known = optimalRatios.get(alpha);
  if (known !== undefined) return known;
  const rho = searchVarianceRatio(alpha);
  if (optimalRatios.size < 64) optimalRatios.set(alpha, rho);
  return rho;
}

/** A pure function's results, bounded: the same few alphas are asked for on every report. */
const optimalRatios = new Map<number, number>();

function searchVarianceRatio(alpha: number): number {
  const c = 2 * Math.log(1 / alpha);
  const f = (logRho: number) => {
    const rho = Math.exp(logRho);
    return ((1 + rho) / rho) * (c + Math.log1p(rho));
  };
  let lo = -5;
  let hi = 10;
  const g = (Math.sqrt(5) - 1) / 2;
  for (let i = 0; i < 60; i++) {
    const x1 = hi - g * (hi - lo);
    const x2 = lo + g * (hi - lo);
    if (f(x1) < f(x2)) hi = x2;
    else lo = x1;
  }
  return Math.exp((lo + hi) / 2);
}

/** τ² = ρ(α)·σ²/n*: the mixture is fixed on the standardized effect (see the module comment). */
export function mixingVariance(unitVariance: number, alpha: number, tuningN = DEFAULT_TUNING_N): number {
  return (optimalVarianceRatio(alpha) * unitVariance) / tuningN;
}

/** The mSPRT of θ = 0 and the confidence sequence for an estimate, its variance and τ². */
export function sequentialTest(
  estimate: number,
  variance: number,
  tau2: number,
  alpha: number,
): SequentialResult {
  const half = confidenceSequenceHalfWidth(variance, tau2, alpha);
  return {
    estimate,
    variance,
    tau2,
    alpha,
    lower: estimate - half,
    upper: estimate + half,
    pValue: alwaysValidPValue(estimate, variance, tau2),
  };
}

/** What a difference of means needs from each arm. */
export interface MeanSummary {
  n: number;
  mean: number;
  /** Unbiased sample variance. */
  variance: number;
}

export interface TestOptions {
  alpha: number;
  /** n* per arm (DEFAULT_TUNING_N). */
  tuningN?: number;
}

/**
 * b − a for two means (Welch: v = s²a/na + s²b/nb). Null with fewer than two observations in an arm,
 * where no variance can be estimated.
 */
export function differenceOfMeans(
  a: MeanSummary,
  b: MeanSummary,
  options: TestOptions,
): SequentialResult | null {
  if (a.n < 2 || b.n < 2 || !Number.isFinite(a.variance) || !Number.isFinite(b.variance)) return null;
  const variance = a.variance / a.n + b.variance / b.n;
  const tau2 = mixingVariance(a.variance + b.variance, options.alpha, options.tuningN);
  if (tau2 === 0) {
    // Both arms constant: the difference is known exactly.
    const estimate = b.mean - a.mean;
    return {
      estimate,
      variance: 0,
      tau2: 0,
      alpha: options.alpha,
      lower: estimate,
      upper: estimate,
      pValue: estimate === 0 ? 1 : 0,
    };
  }
  return sequentialTest(b.mean - a.mean, variance, tau2, options.alpha);
}

export interface ProportionSummary {
  /** Events counted (errors). */
  events: number;
  n: number;
}

/**
 * b − a for two proportions, regularized as Agresti & Caffo ("Simple and Effective Confidence
 * Intervals for Proportions and Differences of Proportions Result from Adding Two Successes and Two
 * Failures", The American Statistician 2000): one event and one non-event added to each arm, so
 * zero errors on both sides still has a variance and 0/50 vs 50/50 is an estimate of 0.96, not 1.
 * Null when an arm has no observation.
 */
export function differenceOfProportions(
  a: ProportionSummary,
  b: ProportionSummary,
  options: TestOptions,
): SequentialResult | null {
  if (a.n < 1 || b.n < 1) return null;
  const pa = (a.events + 1) / (a.n + 2);
  const pb = (b.events + 1) / (b.n + 2);
  const unitA = pa * (1 - pa);
  const unitB = pb * (1 - pb);
  const variance = unitA / (a.n + 2) + unitB / (b.n + 2);
  const tau2 = mixingVariance(unitA + unitB, options.alpha, options.tuningN);
  return sequentialTest(pb - pa, variance, tau2, options.alpha);
}

/** One arm's mean with its always-valid interval (v = s²/n, τ² = ρσ²/n*); null below two observations. */
export function meanConfidenceSequence(summary: MeanSummary, options: TestOptions): SequentialResult | null {
  if (summary.n < 2 || !Number.isFinite(summary.variance)) return null;
  const tau2 = mixingVariance(summary.variance, options.alpha, options.tuningN);
  if (tau2 === 0)
    return { ...sequentialTest(summary.mean, 0, 0, options.alpha), lower: summary.mean, upper: summary.mean };
  return sequentialTest(summary.mean, summary.variance / summary.n, tau2, options.alpha);
}

/** One arm's proportion, regularized as in differenceOfProportions, with its always-valid interval. */
export function proportionConfidenceSequence(
  summary: ProportionSummary,
  options: TestOptions,
): SequentialResult | null {
  if (summary.n < 1) return null;
  const p = (summary.events + 1) / (summary.n + 2);
  const unit = p * (1 - p);
  const result = sequentialTest(
    p,
    unit / (summary.n + 2),
    mixingVariance(unit, options.alpha, options.tuningN),
    options.alpha,
  );
  return { ...result, lower: Math.max(0, result.lower), upper: Math.min(1, result.upper) };
}
