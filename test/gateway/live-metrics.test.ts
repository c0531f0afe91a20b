// Live per-version traffic as the hub accumulates it: windows closed on the flush interval with
// requests, errors, latency and TTFT percentiles, tokens/s; a failed write puts its windows back
// (bounded); a version never seen writes nothing.
import { describe, expect, it } from "vitest";
import { type FinishedRequest, LiveMetrics, percentile } from "../../gateway/hub/live-metrics.ts";

const ok = (modelId: string, latencyMs: number, fields: Partial<FinishedRequest> = {}): FinishedRequest => ({
  modelId,
  ok: true,
  latencyMs,
  ttftMs: latencyMs / 10,
  completionTokens: 10,
  generationMs: 500,
  ...fields,
});

describe("percentile", () => {
  it("is the nearest rank, null without samples", () => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i);
    expect(percentile(values, 0.5)).toBe(50);
    expect(percentile(values, 0.95)).toBe(95);
    expect(percentile([7], 0.95)).toBe(7);
    expect(percentile([], 0.5)).toBeNull();
  });
});

describe("LiveMetrics", () => {
  it("closes a window per version when due, with counts, percentiles and tokens per second", () => {
    const live = new LiveMetrics("lab-a", 60_000, 1_000);
    expect(live.nextDue()).toBeNull();
    for (let i = 1; i <= 20; i++) live.record(ok("m:1.0.0", i * 10));
    live.record({ ...ok("m:1.0.0", 5_000), ok: false });
    live.record(ok("m:2.0.0", 30, { ttftMs: null, completionTokens: 0, generationMs: 0 }));
    expect(live.nextDue()).toBe(61_000);
    expect(live.take(60_999)).toEqual([]);
    const windows = live.take(61_000);
    expect(windows).toEqual([
      {
        modelId: "m:1.0.0",
        pool: "lab-a",
        windowStart: 1_000,
        windowEnd: 61_000,
        requests: 21,
        errors: 1,
        latencyP50Ms: 100,
        latencyP95Ms: 190,
        ttftP50Ms: 10,
        tokensPerSecond: 20,
      },
      {
        modelId: "m:2.0.0",
        pool: "lab-a",
        windowStart: 1_000,
        windowEnd: 61_000,
        requests: 1,
        errors: 0,
        latencyP50Ms: 30,
        latencyP95Ms: 30,
        ttftP50Ms: null,
        tokensPerSecond: null,
      },
    ]);
    // Nothing recorded since: nothing due, nothing written.
    expect(live.nextDue()).toBeNull();
    expect(live.take(200_000)).toEqual([]);
  });

  it("keeps the windows of a failed write for the next flush, oldest first", () => {
    const live = new LiveMetrics("default", 1_000, 0);
    live.record(ok("m:1.0.0", 10));
    const first = live.take(1_000);
    expect(first).toHaveLength(1);
    live.putBack(first);
    expect(live.nextDue()).not.toBeNull();
    live.record(ok("m:1.0.0", 20));
    const retried = live.take(2_000);
    expect(retried.map((w) => [w.windowStart, w.latencyP50Ms])).toEqual([
      [0, 10],
      [1_000, 20],
    ]);
    expect(live.take(3_000)).toEqual([]);
  });

  it("bounds its memory: a reservoir of latency samples, and a cap on windows kept while writes fail", () => {
    let seed = 1;
    const random = () => {
      seed = (seed * 16807) % 2147483647;
      return seed / 2147483647;
    };
    const live = new LiveMetrics("default", 1_000, 0, random);
    for (let i = 0; i < 10_000; i++) live.record(ok("m:1.0.0", i % 1000));
    const [window] = live.take(1_000);
    expect(window?.requests).toBe(10_000);
    // A uniform sample of 0..999: the median lands near 500.
    expect(Math.abs((window?.latencyP50Ms ?? 0) - 500)).toBeLessThan(100);
    for (let t = 1; t <= 1_100; t++) {
      live.record(ok("m:1.0.0", 1));
      live.putBack(live.take(t * 1_000 + 1_000));
    }
    expect(live.take(10_000_000).length).toBeLessThanOrEqual(1_024);
  });
});
