// The specification's six alert rules, evaluated live over what the hubs report: a pure function of
// the pools, the thresholds, the time and the alert memory (alert key -> first seen, epoch ms), which
// it returns updated. The memory is what makes `since` survive between evaluations; it is kept in the
// default pool's hub, so every isolate reports the same one.
//
// rule                severity  one alert per       labels                  since (earliest of memory and)
// HighErrorRate       critical  pool                pool                    the 10 s `recent` buckets
// CircuitBreakerOpen  warning   breaker not closed  pool, agent, model      the breaker's openedAt
// HighLatencyP95      warning   pool and model      pool, model, version    the pool's minute `series`
// HighMemoryUsage     warning   up agent            pool, agent             the agent's memoryHighSince
// ServiceDown         critical  model, no usable    pool, model, version    the model's unservedSince
//                     warning   agent lost          pool, agent             the agent's lostAt
//                     critical  pool not answering  pool                    (memory only)
// LowHealthScore      warning   fleet               (none)                  (memory only)
//
// Why these severities: a breaker open or an agent lost is routed around (failover, other agents);
// when nothing is left to route to, ServiceDown for the model fires, critical. Users see failures
// from HighErrorRate and the critical ServiceDowns; slowness, memory and a low score warn.
// A half-open breaker still alerts (value 1; open is 2) while it opened less than
// HALF_OPEN_ALERT_MS ago: one failing its probes alternates open and half-open and stays one alert,
// while one that nobody sends a probe to (no traffic for it) stays half-open and stops alerting.
// HighErrorRate is per pool because the hub keeps its 2-minute buckets per pool; a window longer
// than the two minutes the hub keeps is cut to what is there. HighLatencyP95 needs no minimum of
// requests, like the Prometheus rule over the histogram (ops/).
import {
  ALERT_RULES,
  type Alert,
  type AlertRule,
  type AlertThresholds,
  BREAKER_STATE_VALUE,
  type PoolMonitoring,
} from "../../schema/monitoring.ts";
import { duration, percent, seconds } from "./format.ts";
import { healthScore } from "./health-score.ts";
import { modelLabels } from "./model-labels.ts";
import { quantileOf, readSketch } from "./sketches.ts";

/** Alert key -> epoch ms the condition was first seen; plus EVALUATED_AT_KEY. */
export type AlertMemory = Record<string, number>;

/**
 * When the memory was last written by an evaluation. Memory older than ALERT_MEMORY_CONTINUITY_MS
 * proves nothing: nobody looked in between, so a condition may have cleared and come back unseen,
 * and its remembered `since` is dropped (the data's own start still counts).
 */
export const EVALUATED_AT_KEY = "@evaluatedAt";
export const ALERT_MEMORY_CONTINUITY_MS = 5 * 60_000;
/** How long after it opened a half-open breaker still counts as open for CircuitBreakerOpen. */
export const HALF_OPEN_ALERT_MS = 5 * 60_000;
/** EVALUATED_AT_KEY is rewritten at most this often (not on every evaluation: each is a write). */
const EVALUATED_AT_REFRESH_MS = 60_000;

export interface AlertEvaluation {
  alerts: Alert[];
  memory: AlertMemory;
}

interface Condition {
  rule: AlertRule;
  severity: Alert["severity"];
  labels: Record<string, string>;
  value: number;
  threshold: number;
  summary: string;
  /** When the data says the condition started, if it says. */
  startedAt: number | null;
}

/**
 * The alerts firing at `now`. `memory` is the previous evaluation's; the one returned holds the
 * firing alerts' first-seen times (resolved ones dropped) for the next. `unreachable`: pools whose
 * hub did not answer (ServiceDown each).
 */
export function evaluateAlerts(
  pools: readonly PoolMonitoring[],
  thresholds: AlertThresholds,
  now: number,
  memory: AlertMemory,
  unreachable: readonly string[] = [],
): AlertEvaluation {
  const conditions: Condition[] = [
    ...pools.flatMap((pool) => [
      ...highErrorRate(pool, thresholds, now),
      ...breakersOpen(pool, now),
      ...highLatency(pool, thresholds),
      ...highMemory(pool, thresholds),
      ...serviceDown(pool),
    ]),
    ...unreachable.map((pool) => poolDown(pool)),
    ...lowHealthScore(pools, thresholds, unreachable),
  ];
  const evaluatedAt = memory[EVALUATED_AT_KEY];
  const continuous = evaluatedAt !== undefined && now - evaluatedAt <= ALERT_MEMORY_CONTINUITY_MS;
  const next: AlertMemory = {
    [EVALUATED_AT_KEY]:
      evaluatedAt !== undefined && now - evaluatedAt >= 0 && now - evaluatedAt < EVALUATED_AT_REFRESH_MS
        ? evaluatedAt
        : now,
  };
  const alerts: (Alert & { key: string })[] = [];
  for (const condition of conditions) {
    const key = alertKey(condition.rule, condition.labels);
    if (key in next) continue; // the same condition twice (a hub listing a breaker twice)
    const remembered = continuous ? memory[key] : undefined;
    const since = Math.min(now, remembered ?? now, condition.startedAt ?? now);
    next[key] = since;
    const { startedAt: _, ...alert } = condition;
    alerts.push({ ...alert, key, since: new Date(since).toISOString() });
  }
  alerts.sort(
    (a, b) =>
      severityRank(a.severity) - severityRank(b.severity) ||
      ALERT_RULES.indexOf(a.rule) - ALERT_RULES.indexOf(b.rule) ||
      compareLabels(a.labels, b.labels) ||
      compare(a.key, b.key),
  );
  return { alerts: alerts.map(({ key: _, ...alert }) => alert), memory: next };
}

