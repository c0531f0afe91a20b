// The traffic windows on a fake clock: what each report window sums, the rollover of 10 s buckets
// into minutes and hours, the per-minute series, and a restore that folds stored open buckets as
// an awake hub would have.
import { describe, expect, it } from "vitest";
import { DDSketch } from "../../gateway/experiments/stats/ddsketch.ts";
import { HOUR, MINUTE, TrafficWindows } from "../../gateway/metrics/traffic-windows.ts";

const T0 = Date.UTC(2026, 11, 2, 10, 0, 0);

function event(overrides: Partial<Parameters<TrafficWindows["record"]>[0]> = {}) {
  return {
    model: "m:1.0.0",
    agent: "a1",
    ok: true,
    code: null,
    latencyMs: 100,
    ttftMs: 10,
    promptTokens: 4,
    completionTokens: 8,
    generationMs: 80,
    ...overrides,
  };
}

describe("TrafficWindows", () => {
  it("sums each window from its buckets", () => {
    const w = new TrafficWindows(T0);
    // One request a minute for 90 minutes, the last one failing.
    for (let i = 0; i < 90; i++) {
      const failed = i === 89;
      w.record(
        event({ ok: !failed, code: failed ? "UPSTREAM_ERROR" : null, latencyMs: 100 + i }),
        T0 + i * MINUTE,
      );
    }
    const now = T0 + 89 * MINUTE + 1_000;
    const oneMinute = w.window("1m", now).byModel.get("m:1.0.0");
    expect(oneMinute?.requests).toBe(1);
    expect(oneMinute?.errorsByCode.get("UPSTREAM_ERROR")).toBe(1);
    expect(w.window("5m", now).byModel.get("m:1.0.0")?.requests).toBe(5);
    // The last hour: minutes 30..89 (60 of them), each a closed minute or the open one.
    const hour = w.window("1h", now).byModel.get("m:1.0.0");
    expect(hour?.requests).toBe(60);
    expect(hour?.errors).toBe(1);
    // Successful requests only in the sketch and the tokens.
    expect(hour?.latency.count).toBe(59);
    expect(hour?.completionTokens).toBe(59 * 8);
    expect(w.window("24h", now).byModel.get("m:1.0.0")?.requests).toBe(90);
    expect(w.window("24h", now).byAgent.get("a1")?.requests).toBe(90);
  });

  it("reports the last two minutes in 10 s buckets and the last hour per minute", () => {
    const w = new TrafficWindows(T0);
    for (let s = 0; s < 180; s += 5)
      w.record(event({ ok: s % 10 === 0, code: s % 10 === 0 ? null : "X" }), T0 + s * 1000);
    const now = T0 + 180_000;
    const recent = w.recent(2 * MINUTE, now);
    expect(recent.at(-1)?.t).toBe(now);
    expect(recent.every((b) => b.t > now - 2 * MINUTE)).toBe(true);
    expect(recent).toHaveLength(12);
    expect(recent.filter((b) => b.requests > 0).every((b) => b.requests === 2 && b.errors === 1)).toBe(true);
    const series = w.series(now);
    expect(series.map((p) => p.t)).toEqual([T0, T0 + MINUTE, T0 + 2 * MINUTE]);
    expect(series.slice(0, 3).map((p) => p.requests)).toEqual([12, 12, 12]);
    expect(DDSketch.fromJSON(series[0]?.latencyMs as never).count).toBe(6);
  });

  it("writes each closed minute and hour once, and expires them", () => {
    const w = new TrafficWindows(T0);
    w.record(event(), T0);
    w.advance(T0 + MINUTE);
    expect(w.takeWrites().minutes.map((b) => b.start)).toEqual([T0]);
    expect(w.takeWrites().minutes).toEqual([]);
    w.advance(T0 + 2 * HOUR);
    const writes = w.takeWrites();
    expect(writes.hours.map((b) => b.start)).toEqual([T0]);
    expect(writes.expiredMinutes).toEqual([T0]);
  });

  it("restores stored buckets as if the hub had stayed awake", () => {
    const before = new TrafficWindows(T0);
    before.record(event(), T0 + 5_000);
    before.record(event(), T0 + 15_000);
    const stored = JSON.parse(JSON.stringify(before.openState()));
    // Woken two minutes later, after one request of its own.
    const after = new TrafficWindows(T0 + 2 * MINUTE);
    after.record(event({ agent: "a2" }), T0 + 2 * MINUTE);
    after.restore({ open: stored, minutes: [], hours: [] }, T0 + 2 * MINUTE + 1);
    const now = T0 + 2 * MINUTE + 1;
    expect(after.window("1h", now).byModel.get("m:1.0.0")?.requests).toBe(3);
    expect(after.window("5m", now).byModel.get("m:1.0.0")?.requests).toBe(3);
    expect(after.window("1m", now).byModel.get("m:1.0.0")?.requests).toBe(1);
    // The minute the stored buckets belonged to is now closed: written once.
    expect(after.takeWrites().minutes.map((b) => b.start)).toEqual([T0]);
  });

  it("skips malformed stored buckets", () => {
    const w = new TrafficWindows(T0);
    w.restore(
      { open: { open: { start: "x" }, tenSeconds: [42] }, minutes: [{ start: T0 }, null], hours: ["?"] },
      T0,
    );
    expect(w.window("24h", T0).byModel.size).toBe(0);
  });
});
