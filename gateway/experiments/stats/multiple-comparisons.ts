// Several success metrics in one experiment: Bonferroni's correction, each metric tested at α/m.
// It holds for always-valid p-values and confidence sequences at any stopping time (a union bound
// needs no independence), and it is the one correction that comes with matching simultaneous
// intervals: each metric's confidence sequence at level α/m. Holm would reject a little more often,
// but its step-down has no interval to show beside the p-value, and with m <= 8 metrics the gain is small.

/** The per-metric level: α/m. */
export function bonferroniAlpha(alpha: number, m: number): number {
  return m <= 1 ? alpha : alpha / m;
}

/** Bonferroni-adjusted p-values: min(1, m·p). */
export function bonferroni(pValues: readonly number[]): number[] {
  const m = pValues.length;
  return pValues.map((p) => Math.min(1, p * m));
}
