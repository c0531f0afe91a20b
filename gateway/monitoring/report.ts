// GET /performance/report's body from what every pool's hub reports: per window (1 min, 5 min,
// 1 h, 24 h) the whole fleet, each model version and each agent, with latency and TTFT percentiles
// from the hubs' DDSketches merged across pools (within the sketches' 1 %), tokens/s, error rate and
// the top error codes; each agent's resources; the health score.
import {
  AlertThresholds,
  type MinutePoint,
  type PerformanceReport,
  type PoolMonitoring,
  REPORT_WINDOWS,
  type ReportRow,
  type ReportWindow,
  type WindowAggregate,
} from "../../schema/monitoring.ts";
import type { DDSketch } from "../experiments/stats/ddsketch.ts";
import { log } from "../log.ts";
import { healthScore } from "./health-score.ts";
import { splitModelId } from "./model-labels.ts";
import { quantileOf, SketchSum } from "./sketches.ts";

/** Error codes a row lists, most frequent first. */
export const TOP_ERRORS = 5;

const DEFAULT_THRESHOLDS = AlertThresholds.parse({});

export function buildReport(
  pools: readonly PoolMonitoring[],
  unreachable: readonly string[],
  now: number,
  thresholds: AlertThresholds = DEFAULT_THRESHOLDS,
): PerformanceReport {
  const skipped: { pool: string; window: ReportWindow; of: string; count: number }[] = [];
  const windows = {} as PerformanceReport["windows"];
  for (const window of REPORT_WINDOWS) {
    const byModel = new Map<string, Tagged[]>();
    const byAgent = new Map<string, Tagged[]>();
    for (const pool of pools) {
      for (const [model, row] of Object.entries(pool.windows[window].byModel)) {
        push(byModel, model, { pool: pool.pool, of: `model ${model}`, row });
      }
      for (const [agent, row] of Object.entries(pool.windows[window].byAgent)) {
        push(byAgent, JSON.stringify([pool.pool, agent]), { pool: pool.pool, of: `agent ${agent}`, row });
      }
    }
    const summarize = (rows: Tagged[]): ReportRow => {
      const { row, malformed } = reportRow(rows.map((r) => r.row));
      malformed.forEach((count, i) => {
        const tagged = rows[i];
        if (count > 0 && tagged) skipped.push({ pool: tagged.pool, window, of: tagged.of, count });
      });
      return row;
    };
    windows[window] = {
      // Only the per-model rows: an agent's count each attempt, so a retried request would count twice.
      overall: reportRow([...byModel.values()].flat().map((r) => r.row)).row,
      byModel: [...byModel]
        .map(([id, rows]) => ({ ...splitModelId(id), ...summarize(rows) }))
        .sort((a, b) => compare(a.model, b.model) || compare(a.version ?? "", b.version ?? "")),
      byAgent: [...byAgent]
        .map(([key, rows]) => {
          const [pool, agent] = JSON.parse(key) as [string, string];
          return { agent, pool, ...summarize(rows) };
        })
        .sort((a, b) => compare(a.pool, b.pool) || compare(a.agent, b.agent)),
    };
  }
  if (skipped.length > 0) {
    log("warn", "performance report: malformed latency/TTFT sketches left out of the percentiles", {
      skipped: skipped.slice(0, 20),
      total: skipped.reduce((n, s) => n + s.count, 0),
    });
  }
  return {
    generatedAt: new Date(now).toISOString(),
    windows,
    resources: pools
      .flatMap((pool) =>
        pool.agents.map((a) => ({
          agent: a.id,
          pool: pool.pool,
          up: a.up,
          memoryUsedPercent: a.memoryUsedPercent,
          memoryPressure: a.memoryPressure,
          cpuPercent: a.cpuPercent,
          gpuPercent: a.gpuPercent,
          tokensPerSecond: a.tokensPerSecond,
          inFlight: a.inFlight,
          capacity: a.capacity,
        })),
      )
      .sort((a, b) => compare(a.pool, b.pool) || compare(a.agent, b.agent)),
    health: healthScore(pools, thresholds, unreachable),
    unreachablePools: [...unreachable].sort(),
    series: fleetSeries(pools),
  };
}

/** The pools' minute points of the last hour summed per minute, latency sketches merged, oldest first. */
export function fleetSeries(pools: readonly PoolMonitoring[]): MinutePoint[] {
  const byMinute = new Map<number, { point: MinutePoint; latency: SketchSum }>();
  for (const pool of pools) {
    for (const p of pool.series) {
      let sum = byMinute.get(p.t);
      if (sum === undefined) {
        sum = {
          point: { t: p.t, requests: 0, errors: 0, completionTokens: 0, generationMs: 0, latencyMs: null },
          latency: new SketchSum(),
        };
        byMinute.set(p.t, sum);
      }
      sum.point.requests += p.requests;
      sum.point.errors += p.errors;
      sum.point.completionTokens += p.completionTokens;
      sum.point.generationMs += p.generationMs;
      sum.latency.add(p.latencyMs);
    }
  }
  return [...byMinute.values()]
    .map(({ point, latency }) => ({ ...point, latencyMs: latency.sketch?.toJSON() ?? null }))
    .sort((a, b) => a.t - b.t);
}

interface Tagged {
  pool: string;
  of: string;
  row: WindowAggregate;
}

/** One row from aggregates of the same model or agent (or all of them); malformed: per aggregate. */
export function reportRow(rows: readonly WindowAggregate[]): { row: ReportRow; malformed: number[] } {
  let requests = 0;
  let errors = 0;
  let promptTokens = 0;
  let completionTokens = 0;
  let generationMs = 0;
  const codes = new Map<string, number>();
  for (const row of rows) {
    requests += row.requests;
    errors += row.errors;
    promptTokens += row.promptTokens;
    completionTokens += row.completionTokens;
    generationMs += row.generationMs;
    for (const [code, count] of Object.entries(row.errorsByCode))
      codes.set(code, (codes.get(code) ?? 0) + count);
  }
  const latency = new SketchSum();
  const ttft = new SketchSum();
  const malformed = rows.map((row) => Number(!latency.add(row.latencyMs)) + Number(!ttft.add(row.ttftMs)));
  return {
    row: {
      requests,
      errors,
      errorRate: requests > 0 ? errors / requests : null,
      topErrors: [...codes]
        .filter(([, count]) => count > 0)
        .map(([code, count]) => ({ code, count }))
        .sort((a, b) => b.count - a.count || compare(a.code, b.code))
        .slice(0, TOP_ERRORS),
      latencyMs: percentiles(latency.sketch),
      ttftMs: percentiles(ttft.sketch),
      tokensPerSecond: generationMs > 0 ? (completionTokens / generationMs) * 1000 : null,
      promptTokens,
      completionTokens,
    },
    malformed,
  };
}

function percentiles(sketch: DDSketch | null): ReportRow["latencyMs"] {
  return { p50: quantileOf(sketch, 0.5), p95: quantileOf(sketch, 0.95), p99: quantileOf(sketch, 0.99) };
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
