// The health score: each component from its numbers, the weighted formula, no data counting as
// healthy, thresholds moving the components, and a pool's own score.
import { describe, expect, it } from "vitest";
import { HEALTH_WEIGHTS, healthScore, poolHealthScores } from "../../gateway/monitoring/health-score.ts";
import { HEALTH_COMPONENTS, type HealthComponent, type HealthScore } from "../../schema/monitoring.ts";
import { agent, aggregate, DEFAULTS, pool, spread, windows } from "./monitoring-fixtures.ts";

const NOW = Date.UTC(2026, 6, 1, 12);

const component = (health: HealthScore, name: HealthComponent) => {
  const found = health.components.find((c) => c.name === name);
  if (found === undefined) throw new Error(`no component ${name}`);
  return found;
};

const served = (id: string, usableAgents: number, agents = usableAgents) => ({
  id,
  agents,
  usableAgents,
  unservedSince: usableAgents > 0 ? null : NOW - 60_000,
});

/** A 5-minute window of `requests` requests for model m, `errors` of them failed, all taking `ms`. */
const fiveMinutes = (requests: number, errors: number, ms = 200) =>
  windows({ "5m": { byModel: { m: aggregate({ latencies: spread(requests, ms, ms), errors }) } } });

describe("healthScore", () => {
  it("is 100 with every component healthy, and says so where there is no data", () => {
    const health = healthScore([pool("default", NOW)], DEFAULTS);
    expect(health.score).toBe(100);
    expect(health.components.map((c) => [c.name, c.value, c.weight])).toEqual(
      HEALTH_COMPONENTS.map((name) => [name, 1, HEALTH_WEIGHTS[name]]),
    );
    expect(component(health, "availability").detail).toBe("no models served and no agents known");
    expect(component(health, "errors").detail).toBe("no requests in the last 5 minutes");
    expect(component(health, "breakers").detail).toBe("no circuit breakers");
    expect(component(health, "latency").detail).toBe("no latency measured in the last 5 minutes");
    expect(component(health, "memory").detail).toBe("no agent reported memory use");
  });

  it("weighs the components as documented: round(100 × Σ w·v / Σ w)", () => {
    const weights = Object.values(HEALTH_WEIGHTS).reduce((a, b) => a + b, 0);
    expect(weights).toBeCloseTo(1, 12);
    // availability 0.5, breakers 0.5: 100 × (1 − 0.4 × 0.5 − 0.1 × 0.5) = 75.
    const health = healthScore(
      [
        pool("default", NOW, {
          agents: [agent("a1")],
          models: [served("m", 1), served("n", 0, 0)],
          breakers: [
            { agentId: "a1", model: null, state: "closed", openedAt: null },
            { agentId: "a1", model: "n", state: "open", openedAt: NOW - 1000 },
          ],
        }),
      ],
      DEFAULTS,
    );
    expect(component(health, "availability").value).toBe(0.5);
    expect(component(health, "breakers").value).toBe(0.5);
    expect(health.score).toBe(75);
  });

  it("availability: the lowest share of models with a usable agent, agents up and pools answering", () => {
    const models = healthScore(
      [pool("lab-a", NOW, { models: [served("m", 2), served("n", 0, 2), served("o", 1)] })],
      DEFAULTS,
    );
    expect(component(models, "availability").value).toBeCloseTo(2 / 3, 3);
    expect(component(models, "availability").detail).toContain(
      "2 of 3 served models have a usable agent (none for n in lab-a)",
    );

    const agents = healthScore(
      [
        pool("default", NOW, {
          agents: [agent("a1"), agent("a2"), agent("a3"), agent("gone", { up: false, lostAt: NOW - 5000 })],
          models: [served("m", 3)],
        }),
      ],
      DEFAULTS,
    );
    expect(component(agents, "availability").value).toBe(0.75);
    expect(component(agents, "availability").detail).toContain("3 of 4 agents up");

    const pools = healthScore([pool("default", NOW, { models: [served("m", 1)] })], DEFAULTS, ["lab-a"]);
    expect(component(pools, "availability").value).toBe(0.5);
    expect(component(pools, "availability").detail).toContain("1 of 2 pools answered (not lab-a)");
  });

  it("errors: 1 at 0 %, 0.5 at the alert threshold, 0 at twice it; too few requests are not judged", () => {
    const errorsAt = (requests: number, errors: number, thresholds = DEFAULTS) =>
      component(
        healthScore([pool("p", NOW, { windows: fiveMinutes(requests, errors) })], thresholds),
        "errors",
      );
    expect(errorsAt(100, 0).value).toBe(1);
    expect(errorsAt(100, 5).value).toBe(0.75);
    expect(errorsAt(100, 10).value).toBe(0.5);
    expect(errorsAt(100, 20).value).toBe(0);
    expect(errorsAt(100, 60).value).toBe(0);
    expect(errorsAt(100, 10).detail).toBe(
      "error rate 10.0% (10 of 100 requests failed in the last 5 minutes); 0 at 20.0%, twice the alert threshold",
    );
    // 9 requests, all failed, under the default minimum of 10.
    expect(errorsAt(9, 9).value).toBe(1);
    expect(errorsAt(9, 9).detail).toContain("fewer than 10, too few to judge");
    // Thresholds move it: a 25 % threshold puts 0 at 50 %; a minimum of 5 judges the 9.
    expect(errorsAt(100, 25, { ...DEFAULTS, errorRate: 0.25 }).value).toBe(0.5);
    expect(errorsAt(9, 9, { ...DEFAULTS, errorRateMinRequests: 5 }).value).toBe(0);
  });

  it("errors add up over models and pools", () => {
    const a = pool("a", NOW, { windows: fiveMinutes(50, 10) });
    const b = pool("b", NOW, { windows: fiveMinutes(50, 0) });
    // 10 of 100: 0.5.
    expect(component(healthScore([a, b], DEFAULTS), "errors").value).toBe(0.5);
  });

  it("breakers: the share not open, half-open counting half", () => {
    const health = healthScore(
      [
        pool("p", NOW, {
          breakers: [
            { agentId: "a1", model: null, state: "closed", openedAt: null },
            { agentId: "a2", model: null, state: "closed", openedAt: null },
            { agentId: "a1", model: "m", state: "half_open", openedAt: NOW - 40_000 },
            { agentId: "a2", model: "m", state: "open", openedAt: NOW - 1000 },
          ],
        }),
      ],
      DEFAULTS,
    );
    expect(component(health, "breakers").value).toBe(0.625);
    expect(component(health, "breakers").detail).toBe("1 of 4 circuit breakers open, 1 half-open");
  });

  it("latency: 1 up to the objective, 0 at twice it, on the merged 5-minute p95", () => {
    const latencyAt = (ms: number, thresholds = DEFAULTS) =>
      component(healthScore([pool("p", NOW, { windows: fiveMinutes(40, 0, ms) })], thresholds), "latency");
    expect(latencyAt(9_000).value).toBe(1);
    // DDSketch reads 15 s back within 1 %: 2 − 15/10 = 0.5 ± 0.015.
    expect(latencyAt(15_000).value).toBeGreaterThan(0.48);
    expect(latencyAt(15_000).value).toBeLessThan(0.52);
    expect(latencyAt(15_000).detail).toMatch(
      /^p95 latency 1[45]\.\d s over the last 5 minutes against an objective of 10\.0 s/,
    );
    expect(latencyAt(25_000).value).toBe(0);
    expect(latencyAt(15_000, { ...DEFAULTS, latencyObjectiveMs: 20_000 }).value).toBe(1);
  });

  it("memory: the worst up agent's usage past the threshold, or its pressure", () => {
    const memoryOf = (...agents: ReturnType<typeof agent>[]) =>
      component(healthScore([pool("p", NOW, { agents })], DEFAULTS), "memory");
    expect(memoryOf(agent("a", { memoryUsedPercent: 85 })).value).toBe(1);
    expect(memoryOf(agent("a", { memoryUsedPercent: 92.5 }), agent("b")).value).toBe(0.5);
    expect(memoryOf(agent("a", { memoryUsedPercent: 60, memoryPressure: "warn" })).value).toBe(0.5);
    expect(memoryOf(agent("a", { memoryUsedPercent: 60, memoryPressure: "critical" })).value).toBe(0);
    // A lost agent's last reading does not count.
    expect(memoryOf(agent("a", { up: false, memoryUsedPercent: 99 }), agent("b")).value).toBe(1);
    const detail = memoryOf(
      agent("a", { memoryUsedPercent: 92.5, memoryPressure: "warn" }),
      agent("b"),
    ).detail;
    expect(detail).toBe(
      "highest memory use 93% of 2 agents reporting (1 up to 85%, 0 at 100%); 1 under warn memory pressure",
    );
    expect(detail).not.toContain("a-name");
  });

  it("a fleet with no usable agent at all scores below the LowHealthScore threshold", () => {
    const health = healthScore(
      [
        pool("default", NOW, {
          agents: [agent("a", { up: false, lostAt: NOW - 1000 })],
          models: [served("m", 0, 0), served("n", 0, 0)],
        }),
      ],
      DEFAULTS,
    );
    expect(health.score).toBe(60);
    expect(health.score).toBeLessThan(DEFAULTS.healthScore);
  });
});

describe("poolHealthScores", () => {
  it("scores each pool on its own numbers", () => {
    const scores = poolHealthScores(
      [
        pool("default", NOW, { models: [served("m", 1)] }),
        pool("lab-a", NOW, { models: [served("m", 0, 1)] }),
      ],
      DEFAULTS,
    );
    expect(scores.map((s) => [s.pool, s.health.score])).toEqual([
      ["default", 100],
      ["lab-a", 60],
    ]);
  });
});
