// ArmStats and its parts: Welford/Chan moments against plain sums, DDSketch quantiles within their
// relative accuracy of exact ones, the distinct-subject sample's levels, merge = one stream, JSON
// round trip and validation, bounded JSON size.
import { describe, expect, it } from "vitest";
import { ArmStats } from "../../gateway/experiments/stats/arm-stats.ts";
import { DDSketch, SKETCH_MAX_BUCKETS } from "../../gateway/experiments/stats/ddsketch.ts";
import {
  DISTINCT_SAMPLE_CAP,
  DistinctSample,
  keptAtLevel,
} from "../../gateway/experiments/stats/distinct-sample.ts";
import { Moments } from "../../gateway/experiments/stats/moments.ts";
import { subjectSampleHash } from "../../schema/rollouts.ts";
import { logNormal, prng } from "./stats-random.ts";

function exactQuantile(sorted: number[], q: number): number {
  return sorted[Math.floor(q * (sorted.length - 1))] ?? Number.NaN;
}

describe("Moments", () => {
  it("matches the two-pass mean and variance, and merging equals one stream", () => {
    const random = prng(1);
    const xs = Array.from({ length: 1000 }, () => 1e6 + random() * 10);
    const whole = new Moments();
    const left = new Moments();
    const right = new Moments();
    xs.forEach((x, i) => {
      whole.add(x);
      (i < 317 ? left : right).add(x);
    });
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    const variance = xs.reduce((s, x) => s + (x - mean) ** 2, 0) / (xs.length - 1);
    expect(whole.mean).toBeCloseTo(mean, 8);
    expect(whole.variance / variance).toBeCloseTo(1, 9);
    left.merge(right);
    expect(left.n).toBe(1000);
    expect(left.mean).toBeCloseTo(mean, 8);
    expect(left.variance / variance).toBeCloseTo(1, 9);
  });

  it("has no variance below two observations", () => {
    const m = new Moments();
    expect(m.variance).toBeNaN();
    m.add(3);
    expect(m.variance).toBeNaN();
    m.add(5);
    expect(m.variance).toBe(2);
  });
});

describe("DDSketch", () => {
  it("answers quantiles within 1% of the exact ones and merges losslessly", () => {
    const random = prng(2);
    const values = Array.from({ length: 20_000 }, () => logNormal(random, Math.log(200), 0.8));
    const whole = new DDSketch();
    const parts = [new DDSketch(), new DDSketch(), new DDSketch()];
    values.forEach((v, i) => {
      whole.add(v);
      parts[i % 3]?.add(v);
    });
    const merged = new DDSketch();
    for (const part of parts) merged.merge(part);
    const sorted = [...values].sort((a, b) => a - b);
    for (const q of [0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1]) {
      const exact = exactQuantile(sorted, q);
      expect(Math.abs(whole.quantile(q) - exact) / exact).toBeLessThanOrEqual(0.0101);
      expect(merged.quantile(q)).toBe(whole.quantile(q));
    }
    expect(merged.count).toBe(20_000);
  });

  it("keeps zeros in their own bucket and bounds its buckets by collapsing the lowest", () => {
    const sketch = new DDSketch();
    sketch.add(0);
    sketch.add(0);
    sketch.add(10);
    expect(sketch.quantile(0.5)).toBe(0);
    // Values over a factor of 1e12: far more than SKETCH_MAX_BUCKETS buckets.
    const wide = new DDSketch();
    const values: number[] = [];
    for (let i = 0; i <= 12_000; i++) values.push(10 ** (-3 + i / 1000));
    for (const v of values) wide.add(v);
    expect(wide.bucketCount).toBeLessThanOrEqual(SKETCH_MAX_BUCKETS);
    // 512 buckets span 10^4.4: the top end (above 10^4.6) keeps its accuracy, the collapsed bottom does not.
    for (const q of [0.7, 0.9, 0.99, 1]) {
      const exact = exactQuantile(values, q);
      expect(Math.abs(wide.quantile(q) - exact) / exact).toBeLessThanOrEqual(0.0101);
    }
    expect(wide.quantile(0)).toBeGreaterThan(100 * (values[0] ?? 0));
    expect(DDSketch.fromJSON(wide.toJSON()).quantile(0.99)).toBe(wide.quantile(0.99));
  });
});

describe("DistinctSample", () => {
  it("keeps exact distinct hashes up to its cap, then samples at a rising level", () => {
    const sample = new DistinctSample();
    for (let i = 0; i < 1000; i++) {
      sample.add(subjectSampleHash("t", `user-${i}`));
      sample.add(subjectSampleHash("t", `user-${i}`));
    }
    expect(sample.level).toBe(0);
    expect(sample.size).toBe(1000);
    for (let i = 1000; i < 100_000; i++) sample.add(subjectSampleHash("t", `user-${i}`));
    expect(sample.size).toBeLessThanOrEqual(DISTINCT_SAMPLE_CAP);
    expect(sample.level).toBeGreaterThanOrEqual(5);
    // The estimate is within a few standard errors of the truth.
    expect(Math.abs(sample.estimate - 100_000) / 100_000).toBeLessThan(0.1);
    const back = DistinctSample.fromJSON(sample.toJSON());
    expect(back.level).toBe(sample.level);
    expect(back.size).toBe(sample.size);
  });

  it("merges as a union at the higher level", () => {
    const a = new DistinctSample();
    const b = new DistinctSample();
    const one = new DistinctSample();
    for (let i = 0; i < 30_000; i++) {
      const h = subjectSampleHash("m", `u${i}`);
      (i < 3000 ? a : b).add(h);
      if (i % 7 === 0) a.add(h);
      one.add(h);
    }
    a.merge(b);
    expect(a.level).toBe(Math.max(one.level, a.level));
    expect(a.countAtLevel(a.level)).toBe(one.level === a.level ? one.size : one.countAtLevel(a.level));
  });

  it("counts at a higher level only the hashes kept there", () => {
    expect(keptAtLevel(0b1000, 3)).toBe(true);
    expect(keptAtLevel(0b1000, 4)).toBe(false);
    expect(keptAtLevel(0xffffffff, 0)).toBe(true);
    expect(keptAtLevel(0, 32)).toBe(true);
    const s = new DistinctSample();
    for (const h of [1, 2, 4, 8, 16]) s.add(h);
    expect(s.countAtLevel(2)).toBe(3);
    expect(() => DistinctSample.fromJSON({ level: 1, hashes: s.toJSON().hashes })).toThrow(
      /not kept at level 1/,
    );
  });
});

