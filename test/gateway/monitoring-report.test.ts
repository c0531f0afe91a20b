// The performance report: sketches merged across pools give the fleet's percentiles (within
// DDSketch's 1 %), each window from its own numbers, tokens/s, top error codes, model ids split into
// name and version, a malformed sketch left out with a log line, resources and the health score.
import { afterEach, describe, expect, it, vi } from "vitest";
import { DDSketch, type DDSketchJson } from "../../gateway/experiments/stats/ddsketch.ts";
import { buildReport, TOP_ERRORS } from "../../gateway/monitoring/report.ts";
import { REPORT_WINDOWS } from "../../schema/monitoring.ts";
import { agent, aggregate, DEFAULTS, minute, pool, spread, windows } from "./monitoring-fixtures.ts";

const NOW = Date.UTC(2026, 6, 1, 12);

/** DDSketch's rank q·(n−1) in the sorted values. */
const exactQuantile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(q * (sorted.length - 1))] ?? Number.NaN;
};

const expectWithin1Percent = (actual: number | null, expected: number) => {
  expect(actual).not.toBeNull();
  expect(Math.abs((actual ?? 0) - expected) / expected).toBeLessThanOrEqual(0.01);
};

afterEach(() => {
  vi.restoreAllMocks();
});

describe("buildReport", () => {
  it("merges one model's sketches from two pools into the fleet's percentiles", () => {
    // Two different distributions: neither pool's own p95 is the fleet's.
    const fast = spread(900, 50, 500);
    const slow = spread(300, 2_000, 9_000);
    const ttftA = spread(900, 10, 100);
    const ttftB = spread(300, 200, 800);
    const report = buildReport(
      [
        pool("default", NOW, {
          windows: windows({
            "5m": { byModel: { "demo:1.0.0": aggregate({ latencies: fast, ttfts: ttftA }) } },
          }),
        }),
        pool("lab-a", NOW, {
          windows: windows({
            "5m": { byModel: { "demo:1.0.0": aggregate({ latencies: slow, ttfts: ttftB }) } },
          }),
        }),
      ],
      [],
      NOW,
    );
    const [row, ...others] = report.windows["5m"].byModel;
    expect(others).toEqual([]);
    expect(row).toMatchObject({ model: "demo", version: "1.0.0", requests: 1200 });
    const all = [...fast, ...slow];
    for (const [q, key] of [
      [0.5, "p50"],
      [0.95, "p95"],
      [0.99, "p99"],
    ] as const) {
      expectWithin1Percent(row?.latencyMs[key] ?? null, exactQuantile(all, q));
      expectWithin1Percent(row?.ttftMs[key] ?? null, exactQuantile([...ttftA, ...ttftB], q));
    }
    // The overall row is the same traffic here.
    expect(report.windows["5m"].overall.latencyMs).toEqual(row?.latencyMs);
  });

  it("reports each window from its own numbers", () => {
    const report = buildReport(
      [
        pool("default", NOW, {
          windows: windows({
            "1m": { byModel: { m: aggregate({ latencies: spread(10, 100, 100) }) } },
            "24h": { byModel: { m: aggregate({ latencies: spread(1000, 3000, 3000), errors: 50 }) } },
          }),
        }),
      ],
      [],
      NOW,
    );
    expect(Object.keys(report.windows)).toEqual([...REPORT_WINDOWS]);
    expect(report.windows["1m"].overall).toMatchObject({ requests: 10, errors: 0, errorRate: 0 });
    expectWithin1Percent(report.windows["1m"].overall.latencyMs.p50, 100);
    expect(report.windows["24h"].overall).toMatchObject({ requests: 1000, errors: 50, errorRate: 0.05 });
    expectWithin1Percent(report.windows["24h"].overall.latencyMs.p99, 3000);
    // A window without traffic: no rows, nothing to divide.
    expect(report.windows["1h"]).toEqual({
      overall: {
        requests: 0,
        errors: 0,
        errorRate: null,
        topErrors: [],
        latencyMs: { p50: null, p95: null, p99: null },
        ttftMs: { p50: null, p95: null, p99: null },
        tokensPerSecond: null,
        promptTokens: 0,
        completionTokens: 0,
      },
      byModel: [],
      byAgent: [],
    });
  });

  it("computes tokens/s as completion tokens over generation time, summed across pools", () => {
    const row = (completionTokens: number, generationMs: number) =>
      aggregate({ latencies: [100], completionTokens, generationMs, promptTokens: 7 });
    const report = buildReport(
      [
        pool("default", NOW, { windows: windows({ "1h": { byModel: { m: row(300, 2_000) } } }) }),
        pool("lab-a", NOW, { windows: windows({ "1h": { byModel: { m: row(100, 2_000) } } }) }),
      ],
      [],
      NOW,
    );
    expect(report.windows["1h"].byModel[0]).toMatchObject({
      tokensPerSecond: 100,
      completionTokens: 400,
      promptTokens: 14,
    });
  });

  it("lists the top error codes, most frequent first, merged across pools", () => {
    const codesA = { ENGINE_ERROR: 4, QUEUE_FULL: 9, GATEWAY_TIMEOUT: 1, NO_AGENT_AVAILABLE: 2 };
    const codesB = { ENGINE_ERROR: 6, UPSTREAM_ERROR: 2, QUEUE_TIMEOUT: 2, SLOW_CONSUMER: 0 };
    const report = buildReport(
      [
        pool("default", NOW, {
          windows: windows({
            "5m": { byModel: { m: aggregate({ errors: 16, errorsByCode: codesA, requests: 40 }) } },
          }),
        }),
        pool("lab-a", NOW, {
          windows: windows({
            "5m": { byModel: { n: aggregate({ errors: 10, errorsByCode: codesB, requests: 10 }) } },
          }),
        }),
      ],
      [],
      NOW,
    );
    const overall = report.windows["5m"].overall;
    expect(overall).toMatchObject({ requests: 50, errors: 26, errorRate: 26 / 50 });
    expect(overall.topErrors).toHaveLength(TOP_ERRORS);
    expect(overall.topErrors).toEqual([
      { code: "ENGINE_ERROR", count: 10 },
      { code: "QUEUE_FULL", count: 9 },
      { code: "NO_AGENT_AVAILABLE", count: 2 },
      { code: "QUEUE_TIMEOUT", count: 2 },
      { code: "UPSTREAM_ERROR", count: 2 },
    ]);
    expect(report.windows["5m"].byModel.map((r) => [r.model, r.topErrors[0]])).toEqual([
      ["m", { code: "QUEUE_FULL", count: 9 }],
      ["n", { code: "ENGINE_ERROR", count: 6 }],
    ]);
  });

  it("splits model ids into name and version, and never throws on one that is no model id", () => {
    const report = buildReport(
      [
        pool("default", NOW, {
          windows: windows({
            "1m": {
              byModel: {
                "demo:1.2.0": aggregate({ requests: 1 }),
                "qwen2.5:0.5b": aggregate({ requests: 1 }),
                "(other)": aggregate({ requests: 1 }),
                demo: aggregate({ requests: 1 }),
              },
            },
          }),
        }),
      ],
      [],
      NOW,
    );
    expect(report.windows["1m"].byModel.map((r) => [r.model, r.version])).toEqual([
      ["(other)", null],
      ["demo", null],
      ["demo", "1.2.0"],
      ["qwen2.5:0.5b", null],
    ]);
  });

  it("leaves a malformed sketch out of the percentiles, with one log line, and counts its requests", () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    const good = spread(100, 1_000, 2_000);
    const report = buildReport(
      [
        pool("default", NOW, {
          windows: windows({ "5m": { byModel: { m: aggregate({ latencies: good }) } } }),
        }),
        pool("lab-a", NOW, {
          windows: windows({
            "5m": {
              byModel: {
                m: {
                  ...aggregate({ latencies: spread(100, 50_000, 60_000) }),
                  latencyMs: { indexes: "nope" },
                },
              },
              byAgent: {
                a1: {
                  ...aggregate({ requests: 3 }),
                  ttftMs: { ...(aggregate().ttftMs as object), counts: [1] },
                },
              },
            },
          }),
        }),
      ],
      [],
      NOW,
    );
    const row = report.windows["5m"].byModel[0];
    expect(row?.requests).toBe(200);
    expectWithin1Percent(row?.latencyMs.p99 ?? null, exactQuantile(good, 0.99));
    expect(report.windows["5m"].byAgent).toMatchObject([{ agent: "a1", pool: "lab-a", requests: 3 }]);
    expect(warn).toHaveBeenCalledTimes(1);
    const line = JSON.parse(String(warn.mock.calls[0]?.[0]));
    expect(line).toMatchObject({
      level: "warn",
      total: 2,
      skipped: [
        { pool: "lab-a", window: "5m", of: "model m", count: 1 },
        { pool: "lab-a", window: "5m", of: "agent a1", count: 1 },
      ],
    });
  });

  it("lists agents per pool with their resources, the health score and the pools that did not answer", () => {
    const report = buildReport(
      [
        pool("lab-a", NOW, {
          agents: [agent("b1", { memoryUsedPercent: 92.5, inFlight: 2, tokensPerSecond: 31.5 })],
          windows: windows({ "5m": { byAgent: { b1: aggregate({ latencies: [100, 200] }) } } }),
        }),
        pool("default", NOW, {
          agents: [agent("a1", { up: false, lostAt: NOW - 1000 })],
          windows: windows({ "5m": { byAgent: { a1: aggregate({ latencies: [300] }) } } }),
        }),
      ],
      ["lab-b"],
      NOW,
    );
    expect(report.generatedAt).toBe(new Date(NOW).toISOString());
    expect(report.unreachablePools).toEqual(["lab-b"]);
    expect(report.resources).toEqual([
      {
        agent: "a1",
        pool: "default",
        up: false,
        memoryUsedPercent: 40,
        memoryPressure: "normal",
        cpuPercent: 10,
        gpuPercent: null,
        tokensPerSecond: null,
        inFlight: 0,
        capacity: 4,
      },
      {
        agent: "b1",
        pool: "lab-a",
        up: true,
        memoryUsedPercent: 92.5,
        memoryPressure: "normal",
        cpuPercent: 10,
        gpuPercent: null,
        tokensPerSecond: 31.5,
        inFlight: 2,
        capacity: 4,
      },
    ]);
    expect(report.windows["5m"].byAgent.map((r) => [r.pool, r.agent, r.requests])).toEqual([
      ["default", "a1", 1],
      ["lab-a", "b1", 2],
    ]);
    // Agents' rows are not the overall's (a retried request counts once per attempt there).
    expect(report.windows["5m"].overall.requests).toBe(0);
    // availability: 1 of 2 agents up, 2 of 3 pools answered; memory (100 − 92.5) / 15.
    const components = Object.fromEntries(report.health.components.map((c) => [c.name, c.value]));
    expect(components).toMatchObject({ availability: 0.5, memory: 0.5 });
    expect(report.health.score).toBe(75);
  });

  it("uses the thresholds it is given for the health score", () => {
    const pools = [pool("default", NOW, { agents: [agent("a1", { memoryUsedPercent: 92.5 })] })];
    expect(buildReport(pools, [], NOW).health.score).toBe(95);
    expect(buildReport(pools, [], NOW, { ...DEFAULTS, memoryPercent: 95 }).health.score).toBe(100);
  });

  it("sums the pools' minute points per minute for the fleet's series, sketches merged", () => {
    const t = NOW - (NOW % 60_000);
    const a = pool("default", NOW, { series: [minute(t - 60_000, spread(10, 1, 10)), minute(t, [5])] });
    const b = pool("lab-a", NOW, { series: [minute(t, spread(90, 100, 190))] });
    const series = buildReport([a, b], [], NOW).series;
    expect(series.map((p) => [p.t, p.requests])).toEqual([
      [t - 60_000, 10],
      [t, 91],
    ]);
    const merged = DDSketch.fromJSON(series[1]?.latencyMs as DDSketchJson);
    expect(merged.count).toBe(91);
    expect(merged.quantile(0.5)).toBeGreaterThan(100);
    expect(buildReport([], [], NOW).series).toEqual([]);
  });
});
