// ops/ against the monitoring contract (schema/monitoring.ts): the alert rules are ALERT_RULES with
// AlertThresholds' defaults, every PromQL expression of the rules and dashboards names only METRICS
// and their labels, the dashboards are well-formed and provisioning-ready, and the rule tests cover
// every rule both ways. No promtool needed (promtool.test.ts runs it).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { renderAll } from "../../ops/grafana/dashboards.ts";
import {
  ALERT_RULES,
  AlertThresholds,
  BREAKER_STATE_VALUE,
  MEMORY_PRESSURE_VALUE,
  METRIC_LABELS,
  METRICS,
} from "../../schema/monitoring.ts";
import {
  ALERTS_FILE,
  ALERTS_TEST_FILE,
  alertCases,
  alertingRules,
  asList,
  asMap,
  asString,
  dashboardFiles,
  GRAFANA_DIR,
  type Json,
  panelsOf,
  readYaml,
  SCRAPE_CONFIG_FILE,
  targetsOf,
  variableQuery,
} from "./ops-files.ts";
import { contractProblems, promqlRefs, resolveMetric, resultLabels, TARGET_LABELS } from "./promql.ts";

const DEFAULTS = AlertThresholds.parse({});
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, resolved by Grafana.
const DS_UID = "${DS_PROMETHEUS}";
const rules = alertingRules();
const rulesNamed = (name: string) => rules.filter((r) => r.alert === name);
const only = (name: string) => {
  const [rule, ...more] = rulesNamed(name);
  if (!rule || more.length > 0) throw new Error(`expected one ${name} rule`);
  return rule;
};
const scrapeConfig = asMap(readYaml(SCRAPE_CONFIG_FILE), "prometheus.yml");
const gatewayJob = asMap(asList(scrapeConfig.scrape_configs, "scrape_configs")[0], "scrape_configs[0]");

