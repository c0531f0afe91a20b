// Sample-ratio mismatch: are the subjects seen in each arm in the proportion the assignment
// promised? A chi-square goodness-of-fit test on the distinct-subject counts (1 degree of freedom),
// flagged at p < 0.001 as Fabijan et al. recommend ("Diagnosing Sample Ratio Mismatch in Online
// Controlled Experiments", KDD 2019): a mismatch means the arms are not comparable (a crashing arm
// that loses its users, a cache, a bug in assignment), so no verdict is given. The strict threshold
// also keeps the false alarms of looking at every report rare.

import type { DistinctSample } from "./distinct-sample.ts";
import { chiSquare1Survival } from "./normal.ts";

export const SRM_P_THRESHOLD = 0.001;

export interface SampleRatioCheck {
  /** Sampled distinct subjects per arm, both at `level` (each subject kept with probability 2^-level). */
  observed: { a: number; b: number };
  expected: { a: number; b: number };
  /** Share of subjects expected in b. */
  split: number;
  level: number;
  chiSquare: number;
  pValue: number;
  threshold: number;
  mismatch: boolean;
}

/** Chi-square goodness of fit of two counts to the expected share of b. */
export function sampleRatioTest(
  observedA: number,
  observedB: number,
  split: number,
  threshold = SRM_P_THRESHOLD,
): Omit<SampleRatioCheck, "level"> {
  if (!(split >= 0 && split <= 1)) throw new Error(`split must be in [0, 1], got ${split}`);
  const total = observedA + observedB;
  const expected = { a: total * (1 - split), b: total * split };
  let chiSquare = 0;
  let impossible = false;
  for (const [o, e] of [
    [observedA, expected.a],
    [observedB, expected.b],
  ] as const) {
    if (e > 0) chiSquare += (o - e) ** 2 / e;
    else if (o > 0) impossible = true;
  }
  const pValue = total === 0 ? 1 : impossible ? 0 : chiSquare1Survival(chiSquare);
  return {
    observed: { a: observedA, b: observedB },
    expected,
    split,
    chiSquare: impossible ? Number.POSITIVE_INFINITY : chiSquare,
    pValue,
    threshold,
    mismatch: pValue < threshold,
  };
}

/** The test on two arms' distinct-subject samples, thinned to their common (higher) level. */
export function sampleRatioCheck(
  a: DistinctSample,
  b: DistinctSample,
  split: number,
  threshold = SRM_P_THRESHOLD,
): SampleRatioCheck {
  const level = Math.max(a.level, b.level);
  return { ...sampleRatioTest(a.countAtLevel(level), b.countAtLevel(level), split, threshold), level };
}
