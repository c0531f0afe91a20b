// GET /performance/report and GET /alerts/active through the real Worker and hubs: admin only,
// their shapes from real traffic, a pool whose hub does not answer, the alert memory kept in the
// default pool's hub across requests, and ALERT_THRESHOLDS.
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { readConfig } from "../../gateway/config.ts";
import { alertKey } from "../../gateway/monitoring/alerts.ts";
import { ActiveAlerts, PerformanceReport } from "../../schema/monitoring.ts";
import { bearer, gatewayFetch, postJson, TestAgent, trackedAgents, uniqueId, waitFor } from "./helpers.ts";
import { fetchWith } from "./instrumented-env.ts";
import { DEFAULTS } from "./monitoring-fixtures.ts";

const agents = trackedAgents();

afterEach(() => {
  vi.restoreAllMocks();
});

const admin = () => bearer({ role: "admin" });

async function getJson<T>(path: string, bindings?: object): Promise<T> {
  const init = { headers: await admin() };
  const response =
    bindings === undefined ? await gatewayFetch(path, init) : await fetchWith(bindings, path, init);
  expect(response.status).toBe(200);
  expect(response.headers.get("Cache-Control")).toBe("no-store");
  return (await response.json()) as T;
}

/** One /generate on `agent`, answered with `tokens` chunks. */
async function served(agent: TestAgent, model: string, tokens: number): Promise<void> {
  const pending = postJson("/generate", { prompt: "hi", model, max_tokens: 16 });
  const frame = await agent.next("generate");
  for (let i = 0; i < tokens; i++) await agent.chunk(frame.id, "x");
  await agent.done(frame.id, { promptTokens: 4, completionTokens: tokens });
  expect((await pending).status).toBe(200);
}

/** The test env with one more pool, whose hub never answers (every RPC on it rejects). */
function withPoolDown(name: string, extra: Record<string, string> = {}) {
  const pools = JSON.parse(env.POOLS as string) as Record<string, unknown>;
  const namespace = env.AGENT_HUB;
  const hubs = new Proxy(namespace, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (property !== "getByName" || typeof value !== "function") {
        return typeof value === "function" ? value.bind(target) : value;
      }
      return (pool: string, options?: DurableObjectNamespaceGetDurableObjectOptions) => {
        if (pool !== name) return target.getByName(pool, options);
        return new Proxy(
          {},
          {
            get: (_, method) =>
              method === "then" ? undefined : () => Promise.reject(new Error(`hub ${name} is down`)),
          },
        );
      };
    },
  });
  return { ...env, POOLS: JSON.stringify({ ...pools, [name]: {} }), AGENT_HUB: hubs, ...extra };
}

describe("admin only", () => {
  for (const path of ["/performance/report", "/alerts/active"]) {
    it(`${path}: 401 without a token, 403 for a user, 200 for an admin`, async () => {
      expect((await gatewayFetch(path)).status).toBe(401);
      expect((await gatewayFetch(path, { headers: await bearer({ role: "user" }) })).status).toBe(403);
      expect((await gatewayFetch(path, { headers: await bearer({ role: "agent" }) })).status).toBe(403);
      await getJson(path);
    });
  }
});