describe("alerts.yml", () => {
  it("has a rule for each name of ALERT_RULES and no other", () => {
    expect(new Set(rules.map((r) => r.alert))).toEqual(new Set(ALERT_RULES));
  });

  it("gives every rule a for:, a severity, and a summary and description that show the value", () => {
    for (const rule of rules) {
      expect(rule.for, rule.alert).toMatch(/^[1-9][0-9]*[smh]$/);
      expect(["warning", "critical"], rule.alert).toContain(rule.labels.severity);
      expect(rule.annotations.summary, rule.alert).toBeTruthy();
      expect(rule.annotations.description, rule.alert).toBeTruthy();
      expect(`${rule.annotations.summary} ${rule.annotations.description}`, rule.alert).toContain("$value");
    }
  });

  it("names only metrics of METRICS (and up) with labels they carry", () => {
    for (const rule of rules) expect(contractProblems(rule.expr), `${rule.alert}: ${rule.expr}`).toEqual([]);
  });

  it("uses AlertThresholds' defaults", () => {
    const errorRate = only("HighErrorRate").expr;
    expect(errorRate).toContain(`) > ${DEFAULTS.errorRate}`);
    expect(errorRate).toContain(`>= ${DEFAULTS.errorRateMinRequests}`);
    const windows = [...errorRate.matchAll(/\[([^\]]+)\]/g)].map((m) => m[1]);
    expect(windows.length).toBeGreaterThan(0);
    for (const w of windows) expect(w).toBe(`${DEFAULTS.errorRateWindowMs / 60_000}m`);
    expect(errorRate).toMatch(/sum by \(pool, model\) \(rate\(ml_inference_errors_total\[/);

    const latency = only("HighLatencyP95").expr;
    expect(latency).toMatch(/^histogram_quantile\(0\.95,/);
    expect(latency).toMatch(new RegExp(`\\) > ${DEFAULTS.latencyP95Ms / 1000}$`));

    expect(only("HighMemoryUsage").expr).toContain(
      `ml_inference_memory_usage_percent > ${DEFAULTS.memoryPercent}`,
    );
    expect(only("LowHealthScore").expr).toBe(`ml_inference_health_score < ${DEFAULTS.healthScore}`);
    expect(only("CircuitBreakerOpen").expr).toMatch(
      new RegExp(`ml_inference_circuit_breaker_state\\[1m\\]\\) == ${BREAKER_STATE_VALUE.open}$`),
    );
  });

  it("fires ServiceDown for a model without agents, an agent gone, a pool not answering and the scrape target", () => {
    const byScope = Object.fromEntries(rulesNamed("ServiceDown").map((r) => [r.labels.scope, r.expr]));
    expect(byScope).toEqual({
      model: "ml_inference_model_agents == 0",
      agent: "ml_inference_agent_up == 0",
      pool: "ml_inference_pool_up == 0",
      gateway: `up{job="${asString(gatewayJob.job_name, "job_name")}"} == 0`,
    });
  });

  it("says at the top that the gateway evaluates the same rules and where its thresholds live", () => {
    const header = readFileSync(ALERTS_FILE, "utf8").split("\ngroups:")[0] ?? "";
    expect(header).toContain("GET /alerts/active");
    expect(header).toContain("ALERT_THRESHOLDS in");
    expect(header).toContain("wrangler.toml");
  });
});

describe("alerts.test.yml", () => {
  const cases = alertCases();

  it("has, for every rule, a case where it fires and one where it does not", () => {
    for (const name of ALERT_RULES) {
      const mine = cases.filter((c) => c.alertname === name);
      expect(
        mine.some((c) => c.expected.length > 0),
        `${name} fires`,
      ).toBe(true);
      expect(
        mine.some((c) => c.expected.length === 0),
        `${name} does not fire`,
      ).toBe(true);
    }
  });

  it("expects every rule of alerts.yml (each ServiceDown cause) to fire with its labels and both annotations", () => {
    for (const rule of rules) {
      const fired = cases
        .filter((c) => c.alertname === rule.alert)
        .flatMap((c) => c.expected)
        .filter((a) => Object.entries(rule.labels).every(([k, v]) => a.labels[k] === v));
      expect(fired.length, `${rule.alert} ${JSON.stringify(rule.labels)}`).toBeGreaterThan(0);
      for (const a of fired) {
        expect(Object.keys(a.annotations).sort()).toEqual(["description", "summary"]);
        const ruleLabels = new Set(Object.keys(rule.labels));
        for (const l of Object.keys(a.labels).filter((l) => !ruleLabels.has(l))) {
          expect([...METRIC_LABELS, ...TARGET_LABELS], `${rule.alert} label ${l}`).toContain(l);
        }
      }
    }
  });

  it("feeds series with the real metric names and labels", () => {
    const doc = asMap(readYaml(ALERTS_TEST_FILE), "alerts.test.yml");
    const series = asList(doc.tests, "tests").flatMap((t) =>
      asList(asMap(t, "test").input_series, "input_series").map((s) =>
        asString(asMap(s, "s").series, "series"),
      ),
    );
    expect(series.length).toBeGreaterThan(20);
    for (const s of series) expect(contractProblems(s), s).toEqual([]);
  });
});

describe("prometheus.yml", () => {
  it("scrapes the gateway's /metrics over https with a bearer credentials file and loads alerts.yml", () => {
    expect(asList(scrapeConfig.rule_files, "rule_files")).toContain("alerts.yml");
    expect(gatewayJob.job_name).toBe("orchard-gateway");
    expect(gatewayJob.scheme).toBe("https");
    expect(gatewayJob.metrics_path).toBe("/metrics");
    const auth = asMap(gatewayJob.authorization, "authorization");
    expect(auth.type).toBe("Bearer");
    expect(asString(auth.credentials_file, "credentials_file")).toMatch(/^\//);
  });

  it("scrapes often enough for the 2-minute error-rate window to hold four samples", () => {
    const interval = asString(
      gatewayJob.scrape_interval ?? asMap(scrapeConfig.global, "global").scrape_interval,
      "scrape_interval",
    );
    const seconds = Number(/^(\d+)s$/.exec(interval)?.[1] ?? Number.NaN);
    expect(seconds * 4).toBeLessThanOrEqual(DEFAULTS.errorRateWindowMs / 1000);
  });
});

describe("Grafana dashboards", () => {
  const dashboards = dashboardFiles();
  const exprsOf = (d: Json): string[] => targetsOf(d).map(({ target }) => target.expr as string);

  it("are the four views, each with a title, a unique uid and the datasource variable", () => {
    expect(dashboards.map((d) => d.file)).toEqual([
      "orchard-errors.json",
      "orchard-models.json",
      "orchard-requests.json",
      "orchard-resources.json",
    ]);
    const uids = dashboards.map((d) => d.json.uid);
    expect(new Set(uids).size).toBe(dashboards.length);
    for (const { file, json } of dashboards) {
      expect(json.title, file).toMatch(/^Orchard \/ /);
      const vars: Json[] = json.templating.list;
      const ds = vars.find((v) => v.name === "DS_PROMETHEUS");
      expect(ds, file).toMatchObject({ type: "datasource", query: "prometheus" });
      const pool = vars.find((v) => v.name === "pool");
      expect(pool, file).toMatchObject({ type: "query", multi: true, includeAll: true, allValue: ".*" });
      expect(vars.some((v) => v.name === "model" || v.name === "agent")).toBe(true);
    }
  });

  it("have unique panel ids, and panels that fit the grid without overlapping", () => {
    for (const { file, json } of dashboards) {
      const panels = panelsOf(json);
      const ids = panels.map((p) => p.id);
      expect(new Set(ids).size, file).toBe(ids.length);
      const cells = new Set<string>();
      for (const p of panels) {
        const { x, y, w, h } = p.gridPos;
        expect(x + w, `${file} ${p.title}`).toBeLessThanOrEqual(24);
        for (let cx = x; cx < x + w; cx++)
          for (let cy = y; cy < y + h; cy++) {
            const cell = `${cx},${cy}`;
            expect(cells.has(cell), `${file} ${p.title} overlaps at ${cell}`).toBe(false);
            cells.add(cell);
          }
      }
    }
  });

  it("query Prometheus through the datasource variable, panel and target", () => {
    for (const { file, json } of dashboards) {
      const panels = panelsOf(json).filter((p) => p.type !== "row");
      expect(panels.length, file).toBeGreaterThan(5);
      for (const p of panels) {
        expect(p.datasource, `${file} ${p.title}`).toEqual({ type: "prometheus", uid: DS_UID });
        expect(p.targets.length, `${file} ${p.title}`).toBeGreaterThan(0);
        for (const t of p.targets) expect(t.datasource.uid).toBe(DS_UID);
      }
      for (const v of json.templating.list.filter((x: Json) => x.type === "query"))
        expect(v.datasource.uid, `${file} $${v.name}`).toBe(DS_UID);
    }
  });

  it("name only metrics of METRICS (and up) with labels they carry, in every target", () => {
    for (const { file, json } of dashboards)
      for (const expr of exprsOf(json)) expect(contractProblems(expr), `${file}: ${expr}`).toEqual([]);
  });

  it("filter by the pool variable wherever a metric has a pool label", () => {
    for (const { file, json } of dashboards)
      for (const expr of exprsOf(json))
        for (const s of promqlRefs(expr).selectors) {
          const r = resolveMetric(s.metric);
          if ("error" in r || !r.labels.includes("pool")) continue;
          expect(s.labels, `${file}: ${expr}`).toContain("pool");
        }
  });

  it("have variables that list label values of real metrics", () => {
    for (const { file, json } of dashboards)
      for (const v of json.templating.list.filter((x: Json) => x.type === "query")) {
        const m = /^label_values\((.+),\s*([a-z_]+)\)$/.exec(variableQuery(v));
        expect(m, `${file} $${v.name}`).not.toBeNull();
        const [, selector = "", label = ""] = m ?? [];
        expect(contractProblems(selector), selector).toEqual([]);
        const metric = promqlRefs(selector).selectors[0]?.metric ?? "";
        const r = resolveMetric(metric);
        expect("error" in r ? [] : r.labels, `${file} $${v.name}`).toContain(label);
        expect(v.name).toBe(label);
      }
  });

  it("have legends that name labels the query returns", () => {
    for (const { file, json } of dashboards)
      for (const { target } of targetsOf(json)) {
        const legend: string = target.legendFormat ?? "";
        const labels = resultLabels(target.expr);
        for (const [, l] of legend.matchAll(/\{\{\s*([A-Za-z_]+)\s*\}\}/g))
          expect([...labels], `${file}: legend ${legend} of ${target.expr}`).toContain(l);
      }
  });

  it("show what the specification's four views promise", () => {
    const metricsIn = (uid: string) => {
      const d = dashboards.find((x) => x.json.uid === uid);
      if (!d) throw new Error(`no dashboard ${uid}`);
      return new Set(exprsOf(d.json).flatMap((e) => promqlRefs(e).selectors.map((s) => s.metric)));
    };
    const exprs = (uid: string) => exprsOf(dashboards.find((x) => x.json.uid === uid)?.json).join("\n");
    expect([...metricsIn("orchard-requests")]).toEqual(
      expect.arrayContaining(["ml_inference_requests_total", "ml_inference_request_duration_seconds_bucket"]),
    );
    for (const q of [0.5, 0.95, 0.99])
      expect(exprs("orchard-requests")).toContain(`histogram_quantile(${q},`);
    expect([...metricsIn("orchard-errors")]).toEqual(
      expect.arrayContaining(["ml_inference_errors_total", "ml_inference_circuit_breaker_state"]),
    );
    expect([...metricsIn("orchard-resources")]).toEqual(
      expect.arrayContaining([
        "ml_inference_memory_usage_percent",
        "ml_inference_memory_pressure",
        "ml_inference_cpu_usage_percent",
        "ml_inference_gpu_usage_percent",
        "ml_inference_agent_tokens_per_second",
        "ml_inference_agent_in_flight_requests",
        "ml_inference_agent_capacity",
        "ml_inference_model_memory_bytes",
      ]),
    );
    expect([...metricsIn("orchard-models")]).toEqual(
      expect.arrayContaining([
        "ml_inference_request_duration_seconds_bucket",
        "ml_inference_time_to_first_token_seconds_bucket",
        "ml_inference_generated_tokens_total",
        "ml_inference_rollout_requests_total",
        "ml_inference_rollout_request_duration_seconds_bucket",
      ]),
    );
    expect(exprs("orchard-models")).toMatch(/by \(model, version, le\)/);
    expect(exprs("orchard-models")).toMatch(/by \(model, rollout, arm(, le)?\)/);
  });

  it("show the contract's state encodings as their names", () => {
    const mappingOf = (metric: string) => {
      const panel = dashboards
        .flatMap((d) => panelsOf(d.json))
        .find((p) => p.type === "state-timeline" && p.targets.some((t: Json) => t.expr.includes(metric)));
      const options = panel?.fieldConfig.defaults.mappings[0]?.options ?? {};
      return Object.fromEntries(Object.entries(options).map(([k, v]) => [(v as Json).text, Number(k)]));
    };
    expect(mappingOf("ml_inference_circuit_breaker_state")).toEqual({
      closed: BREAKER_STATE_VALUE.closed,
      "half-open": BREAKER_STATE_VALUE.half_open,
      open: BREAKER_STATE_VALUE.open,
    });
    expect(mappingOf("ml_inference_memory_pressure")).toEqual(MEMORY_PRESSURE_VALUE);
  });

  it("are what ops/grafana/dashboards.ts builds (regenerate with npx tsx ops/grafana/dashboards.ts)", () => {
    const built = renderAll();
    expect(Object.keys(built).sort()).toEqual(dashboards.map((d) => d.file));
    for (const { file, json } of dashboards) expect(json, file).toEqual(JSON.parse(built[file] ?? "null"));
  });

  it("cover every metric of METRICS somewhere", () => {
    const used = new Set(
      dashboards.flatMap((d) =>
        exprsOf(d.json).flatMap((e) =>
          promqlRefs(e).selectors.map((s) => {
            const r = resolveMetric(s.metric);
            return "error" in r ? s.metric : r.family;
          }),
        ),
      ),
    );
    expect(Object.keys(METRICS).filter((m) => !used.has(m))).toEqual([]);
  });
});

describe("Grafana provisioning", () => {
  it("provisions a default Prometheus datasource", () => {
    const doc = asMap(readYaml(join(GRAFANA_DIR, "provisioning/datasources.yml")), "datasources.yml");
    expect(doc.apiVersion).toBe("1");
    const sources = asList(doc.datasources, "datasources").map((s) => asMap(s, "datasource"));
    expect(sources.filter((s) => s.type === "prometheus" && s.isDefault === "true")).toHaveLength(1);
  });

  it("loads the dashboards from files into a folder", () => {
    const doc = asMap(readYaml(join(GRAFANA_DIR, "provisioning/dashboards.yml")), "dashboards.yml");
    expect(doc.apiVersion).toBe("1");
    const [provider] = asList(doc.providers, "providers").map((p) => asMap(p, "provider"));
    expect(provider).toMatchObject({ type: "file", folder: "Orchard" });
    expect(asString(asMap(provider?.options, "options").path, "path")).toMatch(/^\//);
  });
});