/** An alert's identity: its rule and labels, as Prometheus writes a series (labels sorted). */
export function alertKey(rule: AlertRule, labels: Record<string, string>): string {
  const pairs = Object.keys(labels)
    .sort()
    .map((name) => `${name}=${JSON.stringify(labels[name])}`);
  return `${rule}{${pairs.join(",")}}`;
}

/**
 * What to write to the stored memory to make it `after`; null when nothing changed. The hub keeps
 * the earlier time of a key it is set (two evaluations racing agree on the first), and clears
 * before it sets: a key that moves later (a since restarted, the evaluation time) is in both.
 */
export function alertMemoryChanges(
  before: AlertMemory,
  after: AlertMemory,
): { set: Record<string, number>; clear: string[] } | null {
  const set: Record<string, number> = {};
  const clear = Object.keys(before).filter((key) => !(key in after));
  for (const [key, value] of Object.entries(after)) {
    const was = before[key];
    if (was === value) continue;
    set[key] = value;
    if (was !== undefined && value > was) clear.push(key);
  }
  return Object.keys(set).length === 0 && clear.length === 0 ? null : { set, clear };
}

/** Labels in this order first (a pool's alerts together), then by key. */
const LABEL_ORDER = ["pool", "model", "version", "agent"] as const;

function compareLabels(a: Record<string, string>, b: Record<string, string>): number {
  for (const name of LABEL_ORDER) {
    const order = compare(a[name] ?? "", b[name] ?? "");
    if (order !== 0) return order;
  }
  return 0;
}

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function severityRank(severity: Alert["severity"]): number {
  return severity === "critical" ? 0 : 1;
}

function highErrorRate(pool: PoolMonitoring, thresholds: AlertThresholds, now: number): Condition[] {
  const from = now - thresholds.errorRateWindowMs;
  const buckets = pool.recent.filter((b) => b.t >= from && b.t <= now).sort((a, b) => a.t - b.t);
  const requests = buckets.reduce((n, b) => n + b.requests, 0);
  const errors = buckets.reduce((n, b) => n + b.errors, 0);
  if (requests === 0 || requests < thresholds.errorRateMinRequests) return [];
  const rate = errors / requests;
  if (!(rate > thresholds.errorRate)) return [];
  // The oldest bucket with errors from which on the rate stayed above the threshold.
  let startedAt: number | null = null;
  let suffixRequests = requests;
  let suffixErrors = errors;
  for (const bucket of buckets) {
    if (bucket.errors > 0 && suffixRequests > 0 && suffixErrors / suffixRequests > thresholds.errorRate) {
      startedAt = bucket.t;
      break;
    }
    suffixRequests -= bucket.requests;
    suffixErrors -= bucket.errors;
  }
  return [
    {
      rule: "HighErrorRate",
      severity: "critical",
      labels: { pool: pool.pool },
      value: rate,
      threshold: thresholds.errorRate,
      summary: `error rate ${percent(rate)} in pool ${pool.pool} over the last ${duration(thresholds.errorRateWindowMs)} (${errors} of ${requests} requests), above ${percent(thresholds.errorRate)}`,
      startedAt,
    },
  ];
}

function breakersOpen(pool: PoolMonitoring, now: number): Condition[] {
  return pool.breakers
    .filter(
      (b) =>
        b.state === "open" ||
        (b.state === "half_open" && b.openedAt !== null && now - b.openedAt < HALF_OPEN_ALERT_MS),
    )
    .map((b) => ({
      rule: "CircuitBreakerOpen",
      severity: "warning",
      labels: { pool: pool.pool, agent: b.agentId, model: b.model ?? "" },
      value: BREAKER_STATE_VALUE[b.state],
      threshold: BREAKER_STATE_VALUE.closed,
      summary: `circuit breaker ${b.state === "open" ? "open" : "half-open"} for agent ${b.agentId}${b.model === null ? "" : ` and model ${b.model}`} in pool ${pool.pool}`,
      startedAt: b.openedAt,
    }));
}

