// The health score, 0-100, of the fleet or of one pool, from what the hubs report (PoolMonitoring):
// five components, each 0-1 (1 healthy), weighted:
//
//   score = round(100 × Σ wᵢ·vᵢ / Σ wᵢ)
//
//   availability  w 0.40  min(models served (per pool) with ≥ 1 usable agent / models served,
//                           agents up / agents known, pools that answered / pools configured)
//   errors        w 0.25  5 min error rate r: clamp(1 − r / (2 × thresholds.errorRate)) —
//                           1 at 0 %, 0.5 at the alert threshold, 0 at twice it
//   breakers      w 0.10  (closed + ½ half-open) / circuit breakers listed
//   latency       w 0.15  5 min p95 p against o = thresholds.latencyObjectiveMs:
//                           1 while p ≤ o, then clamp(2 − p / o): 0 at twice the objective
//   memory        w 0.10  the worst up agent's min(usage, pressure): usage 1 up to
//                           thresholds.memoryPercent, linear to 0 at 100 %; pressure normal 1,
//                           warn ½, critical 0
//
// A component without data counts as healthy (1) and its detail says why: no models or agents,
// no requests (or fewer than thresholds.errorRateMinRequests, too few to judge an error rate),
// no breakers, no latency measured, no memory reported. With the defaults a fleet with no usable
// agent at all scores at most 60, below the LowHealthScore threshold of 70.
// Details name models and pools (public in /ready) but never agents: /health shows them.
import {
  type AlertThresholds,
  HEALTH_COMPONENTS,
  type HealthComponent,
  type HealthScore,
  type MEMORY_PRESSURE_VALUE,
  type PoolMonitoring,
} from "../../schema/monitoring.ts";
import { percent, seconds } from "./format.ts";
import { mergeSketches, quantileOf } from "./sketches.ts";

export const HEALTH_WEIGHTS: Readonly<Record<HealthComponent, number>> = {
  availability: 0.4,
  errors: 0.25,
  breakers: 0.1,
  latency: 0.15,
  memory: 0.1,
};

const PRESSURE_VALUE: Record<keyof typeof MEMORY_PRESSURE_VALUE, number> = {
  normal: 1,
  warn: 0.5,
  critical: 0,
};

/** How many names a detail lists before "and N more". */
const NAMED_IN_DETAIL = 3;

interface Component {
  value: number;
  detail: string;
}

/**
 * The score over these pools together. `unreachable`: pools whose hub did not answer, which lower
 * availability (their own numbers are unknown, not counted as healthy).
 */
export function healthScore(
  pools: readonly PoolMonitoring[],
  thresholds: AlertThresholds,
  unreachable: readonly string[] = [],
): HealthScore {
  const measured: Record<HealthComponent, Component> = {
    availability: availability(pools, unreachable),
    errors: errors(pools, thresholds),
    breakers: breakers(pools),
    latency: latency(pools, thresholds),
    memory: memory(pools, thresholds),
  };
  const components = HEALTH_COMPONENTS.map((name) => ({
    name,
    value: round3(measured[name].value),
    weight: HEALTH_WEIGHTS[name],
    detail: measured[name].detail,
  }));
  const weights = components.reduce((sum, c) => sum + c.weight, 0);
  const weighted = components.reduce((sum, c) => sum + c.weight * c.value, 0);
  return { score: Math.round((100 * weighted) / weights), components };
}

/** Each pool's own score (its hub's numbers alone), in the order given. */
export function poolHealthScores(
  pools: readonly PoolMonitoring[],
  thresholds: AlertThresholds,
): { pool: string; health: HealthScore }[] {
  return pools.map((pool) => ({ pool: pool.pool, health: healthScore([pool], thresholds) }));
}

function availability(pools: readonly PoolMonitoring[], unreachable: readonly string[]): Component {
  const shares: number[] = [];
  const parts: string[] = [];
  const models = pools.flatMap((p) => p.models.map((m) => ({ pool: p.pool, ...m })));
  if (models.length > 0) {
    const unserved = models.filter((m) => m.usableAgents < 1);
    shares.push((models.length - unserved.length) / models.length);
    parts.push(
      `${models.length - unserved.length} of ${models.length} served models have a usable agent` +
        (unserved.length > 0 ? ` (none for ${named(unserved.map((m) => `${m.id} in ${m.pool}`))})` : ""),
    );
  }
  const agents = pools.flatMap((p) => p.agents);
  if (agents.length > 0) {
    const up = agents.filter((a) => a.up).length;
    shares.push(up / agents.length);
    parts.push(`${up} of ${agents.length} agents up`);
  }
  if (unreachable.length > 0) {
    const configured = pools.length + unreachable.length;
    shares.push(pools.length / configured);
    parts.push(`${pools.length} of ${configured} pools answered (not ${named([...unreachable])})`);
  }
  if (shares.length === 0) return { value: 1, detail: "no models served and no agents known" };
  return { value: Math.min(...shares), detail: `${parts.join("; ")}: the lowest share counts` };
}

