// The sample-ratio check: chi-square against jStat and a published example, the distinct sample's
// thinning keeps it valid (few false alarms when assignment is right), and a real mismatch is found.
// @ts-expect-error jstat ships no type declarations; it is used only here, as a reference.
import { jStat } from "jstat";
import { describe, expect, it } from "vitest";
import { DistinctSample } from "../../gateway/experiments/stats/distinct-sample.ts";
import { SRM_P_THRESHOLD, sampleRatioCheck, sampleRatioTest } from "../../gateway/experiments/stats/srm.ts";
import { assignArm, subjectSampleHash } from "../../schema/rollouts.ts";
import { prng } from "./stats-random.ts";

describe("sampleRatioTest", () => {
  it("matches a published example: 821,588 vs 815,482 on a 50/50 split, p ≈ 1.8e-6", () => {
    // Kohavi, Tang & Xu, "Trustworthy Online Controlled Experiments" (2020), ch. 21.
    const check = sampleRatioTest(821_588, 815_482, 0.5);
    expect(check.chiSquare).toBeCloseTo(22.77, 2);
    expect(check.pValue).toBeGreaterThan(1.7e-6);
    expect(check.pValue).toBeLessThan(1.9e-6);
    expect(check.mismatch).toBe(true);
  });

  it("matches jStat's chi-square on uneven splits", () => {
    for (const [a, b, split] of [
      [950, 50, 0.05],
      [700, 330, 0.3],
      [480, 520, 0.5],
      [12, 3, 0.25],
    ] as const) {
      const total = a + b;
      const ea = total * (1 - split);
      const eb = total * split;
      const chi = (a - ea) ** 2 / ea + (b - eb) ** 2 / eb;
      const check = sampleRatioTest(a, b, split);
      expect(check.chiSquare).toBeCloseTo(chi, 10);
      expect(check.pValue).toBeCloseTo(1 - (jStat.chisquare.cdf(chi, 1) as number), 7);
      expect(check.expected).toEqual({ a: ea, b: eb });
    }
  });

  it("handles no subjects and a split of 0 or 1", () => {
    expect(sampleRatioTest(0, 0, 0.5)).toMatchObject({ pValue: 1, mismatch: false });
    expect(sampleRatioTest(10, 0, 0)).toMatchObject({ pValue: 1, mismatch: false });
    expect(sampleRatioTest(10, 1, 0)).toMatchObject({ pValue: 0, mismatch: true, chiSquare: Infinity });
    expect(() => sampleRatioTest(1, 1, 1.5)).toThrow(/split/);
  });
});

describe("sampleRatioCheck on distinct samples", () => {
  function arms(id: string, subjects: number, split: number, dropB = 0, seed = 1) {
    const random = prng(seed);
    const a = new DistinctSample();
    const b = new DistinctSample();
    for (let i = 0; i < subjects; i++) {
      const subject = `u${i}`;
      const arm = assignArm(id, subject, split);
      if (arm === "b" && random() < dropB) continue;
      // Each subject makes a few requests: duplicates must not count.
      for (let r = 0; r < 3; r++) (arm === "a" ? a : b).add(subjectSampleHash(id, subject));
    }
    return { a, b };
  }

  it("sees 2,000 subjects split 30/70 by assignArm without a mismatch, exactly counted", () => {
    const { a, b } = arms("exp-1", 2000, 0.7);
    const check = sampleRatioCheck(a, b, 0.7);
    expect(check.level).toBe(0);
    expect(check.observed.a + check.observed.b).toBe(2000);
    expect(check.mismatch).toBe(false);
  });

  it("compares arms at their common level once the samples are thinned", () => {
    const { a, b } = arms("exp-2", 200_000, 0.1);
    expect(a.level).toBeGreaterThan(b.level);
    const check = sampleRatioCheck(a, b, 0.1);
    expect(check.level).toBe(a.level);
    expect(check.observed.b).toBeLessThan(b.size);
    expect(check.mismatch).toBe(false);
  });

  it("flags a variant that loses 10% of its users, and rarely flags a correct one", () => {
    const lossy = arms("exp-3", 20_000, 0.5, 0.1);
    expect(sampleRatioCheck(lossy.a, lossy.b, 0.5).mismatch).toBe(true);
    // 400 correct experiments of 3,000 subjects each: false alarms at about the threshold's rate.
    let alarms = 0;
    for (let t = 0; t < 400; t++) {
      const { a, b } = arms(`aa-${t}`, 3000, 0.5);
      if (sampleRatioCheck(a, b, 0.5).mismatch) alarms += 1;
    }
    expect(alarms / 400).toBeLessThanOrEqual(SRM_P_THRESHOLD + 3 * Math.sqrt(SRM_P_THRESHOLD / 400));
  });
});
