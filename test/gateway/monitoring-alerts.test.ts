// The six alert rules on a fake clock: each fires with its labels, value and since, keeps its since
// across evaluations while the condition holds, resolves (and leaves the memory) when it clears;
// thresholds override the defaults; the order is deterministic.
import { describe, expect, it } from "vitest";
import {
  ALERT_MEMORY_CONTINUITY_MS,
  type AlertMemory,
  alertKey,
  alertMemoryChanges,
  EVALUATED_AT_KEY,
  evaluateAlerts,
  HALF_OPEN_ALERT_MS,
} from "../../gateway/monitoring/alerts.ts";
import type { Alert, AlertRule, PoolMonitoring } from "../../schema/monitoring.ts";
import { agent, aggregate, DEFAULTS, minute, pool, recent, spread, windows } from "./monitoring-fixtures.ts";

const T0 = Date.UTC(2026, 6, 1, 12, 0, 0);
const iso = (ms: number) => new Date(ms).toISOString();

/** Evaluations in order, each with the memory the previous one left, as the route does. */
class Evaluator {
  memory: AlertMemory = {};
  thresholds = DEFAULTS;

  at(now: number, pools: PoolMonitoring[], unreachable: string[] = []): Alert[] {
    const { alerts, memory } = evaluateAlerts(pools, this.thresholds, now, this.memory, unreachable);
    this.memory = memory;
    return alerts;
  }
}

const only = (alerts: Alert[], rule: AlertRule) => alerts.filter((a) => a.rule === rule);

describe("HighErrorRate", () => {
  // 12 requests per 10 s bucket; errors from `from` on.
  const failing = (now: number, from: number, errors = 6) =>
    pool("lab-a", now, { recent: recent(now, 12, (t) => (t >= from ? errors : 0)) });

  it("fires per pool above 10 % over 2 minutes, since the first failing bucket, and resolves", () => {
    const evaluator = new Evaluator();
    const start = T0 - 20_000; // three buckets of 50 % errors: 18 of 144 = 12.5 %
    const [alert, ...rest] = evaluator.at(T0, [failing(T0, start)]);
    expect(rest).toEqual([]);
    expect(alert).toMatchObject({
      rule: "HighErrorRate",
      severity: "critical",
      labels: { pool: "lab-a" },
      value: 18 / 144,
      threshold: 0.1,
      since: iso(start),
    });
    expect(alert?.summary).toBe(
      "error rate 12.5% in pool lab-a over the last 2 min (18 of 144 requests), above 10.0%",
    );

    // Still failing 40 s later; the buckets' earliest failing one is still the start.
    const later = evaluator.at(T0 + 40_000, [failing(T0 + 40_000, start)]);
    expect(only(later, "HighErrorRate").map((a) => a.since)).toEqual([iso(start)]);

    // Errors stop: once the window's rate is back under 10 %, the alert is gone, and so is its memory.
    const cleared = evaluator.at(T0 + 200_000, [failing(T0 + 200_000, Number.POSITIVE_INFINITY)]);
    expect(cleared).toEqual([]);
    expect(Object.keys(evaluator.memory)).toEqual([EVALUATED_AT_KEY]);

    // It comes back: a new since.
    const again = evaluator.at(T0 + 300_000, [failing(T0 + 300_000, T0 + 260_000, 12)]);
    expect(only(again, "HighErrorRate").map((a) => a.since)).toEqual([iso(T0 + 260_000)]);
  });

  it("keeps the first-seen time when it is earlier than the buckets show", () => {
    const evaluator = new Evaluator();
    evaluator.at(T0, [failing(T0, T0 - 110_000)]);
    // Two minutes on, the buckets only reach back 2 minutes, but the alert has held since T0 − 110 s.
    const alerts = evaluator.at(T0 + 100_000, [failing(T0 + 100_000, 0)]);
    expect(only(alerts, "HighErrorRate").map((a) => a.since)).toEqual([iso(T0 - 110_000)]);
  });

  it("needs errorRateMinRequests requests, and follows the thresholds", () => {
    // 2 requests per bucket: 24 in the window, 12 failed.
    const small = pool("p", T0, { recent: recent(T0, 2, () => 1) });
    const evaluator = new Evaluator();
    evaluator.thresholds = { ...DEFAULTS, errorRateMinRequests: 25 };
    expect(evaluator.at(T0, [small])).toEqual([]);
    evaluator.thresholds = { ...DEFAULTS, errorRateMinRequests: 24 };
    expect(only(evaluator.at(T0, [small]), "HighErrorRate")).toHaveLength(1);
    evaluator.thresholds = { ...DEFAULTS, errorRate: 0.5 };
    expect(evaluator.at(T0, [small])).toEqual([]);
    // A 30 s window sees only the last three buckets.
    const lateErrors = pool("p", T0, { recent: recent(T0, 12, (t) => (t >= T0 - 30_000 ? 12 : 0)) });
    evaluator.thresholds = { ...DEFAULTS, errorRate: 0.9, errorRateWindowMs: 30_000 };
    expect(only(evaluator.at(T0, [lateErrors]), "HighErrorRate").map((a) => a.value)).toEqual([1]);
  });
});

