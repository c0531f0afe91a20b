// The always-valid tests against independent computations (jStat for the normal and chi-square
// tails, numerical integration of the mixture likelihood ratio) and by simulation: A/A tests checked
// after every observation keep their false-positive rate at or below α, and a real difference is
// found with at least the power the confidence sequence's width predicts.
// @ts-expect-error jstat ships no type declarations; it is used only here, as a reference.
import { jStat } from "jstat";
import { describe, expect, it } from "vitest";
import { Moments } from "../../gateway/experiments/stats/moments.ts";
import { bonferroni, bonferroniAlpha } from "../../gateway/experiments/stats/multiple-comparisons.ts";
import { chiSquare1Survival, erfc, normalCdf } from "../../gateway/experiments/stats/normal.ts";
import {
  alwaysValidPValue,
  confidenceSequenceHalfWidth,
  differenceOfMeans,
  differenceOfProportions,
  mixtureLogLikelihoodRatio,
  optimalVarianceRatio,
} from "../../gateway/experiments/stats/sequential.ts";
import { normal, prng } from "./stats-random.ts";

describe("normal and chi-square tails", () => {
  it("match jStat to 1e-7 relative", () => {
    for (const z of [-6, -3.29, -1.96, -0.5, 0, 0.3, 1, 1.645, 2.58, 4, 6]) {
      const ref = jStat.normal.cdf(z, 0, 1) as number;
      expect(Math.abs(normalCdf(z) - ref) / ref).toBeLessThan(2e-7);
    }
    for (const x of [0.01, 0.5, 1, 3.84, 6.63, 10.83, 20, 40]) {
      const ref = 1 - (jStat.chisquare.cdf(x, 1) as number);
      expect(Math.abs(chiSquare1Survival(x) - ref) / ref).toBeLessThan(1e-6);
    }
    expect(erfc(0)).toBeCloseTo(1, 7);
    expect(chiSquare1Survival(0)).toBe(1);
  });
});

describe("mixture SPRT", () => {
  it("its closed-form likelihood ratio equals the mixture integral, computed numerically", () => {
    for (const [estimate, v, tau2] of [
      [0.3, 0.01, 0.05],
      [-0.05, 0.002, 0.001],
      [1.2, 0.5, 2],
    ] as const) {
      // Λ = ∫ N(θ̂; θ, v) / N(θ̂; 0, v) · N(θ; 0, τ²) dθ, trapezoid over ±12τ.
      const tau = Math.sqrt(tau2);
      const steps = 20_000;
      const h = (24 * tau) / steps;
      const sd = Math.sqrt(v);
      let integral = 0;
      for (let i = 0; i <= steps; i++) {
        const theta = -12 * tau + i * h;
        const w = i === 0 || i === steps ? 0.5 : 1;
        integral +=
          w *
          ((jStat.normal.pdf(estimate, theta, sd) as number) /
            (jStat.normal.pdf(estimate, 0, sd) as number)) *
          (jStat.normal.pdf(theta, 0, tau) as number);
      }
      integral *= h;
      expect(Math.exp(mixtureLogLikelihoodRatio(estimate, v, tau2))).toBeCloseTo(integral, 6);
    }
  });

  it("its confidence sequence's edge is where 1/Λ = α", () => {
    const v = 0.004;
    const tau2 = 0.03;
    for (const alpha of [0.05, 0.01, 0.001]) {
      const half = confidenceSequenceHalfWidth(v, tau2, alpha);
      expect(alwaysValidPValue(0.2 + half, v, tau2, 0.2)).toBeCloseTo(alpha, 12);
      expect(alwaysValidPValue(0.2 - half, v, tau2, 0.2)).toBeCloseTo(alpha, 12);
      expect(alwaysValidPValue(0.2, v, tau2, 0.2)).toBe(1);
    }
  });

  it("tunes τ² to the narrowest interval: ρ minimizes the half-width", () => {
    for (const alpha of [0.05, 0.01]) {
      const rho = optimalVarianceRatio(alpha);
      const width = (r: number) => confidenceSequenceHalfWidth(1, r, alpha);
      expect(width(rho)).toBeLessThanOrEqual(width(rho * 1.05));
      expect(width(rho)).toBeLessThanOrEqual(width(rho / 1.05));
    }
    // At α = 0.05 the narrowest half-width is ≈ 3.035 standard errors (1.96 for one fixed look).
    expect(confidenceSequenceHalfWidth(1, optimalVarianceRatio(0.05), 0.05)).toBeCloseTo(3.035, 3);
  });

  it("regularizes proportions so that zero errors has a variance (Agresti–Caffo)", () => {
    const none = differenceOfProportions({ events: 0, n: 50 }, { events: 0, n: 50 }, { alpha: 0.05 });
    expect(none?.estimate).toBe(0);
    expect(none?.variance).toBeGreaterThan(0);
    expect(none?.pValue).toBe(1);
    const all = differenceOfProportions({ events: 0, n: 50 }, { events: 50, n: 50 }, { alpha: 0.05 });
    expect(all?.estimate).toBeCloseTo(51 / 52 - 1 / 52, 12);
    expect(all?.lower).toBeGreaterThan(0.8);
    expect(all?.pValue).toBeLessThan(1e-10);
    expect(differenceOfProportions({ events: 0, n: 0 }, { events: 1, n: 3 }, { alpha: 0.05 })).toBeNull();
  });

  it("a difference of means needs two observations per arm; constant arms are known exactly", () => {
    const m = (xs: number[]) => {
      const out = new Moments();
      for (const x of xs) out.add(x);
      return out;
    };
    expect(differenceOfMeans(m([1]), m([1, 2]), { alpha: 0.05 })).toBeNull();
    expect(differenceOfMeans(m([2, 2]), m([2, 2, 2]), { alpha: 0.05 })).toMatchObject({
      estimate: 0,
      pValue: 1,
    });
    expect(differenceOfMeans(m([2, 2]), m([3, 3]), { alpha: 0.05 })).toMatchObject({
      estimate: 1,
      pValue: 0,
    });
  });
});