function errors(pools: readonly PoolMonitoring[], thresholds: AlertThresholds): Component {
  let requests = 0;
  let failed = 0;
  for (const pool of pools) {
    for (const row of Object.values(pool.windows["5m"].byModel)) {
      requests += row.requests;
      failed += row.errors;
    }
  }
  if (requests === 0) return { value: 1, detail: "no requests in the last 5 minutes" };
  const counted = `${failed} of ${requests} requests failed in the last 5 minutes`;
  if (requests < thresholds.errorRateMinRequests) {
    return {
      value: 1,
      detail: `${counted}: fewer than ${thresholds.errorRateMinRequests}, too few to judge`,
    };
  }
  const rate = failed / requests;
  const zeroAt = 2 * thresholds.errorRate;
  const value = zeroAt === 0 ? (rate > 0 ? 0 : 1) : clamp01(1 - rate / zeroAt);
  return {
    value,
    detail: `error rate ${percent(rate)} (${counted}); 0 at ${percent(zeroAt)}, twice the alert threshold`,
  };
}

function breakers(pools: readonly PoolMonitoring[]): Component {
  const all = pools.flatMap((p) => p.breakers);
  if (all.length === 0) return { value: 1, detail: "no circuit breakers" };
  const open = all.filter((b) => b.state === "open").length;
  const halfOpen = all.filter((b) => b.state === "half_open").length;
  const closed = all.length - open - halfOpen;
  return {
    value: (closed + 0.5 * halfOpen) / all.length,
    detail: `${open} of ${all.length} circuit breakers open, ${halfOpen} half-open`,
  };
}

function latency(pools: readonly PoolMonitoring[], thresholds: AlertThresholds): Component {
  const { sketch } = mergeSketches(
    pools.flatMap((p) => Object.values(p.windows["5m"].byModel).map((row) => row.latencyMs)),
  );
  const p95 = quantileOf(sketch, 0.95);
  if (p95 === null) return { value: 1, detail: "no latency measured in the last 5 minutes" };
  const objective = thresholds.latencyObjectiveMs;
  return {
    value: p95 <= objective ? 1 : clamp01(2 - p95 / objective),
    detail: `p95 latency ${seconds(p95)} over the last 5 minutes against an objective of ${seconds(objective)} (0 at ${seconds(2 * objective)})`,
  };
}

function memory(pools: readonly PoolMonitoring[], thresholds: AlertThresholds): Component {
  const reporting = pools
    .flatMap((p) => p.agents)
    .filter((a) => a.up && (a.memoryUsedPercent !== null || a.memoryPressure !== null));
  if (reporting.length === 0) return { value: 1, detail: "no agent reported memory use" };
  const limit = thresholds.memoryPercent;
  const usage = (used: number | null) =>
    used === null || used <= limit ? 1 : limit >= 100 ? 0 : clamp01((100 - used) / (100 - limit));
  const value = Math.min(
    ...reporting.map((a) =>
      Math.min(usage(a.memoryUsedPercent), a.memoryPressure === null ? 1 : PRESSURE_VALUE[a.memoryPressure]),
    ),
  );
  const used = reporting.flatMap((a) => (a.memoryUsedPercent === null ? [] : [a.memoryUsedPercent]));
  const parts = [
    used.length > 0
      ? `highest memory use ${Math.round(Math.max(...used))}% of ${reporting.length} agents reporting (1 up to ${limit}%, 0 at 100%)`
      : `${reporting.length} agents report memory pressure only`,
  ];
  for (const level of ["warn", "critical"] as const) {
    const n = reporting.filter((a) => a.memoryPressure === level).length;
    if (n > 0) parts.push(`${n} under ${level} memory pressure`);
  }
  return { value, detail: parts.join("; ") };
}

function named(names: string[]): string {
  const shown = names.slice(0, NAMED_IN_DETAIL).join(", ");
  return names.length > NAMED_IN_DETAIL ? `${shown} and ${names.length - NAMED_IN_DETAIL} more` : shown;
}

const clamp01 = (x: number) => Math.min(1, Math.max(0, x));
const round3 = (x: number) => Math.round(x * 1000) / 1000;