describe("GET /performance/report", () => {
  it("reports a model's and an agent's traffic from the hub's windows", async () => {
    const model = `${uniqueId("report-model")}:1.0.0`;
    const agent = await agents.serving(model, 1);
    await served(agent, model, 3);
    await served(agent, model, 5);
    const report = await getJson<PerformanceReport>("/performance/report");
    expect(report.unreachablePools).toEqual([]);
    expect(Date.parse(report.generatedAt)).toBeGreaterThan(Date.now() - 60_000);
    for (const window of ["1m", "5m", "1h", "24h"] as const) {
      const row = report.windows[window].byModel.find((r) => r.model === model.split(":")[0]);
      expect(row).toMatchObject({
        version: "1.0.0",
        requests: 2,
        errors: 0,
        errorRate: 0,
        completionTokens: 8,
      });
      expect(row?.latencyMs.p50).toBeGreaterThanOrEqual(0);
      expect(row?.latencyMs.p99).toBeGreaterThanOrEqual(row?.latencyMs.p50 ?? 0);
      const mine = report.windows[window].byAgent.find((r) => r.agent === agent.id);
      expect(mine).toMatchObject({ pool: "default", requests: 2 });
    }
    expect(report.resources.find((r) => r.agent === agent.id)).toMatchObject({
      pool: "default",
      up: true,
      capacity: 1,
      memoryUsedPercent: 50,
    });
    expect(report.health.score).toBeGreaterThanOrEqual(0);
    expect(report.health.components.map((c) => c.name)).toEqual([
      "availability",
      "errors",
      "breakers",
      "latency",
      "memory",
    ]);
  });

  it("lists a pool whose hub does not answer, and reports the others", async () => {
    const report = await getJson<PerformanceReport>("/performance/report", withPoolDown("lab-down"));
    expect(report.unreachablePools).toEqual(["lab-down"]);
    expect(Object.keys(report.windows)).toEqual(["1m", "5m", "1h", "24h"]);
    const availability = report.health.components.find((c) => c.name === "availability");
    expect(availability?.detail).toContain("2 of 3 pools answered (not lab-down)");
  });
});

describe("GET /alerts/active", () => {
  it("raises ServiceDown for a pool not answering, keeps its since across requests, and resolves it", async () => {
    const key = alertKey("ServiceDown", { pool: "lab-gone" });
    const down = withPoolDown("lab-gone");
    const before = Date.now();
    const first = await getJson<ActiveAlerts>("/alerts/active", down);
    expect(first.unreachablePools).toEqual(["lab-gone"]);
    const alert = first.alerts.find((a) => a.rule === "ServiceDown" && a.labels.pool === "lab-gone");
    expect(alert).toMatchObject({
      severity: "critical",
      labels: { pool: "lab-gone" },
      value: 0,
      threshold: 1,
    });
    expect(Date.parse(alert?.since ?? "")).toBeGreaterThanOrEqual(before - 1000);
    // The memory is in the default pool's hub, written once the response is out (waitUntil).
    const memory = await env.AGENT_HUB.getByName("default").alertMemory(null);
    expect(memory[key]).toBe(Date.parse(alert?.since ?? ""));

    await new Promise((resolve) => setTimeout(resolve, 20));
    const second = await getJson<ActiveAlerts>("/alerts/active", down);
    expect(second.alerts.find((a) => a.labels.pool === "lab-gone")?.since).toBe(alert?.since);

    // Configured and answering: no alert, and its memory is cleared.
    const healthy = await getJson<ActiveAlerts>("/alerts/active", { ...env, POOLS: down.POOLS });
    expect(healthy.unreachablePools).toEqual([]);
    expect(healthy.alerts.filter((a) => a.labels.pool === "lab-gone")).toEqual([]);
    await waitFor(
      async () => !(key in (await env.AGENT_HUB.getByName("default").alertMemory(null))),
      3000,
      "the resolved alert to leave the memory",
    );
  });

  it("raises ServiceDown for an agent gone and a model left without agents, since the hub saw it", async () => {
    const model = uniqueId("alerts-lost");
    const agent = await agents.serving(model, 1);
    const alive = await getJson<ActiveAlerts>("/alerts/active");
    expect(alive.alerts.filter((a) => a.labels.agent === agent.id || a.labels.model === model)).toEqual([]);

    const closedAt = Date.now();
    agent.close();
    const alerts = await waitFor(
      async () => {
        const body = await getJson<ActiveAlerts>("/alerts/active");
        const mine = body.alerts.filter((a) => a.labels.agent === agent.id || a.labels.model === model);
        return mine.length === 2 ? mine : null;
      },
      3000,
      "the agent's and the model's ServiceDown",
    );
    expect(alerts.map((a) => [a.rule, a.severity, a.labels])).toEqual([
      ["ServiceDown", "critical", { pool: "default", model, version: "" }],
      ["ServiceDown", "warning", { pool: "default", agent: agent.id }],
    ]);
    for (const a of alerts) expect(Date.parse(a.since)).toBeGreaterThanOrEqual(closedAt - 1000);
  });

  it("fires HighMemoryUsage from an agent's host facts, with the thresholds ALERT_THRESHOLDS sets", async () => {
    const model = uniqueId("alerts-memory");
    const agent = agents.adopt(
      await TestAgent.ready({
        models: [{ name: model, engine: "synthetic", loaded: true }],
        host: { platform: "linux", arch: "x64", cpus: 2, memoryTotalBytes: 8e9, memoryFreeBytes: 2e9 },
      }),
    );
    const mine = (body: ActiveAlerts) => body.alerts.filter((a) => a.labels.agent === agent.id);

    // 75 % in use: under the default 85 %.
    expect(mine(await getJson<ActiveAlerts>("/alerts/active"))).toEqual([]);
    const lowered = await getJson<ActiveAlerts>("/alerts/active", {
      ...env,
      ALERT_THRESHOLDS: JSON.stringify({ memoryPercent: 70 }),
    });
    expect(lowered.thresholds).toEqual({ ...DEFAULTS, memoryPercent: 70 });
    expect(mine(lowered).map((a) => [a.rule, a.severity, a.value, a.threshold])).toEqual([
      ["HighMemoryUsage", "warning", 75, 70],
    ]);
  });
});

