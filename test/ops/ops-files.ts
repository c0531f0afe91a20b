// The files of ops/ as the ops tests read them: the alert rules and their unit tests (YAML), the
// dashboards (JSON) and the Grafana provisioning examples.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseYaml, type YamlValue } from "./yaml-subset.ts";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const PROMETHEUS_DIR = join(ROOT, "ops/prometheus");
export const ALERTS_FILE = join(PROMETHEUS_DIR, "alerts.yml");
export const ALERTS_TEST_FILE = join(PROMETHEUS_DIR, "alerts.test.yml");
export const SCRAPE_CONFIG_FILE = join(PROMETHEUS_DIR, "prometheus.yml");
export const GRAFANA_DIR = join(ROOT, "ops/grafana");
export const DASHBOARDS_DIR = join(GRAFANA_DIR, "dashboards");

export type YamlMap = { [key: string]: YamlValue };

export function readYaml(path: string): YamlValue {
  return parseYaml(readFileSync(path, "utf8"));
}

export function asMap(v: YamlValue | undefined, what: string): YamlMap {
  if (v === null || v === undefined || typeof v !== "object" || Array.isArray(v))
    throw new Error(`${what} is not a mapping`);
  return v;
}

export function asList(v: YamlValue | undefined, what: string): YamlValue[] {
  if (!Array.isArray(v)) throw new Error(`${what} is not a list`);
  return v;
}

export function asString(v: YamlValue | undefined, what: string): string {
  if (typeof v !== "string") throw new Error(`${what} is not a string`);
  return v;
}

function stringMap(v: YamlValue | undefined, what: string): Record<string, string> {
  if (v === undefined) return {};
  return Object.fromEntries(Object.entries(asMap(v, what)).map(([k, x]) => [k, asString(x, `${what}.${k}`)]));
}

export interface AlertingRule {
  group: string;
  alert: string;
  expr: string;
  for: string | undefined;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

/** The alerting rules of alerts.yml in file order; a recording rule or an unknown key throws. */
export function alertingRules(path = ALERTS_FILE): AlertingRule[] {
  const doc = asMap(readYaml(path), path);
  return asList(doc.groups, "groups").flatMap((g, gi) => {
    const group = asMap(g, `groups[${gi}]`);
    const name = asString(group.name, `groups[${gi}].name`);
    return asList(group.rules, `${name}.rules`).map((r, ri) => {
      const rule = asMap(r, `${name}.rules[${ri}]`);
      const unknown = Object.keys(rule).filter(
        (k) => !["alert", "expr", "for", "labels", "annotations", "keep_firing_for"].includes(k),
      );
      if (unknown.length > 0) throw new Error(`${name}.rules[${ri}] has ${unknown.join(", ")}`);
      return {
        group: name,
        alert: asString(rule.alert, `${name}.rules[${ri}].alert`),
        expr: asString(rule.expr, `${name}.rules[${ri}].expr`).trim(),
        for: rule.for === undefined ? undefined : asString(rule.for, `${name}.rules[${ri}].for`),
        labels: stringMap(rule.labels, `${name}.rules[${ri}].labels`),
        annotations: stringMap(rule.annotations, `${name}.rules[${ri}].annotations`),
      };
    });
  });
}

export interface AlertCase {
  evalTime: string;
  alertname: string;
  expected: { labels: Record<string, string>; annotations: Record<string, string> }[];
}

/** Every alert_rule_test case of alerts.test.yml. */
export function alertCases(path = ALERTS_TEST_FILE): AlertCase[] {
  const doc = asMap(readYaml(path), path);
  return asList(doc.tests, "tests").flatMap((t, ti) =>
    asList(asMap(t, `tests[${ti}]`).alert_rule_test ?? [], `tests[${ti}].alert_rule_test`).map((c, ci) => {
      const at = `tests[${ti}].alert_rule_test[${ci}]`;
      const test = asMap(c, at);
      return {
        evalTime: asString(test.eval_time, `${at}.eval_time`),
        alertname: asString(test.alertname, `${at}.alertname`),
        expected: asList(test.exp_alerts ?? [], `${at}.exp_alerts`).map((a, ai) => {
          const alert = asMap(a, `${at}.exp_alerts[${ai}]`);
          return {
            labels: stringMap(alert.exp_labels, `${at}.exp_alerts[${ai}].exp_labels`),
            annotations: stringMap(alert.exp_annotations, `${at}.exp_alerts[${ai}].exp_annotations`),
          };
        }),
      };
    }),
  );
}

// Grafana's dashboard JSON is wide and loosely typed; the tests read the parts they check.
// biome-ignore lint/suspicious/noExplicitAny: JSON read from disk
export type Json = any;

export interface DashboardFile {
  file: string;
  json: Json;
}

export function dashboardFiles(): DashboardFile[] {
  return readdirSync(DASHBOARDS_DIR)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((file) => ({ file, json: JSON.parse(readFileSync(join(DASHBOARDS_DIR, file), "utf8")) }));
}

/** Every panel, including those nested in collapsed rows. */
export function panelsOf(dashboard: Json): Json[] {
  return (dashboard.panels ?? []).flatMap((p: Json) => [p, ...(p.panels ?? [])]);
}

export function targetsOf(dashboard: Json): { panel: Json; target: Json }[] {
  return panelsOf(dashboard).flatMap((panel) =>
    (panel.targets ?? []).map((target: Json) => ({ panel, target })),
  );
}

/** A template variable's query text (Grafana stores a string or { query }). */
export function variableQuery(variable: Json): string {
  return typeof variable.query === "string" ? variable.query : variable.query?.query;
}