describe("CircuitBreakerOpen", () => {
  const withBreaker = (state: "open" | "half_open" | "closed", openedAt: number | null) =>
    pool("default", T0, { breakers: [{ agentId: "a1", model: "m", state, openedAt }] });

  it("fires per breaker since it opened, holds while half-open, resolves when it closes", () => {
    const evaluator = new Evaluator();
    const opened = T0 - 5000;
    const [alert] = evaluator.at(T0, [withBreaker("open", opened)]);
    expect(alert).toMatchObject({
      rule: "CircuitBreakerOpen",
      severity: "warning",
      labels: { pool: "default", agent: "a1", model: "m" },
      value: 2,
      threshold: 0,
      since: iso(opened),
      summary: "circuit breaker open for agent a1 and model m in pool default",
    });
    const halfOpen = evaluator.at(T0 + 30_000, [withBreaker("half_open", opened)]);
    expect(halfOpen.map((a) => [a.value, a.since])).toEqual([[1, iso(opened)]]);
    expect(evaluator.at(T0 + 31_000, [withBreaker("closed", null)])).toEqual([]);
    // Opened again: a new alert, since its new openedAt.
    const reopened = evaluator.at(T0 + 60_000, [withBreaker("open", T0 + 55_000)]);
    expect(reopened.map((a) => a.since)).toEqual([iso(T0 + 55_000)]);
  });

  it("stops alerting for a breaker left half-open (no probe came) HALF_OPEN_ALERT_MS after it opened", () => {
    const evaluator = new Evaluator();
    const opened = T0 - 60_000;
    expect(evaluator.at(T0, [withBreaker("half_open", opened)]).map((a) => a.value)).toEqual([1]);
    const idle = opened + HALF_OPEN_ALERT_MS;
    expect(evaluator.at(idle, [withBreaker("half_open", opened)])).toEqual([]);
    // Open again is an alert again, however long ago it first opened.
    expect(evaluator.at(idle + 1000, [withBreaker("open", opened)]).map((a) => a.value)).toEqual([2]);
  });

  it("labels an agent's own breaker with model ''", () => {
    const alerts = new Evaluator().at(T0, [
      pool("default", T0, { breakers: [{ agentId: "a1", model: null, state: "open", openedAt: T0 }] }),
    ]);
    expect(alerts.map((a) => a.labels)).toEqual([{ pool: "default", agent: "a1", model: "" }]);
  });
});

describe("HighLatencyP95", () => {
  const slow = (now: number, ms: number, series: PoolMonitoring["series"] = []) =>
    pool("lab-a", now, {
      windows: windows({ "5m": { byModel: { "demo:1.2.0": aggregate({ latencies: spread(20, ms, ms) }) } } }),
      series,
    });

  it("fires per pool and model above 10 s, since the pool's slow minutes began", () => {
    const evaluator = new Evaluator();
    const minuteAt = (k: number) => T0 - k * 60_000;
    const series = [
      minute(minuteAt(5), [800, 900]),
      minute(minuteAt(4), [12_000]),
      minute(minuteAt(3), [900]), // fast: the run starts after it
      minute(minuteAt(2), [14_000, 15_000]),
      minute(minuteAt(1), []), // no requests: neither breaks nor starts the run
      minute(minuteAt(0), [13_000]),
    ];
    const [alert, ...rest] = evaluator.at(T0, [slow(T0, 14_000, series)]);
    expect(rest).toEqual([]);
    expect(alert).toMatchObject({
      rule: "HighLatencyP95",
      severity: "warning",
      labels: { pool: "lab-a", model: "demo", version: "1.2.0" },
      threshold: 10_000,
      since: iso(minuteAt(2)),
    });
    expect(Math.abs((alert?.value ?? 0) - 14_000) / 14_000).toBeLessThan(0.01);

    // Without a series it is since first seen, kept while it holds.
    const fresh = new Evaluator();
    fresh.at(T0, [slow(T0, 14_000)]);
    expect(fresh.at(T0 + 60_000, [slow(T0 + 60_000, 12_000)]).map((a) => a.since)).toEqual([iso(T0)]);
    expect(fresh.at(T0 + 120_000, [slow(T0 + 120_000, 9_000)])).toEqual([]);
  });

  it("follows latencyP95Ms", () => {
    const evaluator = new Evaluator();
    evaluator.thresholds = { ...DEFAULTS, latencyP95Ms: 2_000 };
    expect(evaluator.at(T0, [slow(T0, 3_000)]).map((a) => a.rule)).toEqual(["HighLatencyP95"]);
    evaluator.thresholds = { ...DEFAULTS, latencyP95Ms: 5_000 };
    expect(evaluator.at(T0, [slow(T0, 3_000)])).toEqual([]);
  });
});

