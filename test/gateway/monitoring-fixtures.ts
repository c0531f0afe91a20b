// PoolMonitoring as a hub reports it, built by hand for the monitoring tests: healthy defaults that
// each test changes where it means to.
import { DDSketch, type DDSketchJson } from "../../gateway/experiments/stats/ddsketch.ts";
import {
  type AgentTelemetry,
  AlertThresholds,
  type MinutePoint,
  type PoolMonitoring,
  REPORT_WINDOWS,
  type ReportWindow,
  type WindowAggregate,
} from "../../schema/monitoring.ts";

export const DEFAULTS = AlertThresholds.parse({});

export function sketchOf(values: readonly number[]): DDSketchJson {
  const sketch = new DDSketch();
  for (const value of values) sketch.add(value);
  return sketch.toJSON();
}

/** Values spread evenly over [from, to] (n of them). */
export function spread(n: number, from: number, to: number): number[] {
  return Array.from({ length: n }, (_, i) => (n === 1 ? from : from + ((to - from) * i) / (n - 1)));
}

export function aggregate(
  over: Partial<WindowAggregate> & { latencies?: number[]; ttfts?: number[] } = {},
): WindowAggregate {
  const { latencies = [], ttfts = [], ...rest } = over;
  return {
    requests: latencies.length,
    errors: 0,
    errorsByCode: {},
    promptTokens: 0,
    completionTokens: 0,
    generationMs: 0,
    latencyMs: sketchOf(latencies),
    ttftMs: sketchOf(ttfts),
    ...rest,
  };
}

export function agent(id: string, over: Partial<AgentTelemetry> = {}): AgentTelemetry {
  return {
    id,
    name: `${id}-name`,
    pool: "default",
    up: true,
    lostAt: null,
    capacity: 4,
    inFlight: 0,
    draining: false,
    tokensPerSecond: null,
    memoryUsedPercent: 40,
    memoryPressure: "normal",
    cpuPercent: 10,
    gpuPercent: null,
    memoryHighSince: null,
    models: [],
    lastHealthAt: null,
    ...over,
  };
}

type Windows = PoolMonitoring["windows"];
type WindowRows = Partial<{
  byModel: Record<string, WindowAggregate>;
  byAgent: Record<string, WindowAggregate>;
}>;

/** Empty windows, with these rows in the windows named. */
export function windows(rows: Partial<Record<ReportWindow, WindowRows>> = {}): Windows {
  return Object.fromEntries(
    REPORT_WINDOWS.map((w) => [w, { byModel: rows[w]?.byModel ?? {}, byAgent: rows[w]?.byAgent ?? {} }]),
  ) as Windows;
}

export function pool(name: string, at: number, over: Partial<PoolMonitoring> = {}): PoolMonitoring {
  return {
    pool: name,
    at,
    agents: [],
    models: [],
    breakers: [],
    queueDepth: 0,
    windows: windows(),
    recent: [],
    series: [],
    ...over,
  };
}

/** 10 s buckets of the last two minutes before `now`, oldest first; `errorsAt(t)` errors of `perBucket`. */
export function recent(
  now: number,
  perBucket: number,
  errorsAt: (t: number) => number,
): PoolMonitoring["recent"] {
  const start = Math.floor(now / 10_000) * 10_000 - 110_000;
  return Array.from({ length: 12 }, (_, i) => {
    const t = start + i * 10_000;
    return { t, requests: perBucket, errors: errorsAt(t) };
  });
}

/** One minute point with these latencies. */
export function minute(t: number, latencies: number[]): MinutePoint {
  return {
    t,
    requests: latencies.length,
    errors: 0,
    completionTokens: 0,
    generationMs: 0,
    latencyMs: sketchOf(latencies),
  };
}
