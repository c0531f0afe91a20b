// ops/prometheus checked by promtool itself: the rules load, their unit tests pass (and fail when a
// threshold moves), the scrape config is valid, and every dashboard query is valid PromQL that
// returns data over a synthetic fleet. CI installs promtool (.ci/run) and fails without it; elsewhere
// the suite is skipped, with the reason in its name.
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  ALERTS_FILE,
  ALERTS_TEST_FILE,
  alertingRules,
  dashboardFiles,
  SCRAPE_CONFIG_FILE,
  targetsOf,
} from "./ops-files.ts";
import { SAMPLE_INTERVAL, syntheticFleet, withVariablesResolved } from "./synthetic-fleet.ts";

const PROMTOOL = "/usr/bin/promtool";
const INSTALLED = existsSync(PROMTOOL);
const MISSING = "promtool not installed (apt-get install prometheus)";
const RUN = INSTALLED || Boolean(process.env.CI);

function promtool(...args: string[]) {
  const r = spawnSync(PROMTOOL, args, { encoding: "utf8", timeout: 60_000 });
  return { status: r.status, output: `${r.stdout ?? ""}${r.stderr ?? ""}${r.error ? String(r.error) : ""}` };
}

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "orchard-ops-"));
  dirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** prometheus.yml and alerts.yml side by side in a temp dir, the credentials file pointed at `token`. */
function scrapeConfigCopy(token: string | null): string {
  const dir = tempDir();
  copyFileSync(ALERTS_FILE, join(dir, "alerts.yml"));
  const tokenFile = join(dir, "metrics-token");
  if (token !== null) writeFileSync(tokenFile, token);
  const config = readFileSync(SCRAPE_CONFIG_FILE, "utf8");
  const rewritten = config.replace(/credentials_file: \S+/, `credentials_file: ${tokenFile}`);
  expect(rewritten).not.toBe(config);
  writeFileSync(join(dir, "prometheus.yml"), rewritten);
  return join(dir, "prometheus.yml");
}

describe.skipIf(!RUN)(RUN ? "promtool" : `promtool (skipped: ${MISSING})`, () => {
  it("is installed at /usr/bin/promtool", () => {
    expect(INSTALLED, MISSING).toBe(true);
  });

  it("loads alerts.yml, finding every rule the tests read", () => {
    const r = promtool("check", "rules", ALERTS_FILE);
    expect(r.output).toContain(`SUCCESS: ${alertingRules().length} rules found`);
    expect(r.status, r.output).toBe(0);
  });

  it("passes the rules' unit tests", () => {
    const r = promtool("test", "rules", ALERTS_TEST_FILE);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain("SUCCESS");
  });

  it("fails the rules' unit tests when a threshold moves", () => {
    const dir = tempDir();
    const rules = readFileSync(ALERTS_FILE, "utf8");
    const moved = rules.replace(/\) > 0\.1\n/, ") > 0.5\n");
    expect(moved).not.toBe(rules);
    writeFileSync(join(dir, "alerts.yml"), moved);
    copyFileSync(ALERTS_TEST_FILE, join(dir, "alerts.test.yml"));
    const r = promtool("test", "rules", join(dir, "alerts.test.yml"));
    expect(r.status).not.toBe(0);
    expect(r.output).toContain("alertname: HighErrorRate");
  });

  it("accepts the scrape config, rule files included, with its credentials file in place", () => {
    const r = promtool("check", "config", scrapeConfigCopy("metrics-scrape-token"));
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain("SUCCESS: 1 rule files found");
  });

  it("refuses the scrape config when its credentials file is missing", () => {
    const r = promtool("check", "config", scrapeConfigCopy(null));
    expect(r.status).not.toBe(0);
    expect(r.output).toContain("metrics-token");
  });

  it("evaluates every dashboard query to data over a synthetic fleet", () => {
    const exprs = dashboardFiles().flatMap(({ file, json }) =>
      targetsOf(json).map(({ panel, target }) => ({ where: `${file} / ${panel.title}`, expr: target.expr })),
    );
    expect(exprs.length).toBeGreaterThan(60);
    const r = evaluateOverFleet(exprs.map((e) => e.expr));
    expect(exprs.filter((e) => r.failing.includes(e.expr)).map((e) => e.where)).toEqual([]);
    expect(r.status, r.output).toBe(0);
  });

  it("fails a query that returns nothing or only NaN over the synthetic fleet", () => {
    const good = 'sum(rate(ml_inference_requests_total{pool=~"$pool"}[$__rate_interval]))';
    const broken = [
      // the quantile lost its le: no series
      'histogram_quantile(0.95, sum by (pool) (rate(ml_inference_request_duration_seconds_bucket{pool=~"$pool"}[5m])))',
      // a multi-value variable matched exactly
      'ml_inference_agent_up{pool="$pool"}',
      // a division whose sides share no labels
      "sum by (model) (rate(ml_inference_errors_total[5m])) / sum by (agent) (rate(ml_inference_agent_requests_total[5m]))",
      // a quantile over a window with no requests: NaN
      'histogram_quantile(0.5, sum by (le) (rate(ml_inference_queue_wait_seconds_bucket{pool="nowhere"}[5m]) or rate(ml_inference_queue_wait_seconds_bucket[5m]) * 0))',
    ];
    const r = evaluateOverFleet([good, ...broken]);
    expect(r.status).not.toBe(0);
    expect(r.failing).toEqual(broken);
  });
});

/**
 * Evaluates each query (variables on "All") at 65 minutes into the synthetic fleet; a query fails
 * unless it returns at least one finite value.
 */
function evaluateOverFleet(exprs: string[]) {
  const dir = tempDir();
  const resolved = exprs.map(withVariablesResolved);
  // JSON is YAML: promtool reads this test file as it would a hand-written one.
  const tests = {
    rule_files: [],
    evaluation_interval: SAMPLE_INTERVAL,
    tests: [
      {
        interval: SAMPLE_INTERVAL,
        input_series: syntheticFleet(),
        promql_expr_test: resolved.map((expr) => ({
          expr: `count((${expr}) > -Inf < +Inf) > bool 0`,
          eval_time: "65m",
          exp_samples: [{ labels: "{}", value: 1 }],
        })),
      },
    ],
  };
  writeFileSync(join(dir, "dashboards.test.yml"), JSON.stringify(tests, null, 1));
  const r = promtool("test", "rules", join(dir, "dashboards.test.yml"));
  // promtool quotes each failing expression Go-style (%q), which escapes like JSON.
  const failing = exprs.filter((_, i) => r.output.includes(JSON.stringify(resolved[i]).slice(1, -1)));
  return { ...r, failing };
}