describe("ArmStats", () => {
  function observe(stats: ArmStats, random: () => number, n: number, errorRate: number) {
    for (let i = 0; i < n; i++) {
      const latencyMs = logNormal(random, Math.log(800), 0.5);
      stats.record({
        subjectHash: subjectSampleHash("exp", `user-${Math.floor(random() * 500)}`),
        ok: random() >= errorRate,
        latencyMs,
        ttftMs: i % 10 === 0 ? null : latencyMs / 4,
        tokensPerSecond: i % 5 === 0 ? null : 40 + random() * 10,
      });
    }
  }

  it("counts requests and errors, and keeps moments of successes only", () => {
    const stats = ArmStats.empty();
    stats.record({ subjectHash: 1, ok: true, latencyMs: 100, ttftMs: 20, tokensPerSecond: 50 });
    stats.record({ subjectHash: 2, ok: false, latencyMs: 3, ttftMs: null, tokensPerSecond: null });
    stats.record({ subjectHash: 1, ok: true, latencyMs: 0, ttftMs: null, tokensPerSecond: 0 });
    stats.recordFeedback(1);
    stats.recordFeedback(0);
    expect([stats.requests, stats.errors, stats.feedbackCount]).toEqual([3, 1, 2]);
    expect(stats.latencyLog.n).toBe(2);
    // 0 ms is floored at 1 ms in the log moments.
    expect(stats.latencyLog.mean).toBeCloseTo(Math.log(100) / 2, 12);
    expect(stats.ttftLog.n).toBe(1);
    expect(stats.tokensPerSecondLog.n).toBe(1);
    expect(stats.feedback.mean).toBe(0.5);
    expect(stats.subjects.size).toBe(2);
    expect(() => stats.recordFeedback(1.5)).toThrow(/\[0, 1\]/);
  });

  it("round-trips through JSON, and merging hubs equals one hub", () => {
    const random = prng(3);
    const hub1 = ArmStats.empty();
    const hub2 = ArmStats.empty();
    observe(hub1, random, 700, 0.05);
    observe(hub2, random, 300, 0.05);
    const back = ArmStats.fromJSON(JSON.parse(JSON.stringify(hub1)));
    expect(back.toJSON()).toEqual(hub1.toJSON());
    const merged = ArmStats.fromJSON(hub1.toJSON());
    merged.merge(hub2);
    expect(merged.requests).toBe(1000);
    expect(merged.errors).toBe(hub1.errors + hub2.errors);
    expect(merged.latencySketch.count).toBe(hub1.latencySketch.count + hub2.latencySketch.count);
    expect(merged.subjects.size).toBeLessThanOrEqual(500);
  });

  it("rejects malformed JSON with a clear error", () => {
    expect(() => ArmStats.fromJSON(null)).toThrow(/malformed ArmStats JSON/);
    expect(() => ArmStats.fromJSON({ ...ArmStats.empty().toJSON(), version: 99 })).toThrow(/version/);
    expect(() => ArmStats.fromJSON({ ...ArmStats.empty().toJSON(), requests: 1, errors: 2 })).toThrow(
      /more errors than requests/,
    );
    const bad = ArmStats.empty().toJSON();
    bad.latency.sketch.indexes = [1];
    expect(() => ArmStats.fromJSON(bad)).toThrow(/indexes and counts/);
    expect(() =>
      ArmStats.fromJSON({ ...ArmStats.empty().toJSON(), subjects: { level: 0, hashes: "!!" } }),
    ).toThrow(/base64/);
  });

  it("stays well under 64 KiB as JSON at its worst", () => {
    const stats = ArmStats.empty();
    for (let i = 0; i < 50_000; i++) {
      // Latency spread over 1e-3..1e9 ms fills every sketch bucket; a new subject every request.
      const ms = 10 ** (-3 + (12 * i) / 50_000);
      stats.record({
        subjectHash: subjectSampleHash("size", `u${i}`),
        ok: true,
        latencyMs: ms,
        ttftMs: ms,
        tokensPerSecond: 1,
      });
    }
    for (let i = 0; i < 1000; i++)
      stats.record({ subjectHash: 0, ok: true, latencyMs: 1e9, ttftMs: 1e9, tokensPerSecond: 1 });
    const size = JSON.stringify(stats).length;
    expect(size).toBeLessThan(48 * 1024);
  });
});