describe("the answers against their zod schemas (schema/monitoring.ts, which the document is made from)", () => {
  /** Parses with no issue and loses nothing: a field the schema does not name would be stripped. */
  function expectExactly(schema: typeof PerformanceReport | typeof ActiveAlerts, body: unknown) {
    const parsed = schema.safeParse(body);
    expect(parsed.error?.issues ?? []).toEqual([]);
    expect(parsed.data).toEqual(body);
  }

  it("a report with traffic, its minute series' sketches included, and alerts with one firing", async () => {
    const model = `${uniqueId("schema-model")}:2.0.0`;
    const agent = await agents.serving(model, 1);
    await served(agent, model, 4);
    const report = await getJson<unknown>("/performance/report");
    expectExactly(PerformanceReport, report);
    const { series, windows } = PerformanceReport.parse(report);
    expect(series.some((p) => p.latencyMs !== null && p.latencyMs.counts.length > 0)).toBe(true);
    expect(windows["1m"].byModel.some((r) => r.model === model.split(":")[0])).toBe(true);

    const alerts = await getJson<unknown>("/alerts/active", withPoolDown("lab-schema"));
    expectExactly(ActiveAlerts, alerts);
    expect(ActiveAlerts.parse(alerts).alerts.map((a) => [a.rule, a.labels.pool])).toContainEqual([
      "ServiceDown",
      "lab-schema",
    ]);
  });
});

describe("ALERT_THRESHOLDS", () => {
  it("overrides any subset of the defaults", () => {
    expect(readConfig({}).alertThresholds).toEqual(DEFAULTS);
    expect(readConfig({ ALERT_THRESHOLDS: "" }).alertThresholds).toEqual(DEFAULTS);
    expect(
      readConfig({ ALERT_THRESHOLDS: JSON.stringify({ errorRate: 0.05, latencyP95Ms: 5000 }) })
        .alertThresholds,
    ).toEqual({ ...DEFAULTS, errorRate: 0.05, latencyP95Ms: 5000 });
  });

  it("falls back to the defaults on malformed JSON, an unknown field or a value out of range, logged once", () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    for (const raw of ["{not json", JSON.stringify({ errorRat: 0.2 }), JSON.stringify({ errorRate: 2 })]) {
      warn.mockClear();
      expect(readConfig({ ALERT_THRESHOLDS: raw }).alertThresholds).toEqual(DEFAULTS);
      expect(readConfig({ ALERT_THRESHOLDS: raw }).alertThresholds).toEqual(DEFAULTS);
      expect(warn).toHaveBeenCalledTimes(1);
      expect(JSON.parse(String(warn.mock.calls[0]?.[0])).msg).toContain("ALERT_THRESHOLDS");
    }
  });
});