describe("HighMemoryUsage", () => {
  const using = (percent: number, memoryHighSince: number | null = null, up = true) =>
    pool("default", T0, { agents: [agent("a1", { memoryUsedPercent: percent, memoryHighSince, up })] });

  it("fires per up agent above 85 %, since the hub saw it high, and resolves", () => {
    const evaluator = new Evaluator();
    const [alert] = evaluator.at(T0, [using(91, T0 - 90_000)]);
    expect(alert).toMatchObject({
      rule: "HighMemoryUsage",
      severity: "warning",
      labels: { pool: "default", agent: "a1" },
      value: 91,
      threshold: 85,
      since: iso(T0 - 90_000),
      summary: "agent a1-name in pool default uses 91% of its memory, above 85% (pressure normal)",
    });
    expect(evaluator.at(T0 + 10_000, [using(84)])).toEqual([]);
    // A lost agent's last reading raises no memory alert (ServiceDown covers it).
    expect(only(evaluator.at(T0 + 20_000, [using(99, T0, false)]), "HighMemoryUsage")).toEqual([]);
  });

  it("follows memoryPercent, since first seen when the hub has no start", () => {
    const evaluator = new Evaluator();
    evaluator.thresholds = { ...DEFAULTS, memoryPercent: 75 };
    evaluator.at(T0, [using(80)]);
    const alerts = evaluator.at(T0 + 30_000, [using(81)]);
    expect(alerts.map((a) => [a.rule, a.value, a.threshold, a.since])).toEqual([
      ["HighMemoryUsage", 81, 75, iso(T0)],
    ]);
  });
});

describe("ServiceDown", () => {
  it("fires for a served model with no usable agent, since the hub says, and resolves", () => {
    const evaluator = new Evaluator();
    const unserved = (usableAgents: number, agents: number) =>
      pool("lab-a", T0, {
        models: [
          { id: "demo:2.0.0", agents, usableAgents, unservedSince: usableAgents === 0 ? T0 - 20_000 : null },
        ],
      });
    const [alert] = only(evaluator.at(T0, [unserved(0, 2)]), "ServiceDown");
    expect(alert).toMatchObject({
      severity: "critical",
      labels: { pool: "lab-a", model: "demo", version: "2.0.0" },
      value: 0,
      threshold: 1,
      since: iso(T0 - 20_000),
      summary: "no usable agent for demo:2.0.0 in pool lab-a: the circuit breakers of its 2 agents are open",
    });
    expect(evaluator.at(T0 + 5000, [unserved(1, 2)])).toEqual([]);
  });

  it("fires (warning) for an agent gone, since it was lost", () => {
    const evaluator = new Evaluator();
    const lost = pool("default", T0, { agents: [agent("a2", { up: false, lostAt: T0 - 70_000 })] });
    const alerts = only(evaluator.at(T0, [lost]), "ServiceDown");
    expect(alerts.map((a) => [a.severity, a.labels, a.since, a.summary])).toEqual([
      [
        "warning",
        { pool: "default", agent: "a2" },
        iso(T0 - 70_000),
        "agent a2-name is gone from pool default",
      ],
    ]);
    expect(evaluator.at(T0 + 10_000, [pool("default", T0, { agents: [agent("a2")] })])).toEqual([]);
  });

  it("fires for a pool whose hub did not answer, since first seen, until it answers", () => {
    const evaluator = new Evaluator();
    const first = only(evaluator.at(T0, [pool("default", T0)], ["lab-a"]), "ServiceDown");
    expect(first.map((a) => [a.severity, a.labels, a.since])).toEqual([
      ["critical", { pool: "lab-a" }, iso(T0)],
    ]);
    const second = only(evaluator.at(T0 + 15_000, [pool("default", T0)], ["lab-a"]), "ServiceDown");
    expect(second.map((a) => a.since)).toEqual([iso(T0)]);
    expect(evaluator.at(T0 + 30_000, [pool("default", T0), pool("lab-a", T0)])).toEqual([]);
  });
});