function highLatency(pool: PoolMonitoring, thresholds: AlertThresholds): Condition[] {
  const limit = thresholds.latencyP95Ms;
  const conditions: Condition[] = [];
  for (const [model, row] of Object.entries(pool.windows["5m"].byModel)) {
    const sketch = readSketch(row.latencyMs);
    const p95 = quantileOf(sketch === "malformed" ? null : sketch, 0.95);
    if (p95 === null || !(p95 > limit)) continue;
    conditions.push({
      rule: "HighLatencyP95",
      severity: "warning",
      labels: { pool: pool.pool, ...modelLabels(model) },
      value: p95,
      threshold: limit,
      summary: `p95 latency of ${model} in pool ${pool.pool} is ${seconds(p95)} over the last 5 minutes, above ${seconds(limit)}`,
      startedAt: slowSince(pool, limit),
    });
  }
  return conditions;
}

/**
 * The first minute of the pool's latest run of minutes whose p95 is above the limit (minutes
 * without requests neither break nor start a run); null when the newest measured one is not.
 * The hub keeps its minute series per pool, not per model: a model's alert uses its pool's.
 */
function slowSince(pool: PoolMonitoring, limit: number): number | null {
  let startedAt: number | null = null;
  for (const point of [...pool.series].sort((a, b) => b.t - a.t)) {
    if (point.requests === 0) continue;
    const sketch = readSketch(point.latencyMs);
    const p95 = quantileOf(sketch === "malformed" ? null : sketch, 0.95);
    if (p95 === null || !(p95 > limit)) break;
    startedAt = point.t;
  }
  return startedAt;
}

function highMemory(pool: PoolMonitoring, thresholds: AlertThresholds): Condition[] {
  return pool.agents
    .filter((a) => a.up && a.memoryUsedPercent !== null && a.memoryUsedPercent > thresholds.memoryPercent)
    .map((a) => ({
      rule: "HighMemoryUsage",
      severity: "warning",
      labels: { pool: pool.pool, agent: a.id },
      value: a.memoryUsedPercent ?? 0,
      threshold: thresholds.memoryPercent,
      summary: `agent ${a.name} in pool ${pool.pool} uses ${Math.round(a.memoryUsedPercent ?? 0)}% of its memory, above ${thresholds.memoryPercent}%${a.memoryPressure === null ? "" : ` (pressure ${a.memoryPressure})`}`,
      startedAt: a.memoryHighSince,
    }));
}

function serviceDown(pool: PoolMonitoring): Condition[] {
  const models: Condition[] = pool.models
    .filter((m) => m.usableAgents < 1)
    .map((m) => ({
      rule: "ServiceDown",
      severity: "critical",
      labels: { pool: pool.pool, ...modelLabels(m.id) },
      value: m.usableAgents,
      threshold: 1,
      summary:
        m.agents > 0
          ? `no usable agent for ${m.id} in pool ${pool.pool}: the circuit breakers of its ${m.agents} agents are open`
          : `no agent serves ${m.id} in pool ${pool.pool}`,
      startedAt: m.unservedSince,
    }));
  const agents: Condition[] = pool.agents
    .filter((a) => !a.up)
    .map((a) => ({
      rule: "ServiceDown",
      severity: "warning",
      labels: { pool: pool.pool, agent: a.id },
      value: 0,
      threshold: 1,
      summary: `agent ${a.name} is gone from pool ${pool.pool}`,
      startedAt: a.lostAt,
    }));
  return [...models, ...agents];
}

function poolDown(pool: string): Condition {
  return {
    rule: "ServiceDown",
    severity: "critical",
    labels: { pool },
    value: 0,
    threshold: 1,
    summary: `the hub of pool ${pool} did not answer`,
    startedAt: null,
  };
}

function lowHealthScore(
  pools: readonly PoolMonitoring[],
  thresholds: AlertThresholds,
  unreachable: readonly string[],
): Condition[] {
  const health = healthScore(pools, thresholds, unreachable);
  if (!(health.score < thresholds.healthScore)) return [];
  const lowering = health.components
    .filter((c) => c.value < 1)
    .sort((a, b) => b.weight * (1 - b.value) - a.weight * (1 - a.value))
    .map((c) => `${c.name} ${c.value.toFixed(2)}: ${c.detail}`);
  return [
    {
      rule: "LowHealthScore",
      severity: "warning",
      labels: {},
      value: health.score,
      threshold: thresholds.healthScore,
      summary: `health score ${health.score}, below ${thresholds.healthScore}; ${lowering.join("; ")}`,
      startedAt: null,
    },
  ];
}