describe("Bonferroni", () => {
  it("multiplies p-values by m (capped at 1) and divides α", () => {
    expect(bonferroni([0.01, 0.2, 0.6])).toEqual([0.03, 0.6000000000000001, 1]);
    expect(bonferroniAlpha(0.05, 1)).toBe(0.05);
    expect(bonferroniAlpha(0.05, 4)).toBe(0.0125);
  });
});

/**
 * Runs `tests` experiments of up to `looks` observations per arm, checking after every pair and
 * stopping at the first p < α; returns the share that ever rejected.
 */
function simulateMeans(seed: number, tests: number, looks: number, effect: number, alpha: number): number {
  const random = prng(seed);
  let rejected = 0;
  for (let t = 0; t < tests; t++) {
    const a = new Moments();
    const b = new Moments();
    for (let i = 0; i < looks; i++) {
      a.add(normal(random));
      b.add(effect + normal(random));
      const result = differenceOfMeans(a, b, { alpha });
      if (result !== null && result.pValue < alpha) {
        rejected += 1;
        break;
      }
    }
  }
  return rejected / tests;
}

function simulateProportions(
  seed: number,
  tests: number,
  looks: number,
  pa: number,
  pb: number,
  alpha: number,
): number {
  const random = prng(seed);
  let rejected = 0;
  for (let t = 0; t < tests; t++) {
    const a = { events: 0, n: 0 };
    const b = { events: 0, n: 0 };
    for (let i = 0; i < looks; i++) {
      a.n += 1;
      b.n += 1;
      if (random() < pa) a.events += 1;
      if (random() < pb) b.events += 1;
      const result = differenceOfProportions(a, b, { alpha });
      if (result !== null && result.pValue < alpha) {
        rejected += 1;
        break;
      }
    }
  }
  return rejected / tests;
}

/** Three binomial standard errors of a rate p over `tests` runs: the Monte-Carlo slack. */
const slack = (p: number, tests: number) => 3 * Math.sqrt((p * (1 - p)) / tests);

describe("simulation: continuous monitoring", () => {
  const alpha = 0.05;
  const tests = 2000;

  it("an A/A test of means checked after every observation keeps its false-positive rate <= α", () => {
    const rate = simulateMeans(11, tests, 1000, 0, alpha);
    console.log(`A/A means: ${tests} tests x 1000 looks, false-positive rate ${rate}`);
    expect(rate).toBeLessThanOrEqual(alpha + slack(alpha, tests));
  });

  it("an A/A test of error rates (5% both) checked after every request keeps its false-positive rate <= α", () => {
    const rate = simulateProportions(12, tests, 1000, 0.05, 0.05, alpha);
    console.log(`A/A proportions: ${tests} tests x 1000 looks, false-positive rate ${rate}`);
    expect(rate).toBeLessThanOrEqual(alpha + slack(alpha, tests));
  });

  it("a real difference of 0.2 standard deviations is found with the predicted power", () => {
    const looks = 1000;
    const effect = 0.2;
    // At the last look the estimate's z is effect/sqrt(2/N); rejecting there needs z above the
    // sequence's boundary, so the power is at least Φ(z − boundary).
    const v = 2 / looks;
    const boundary =
      confidenceSequenceHalfWidth(v, (optimalVarianceRatio(alpha) * 2) / 1000, alpha) / Math.sqrt(v);
    const predicted = normalCdf(effect / Math.sqrt(v) - boundary);
    const power = simulateMeans(13, 1000, looks, effect, alpha);
    console.log(
      `power, means: ${power} (predicted at least ${predicted.toFixed(3)}; one fixed look: ${normalCdf(effect / Math.sqrt(v) - 1.96).toFixed(3)})`,
    );
    expect(power).toBeGreaterThanOrEqual(predicted - slack(predicted, 1000));
  });

  it("an error-rate increase from 2% to 8% is found with the predicted power", () => {
    const looks = 600;
    const v = (0.02 * 0.98 + 0.08 * 0.92) / looks;
    const tau2 = (optimalVarianceRatio(alpha) * (0.02 * 0.98 + 0.08 * 0.92)) / 1000;
    const boundary = confidenceSequenceHalfWidth(v, tau2, alpha) / Math.sqrt(v);
    const predicted = normalCdf(0.06 / Math.sqrt(v) - boundary);
    const power = simulateProportions(14, 1000, looks, 0.02, 0.08, alpha);
    console.log(`power, proportions: ${power} (predicted at least ${predicted.toFixed(3)})`);
    expect(power).toBeGreaterThanOrEqual(predicted - slack(predicted, 1000));
  });
});