describe("LowHealthScore", () => {
  it("fires fleet-wide below 70 with the score and what lowers it, and resolves", () => {
    const evaluator = new Evaluator();
    const down = pool("default", T0, {
      models: [{ id: "m", agents: 0, usableAgents: 0, unservedSince: T0 }],
    });
    const alerts = only(evaluator.at(T0, [down]), "LowHealthScore");
    expect(alerts).toHaveLength(1);
    expect(alerts[0]).toMatchObject({
      severity: "warning",
      labels: {},
      value: 60,
      threshold: 70,
      since: iso(T0),
    });
    expect(alerts[0]?.summary).toBe(
      "health score 60, below 70; availability 0.00: 0 of 1 served models have a usable agent (none for m in default): the lowest share counts",
    );
    const held = only(evaluator.at(T0 + 20_000, [down]), "LowHealthScore");
    expect(held.map((a) => a.since)).toEqual([iso(T0)]);
    const up = pool("default", T0, {
      models: [{ id: "m", agents: 1, usableAgents: 1, unservedSince: null }],
    });
    expect(evaluator.at(T0 + 40_000, [up])).toEqual([]);
  });

  it("follows the healthScore threshold", () => {
    const evaluator = new Evaluator();
    evaluator.thresholds = { ...DEFAULTS, healthScore: 50 };
    const down = pool("default", T0, {
      models: [{ id: "m", agents: 0, usableAgents: 0, unservedSince: T0 }],
    });
    expect(only(evaluator.at(T0, [down]), "LowHealthScore")).toEqual([]);
  });
});

describe("the alert memory", () => {
  const unreachable = (evaluator: Evaluator, now: number) => evaluator.at(now, [], ["lab-a"]);

  it("forgets a since it did not watch continuously (no evaluation for longer than the continuity)", () => {
    const evaluator = new Evaluator();
    unreachable(evaluator, T0);
    const gap = T0 + ALERT_MEMORY_CONTINUITY_MS + 1;
    expect(only(unreachable(evaluator, gap), "ServiceDown").map((a) => a.since)).toEqual([iso(gap)]);
  });

  it("refreshes its evaluation time at most once a minute, so a quiet evaluation writes nothing", () => {
    const evaluator = new Evaluator();
    unreachable(evaluator, T0);
    const first = evaluator.memory;
    unreachable(evaluator, T0 + 30_000);
    expect(alertMemoryChanges(first, evaluator.memory)).toBeNull();
    unreachable(evaluator, T0 + 61_000);
    expect(alertMemoryChanges(first, evaluator.memory)).toEqual({
      set: { [EVALUATED_AT_KEY]: T0 + 61_000 },
      clear: [EVALUATED_AT_KEY],
    });
    // Evaluations 50 s apart keep the continuity, though the evaluation time lags by up to a minute.
    for (let now = T0 + 61_000; now < T0 + 20 * 60_000; now += 50_000) unreachable(evaluator, now);
    expect(evaluator.memory[alertKey("ServiceDown", { pool: "lab-a" })]).toBe(T0);
  });

  it("alertMemoryChanges: what to set and what to clear (a key moving later is cleared, then set)", () => {
    expect(alertMemoryChanges({ a: 1, b: 2 }, { a: 1, c: 3 })).toEqual({ set: { c: 3 }, clear: ["b"] });
    expect(alertMemoryChanges({ a: 2 }, { a: 1 })).toEqual({ set: { a: 1 }, clear: [] });
    expect(alertMemoryChanges({ a: 1 }, { a: 2 })).toEqual({ set: { a: 2 }, clear: ["a"] });
    expect(alertMemoryChanges({ a: 1 }, { a: 1 })).toBeNull();
  });

  it("keys an alert by rule and sorted labels", () => {
    expect(alertKey("CircuitBreakerOpen", { pool: "p", model: "", agent: "a" })).toBe(
      'CircuitBreakerOpen{agent="a",model="",pool="p"}',
    );
  });
});

describe("order", () => {
  it("is severity, then rule, then labels", () => {
    const now = T0;
    const alerts = new Evaluator().at(
      now,
      [
        pool("b", now, {
          agents: [agent("x", { memoryUsedPercent: 95 }), agent("gone", { up: false, lostAt: now })],
          breakers: [
            { agentId: "x", model: "m", state: "open", openedAt: now },
            { agentId: "x", model: null, state: "open", openedAt: now },
          ],
          models: [{ id: "m", agents: 1, usableAgents: 0, unservedSince: now }],
          recent: recent(now, 10, () => 10),
        }),
      ],
      ["a"],
    );
    expect(alerts.map((a) => [a.severity, a.rule, a.labels])).toEqual([
      ["critical", "HighErrorRate", { pool: "b" }],
      ["critical", "ServiceDown", { pool: "a" }],
      ["critical", "ServiceDown", { pool: "b", model: "m", version: "" }],
      ["warning", "CircuitBreakerOpen", { pool: "b", agent: "x", model: "" }],
      ["warning", "CircuitBreakerOpen", { pool: "b", agent: "x", model: "m" }],
      ["warning", "HighMemoryUsage", { pool: "b", agent: "x" }],
      ["warning", "ServiceDown", { pool: "b", agent: "gone" }],
      ["warning", "LowHealthScore", {}],
    ]);
  });
});
