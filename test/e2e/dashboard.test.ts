// The operator's page in a real headless Chromium (Debian's, driven by playwright-core) against a
// real stack: the Worker in workerd and node agents running llama.cpp. It signs in from a
// #token= link and from the sign-in field, shows the live agents and their model, picks up an
// agent that arrives while it is open, signs out, and logs no console error of its own. One test
// answers the report, alerts and rollout lists in the browser with bodies of the API's shapes, so
// the charts and tables the stack cannot fill yet (no traffic history, no rollout) are drawn too.
//
// Console errors: Chromium logs "Failed to load resource: the server responded with a status of
// N" as a console error for every non-2xx fetch, though the page handles it. So the test counts
// every console error and page error, except that line for an endpoint the page treats as
// optional answering 404/501 (not deployed on this gateway: the page says "not available"), and
// one per 401/403 answered to the user's and the forged token the paste test tries on purpose.
import { existsSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Browser, type BrowserContext, chromium, type Locator, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DDSketch } from "../../gateway/experiments/stats/ddsketch.ts";
import { DEMO_MODEL_NAME } from "../../node-agent/demo-model.ts";
import type { ActiveAlerts, MinutePoint, PerformanceReport, ReportRow } from "../../schema/monitoring.ts";
import { mintToken } from "../../scripts/lib/token.ts";
import { type AgentProcess, type Stack, startStack } from "../helpers/stack.ts";

// The browser's globals, as the callbacks given to page.evaluate() see them: they run in Chromium,
// and this project's tsconfig (Node) has no DOM library.
declare const sessionStorage: { getItem(key: string): string | null };
declare const location: { hash: string };
declare const document: {
  documentElement: { scrollWidth: number };
  body: unknown;
  activeElement: { id: string } | null;
};
declare function getComputedStyle(element: unknown): { backgroundColor: string };

const CHROMIUM = "/usr/bin/chromium";
const HAVE_CHROMIUM = existsSync(CHROMIUM);
// CI installs chromium, so there a missing binary fails the suite; elsewhere it is skipped, named.
const SKIP = !HAVE_CHROMIUM && !process.env.CI;
const TOKEN_KEY = "orchard.dashboard.token";
/** Endpoints the page shows as "not available" when the gateway answers 404/501. */
const OPTIONAL_ENDPOINTS = new Set(["/performance/report", "/alerts/active", "/deployments", "/ab-tests"]);
/** ORCHARD_DASHBOARD_SCREENSHOT=docs/dashboard.png refreshes the README's picture. */
const SCREENSHOT = process.env.ORCHARD_DASHBOARD_SCREENSHOT ?? join(tmpdir(), "orchard-dashboard.png");

interface Logged {
  kind: "console" | "pageerror";
  text: string;
  url: string;
}

let stack: Stack;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let admin: string;
let viewer: string;
/** An admin's token signed with another secret: the gateway answers 401. */
let forged: string;
let secondAgent: Promise<AgentProcess> | undefined;
const logged: Logged[] = [];
/** "status url" of each 401/403 answered to a request carrying the user's or the forged token. */
const refusedOnPurpose: string[] = [];
const requests: { url: string; authorization?: string; referer?: string }[] = [];
const agentIds = { first: "dash-mac-1", second: "dash-mac-2" };

const dashboardUrl = () => `${stack.origin}/dashboard`;
const text = async (locator: Locator) => (await locator.textContent()) ?? "";
const storedToken = (p = page) => p.evaluate((key) => sessionStorage.getItem(key), TOKEN_KEY);

async function status(path: string): Promise<number> {
  const res = await fetch(`${stack.origin}${path}`, { headers: { Authorization: `Bearer ${admin}` } });
  await res.body?.cancel();
  return res.status;
}

/** A tab with every console error, page error, request and refusal recorded. */
async function openPage(): Promise<Page> {
  const tab = await context.newPage();
  tab.on("console", (m) => {
    if (m.type() === "error") logged.push({ kind: "console", text: m.text(), url: m.location().url });
  });
  tab.on("pageerror", (e) => logged.push({ kind: "pageerror", text: String(e), url: "" }));
  tab.on("request", (r) => {
    void r
      .allHeaders()
      .then((h) => requests.push({ url: r.url(), authorization: h.authorization, referer: h.referer }));
  });
  tab.on("response", (r) => {
    if (r.status() !== 401 && r.status() !== 403) return;
    void r
      .request()
      .allHeaders()
      .then((h) => {
        if (h.authorization === `Bearer ${viewer}` || h.authorization === `Bearer ${forged}`) {
          refusedOnPurpose.push(`${r.status()} ${r.url()}`);
        }
      });
  });
  return tab;
}

/** The console lines the page cannot prevent and has handled (see the top comment). */
function unexpectedErrors(entries: readonly Logged[]): Logged[] {
  const refused = [...refusedOnPurpose];
  return entries.filter((entry) => {
    if (entry.kind !== "console") return true;
    const failed = /^Failed to load resource: the server responded with a status of (\d+)/.exec(entry.text);
    if (failed === null) return true;
    if ((failed[1] === "404" || failed[1] === "501") && OPTIONAL_ENDPOINTS.has(new URL(entry.url).pathname)) {
      return false;
    }
    const at = refused.indexOf(`${failed[1]} ${entry.url}`);
    if (at === -1) return true;
    refused.splice(at, 1);
    return false;
  });
}

/** One table row's cells by column header. */
async function rowOf(table: Locator, header: string): Promise<Record<string, string>> {
  const headers = await table.locator("thead th").allTextContents();
  const cells = await table
    .locator("tbody tr", { has: table.page().getByRole("rowheader", { name: header, exact: true }) })
    .locator("th, td")
    .allTextContents();
  return Object.fromEntries(headers.map((h, i) => [h, cells[i] ?? ""]));
}

// ---- bodies of the API's shapes, for the one test that answers them in the browser ----

const MINUTE = 60_000;

function reportRow(over: Partial<ReportRow> = {}): ReportRow {
  return {
    requests: 0,
    errors: 0,
    errorRate: null,
    topErrors: [],
    latencyMs: { p50: null, p95: null, p99: null },
    ttftMs: { p50: null, p95: null, p99: null },
    tokensPerSecond: null,
    promptTokens: 0,
    completionTokens: 0,
    ...over,
  };
}

/** A report as an older gateway answers it, without the per-minute series (the page's fallback). */
function report(overall1m: ReportRow): Omit<PerformanceReport, "series"> {
  const window = (overall: ReportRow) => ({ overall, byModel: [], byAgent: [] });
  return {
    generatedAt: new Date().toISOString(),
    windows: {
      "1m": window(overall1m),
      "5m": window(reportRow()),
      "1h": window(reportRow()),
      "24h": window(reportRow()),
    },
    resources: [],
    health: { score: 87, components: [] },
    unreachablePools: [],
  };
}

/** An hour of minutes: requests rising to 42 and back to 30, latencies in a real DDSketch. */
function hourOfMinutes(now: number): { series: MinutePoint[]; lastP95: number } {
  const start = Math.floor(now / MINUTE) * MINUTE - 59 * MINUTE;
  let lastP95 = 0;
  const series = Array.from({ length: 60 }, (_, i): MinutePoint => {
    const requests = i === 59 ? 30 : 10 + Math.round(32 * Math.sin((Math.PI * i) / 59));
    const sketch = new DDSketch();
    for (let k = 0; k < requests; k++) sketch.add(200 + 40 * k + 5 * i);
    lastP95 = sketch.quantile(0.95);
    return {
      t: start + i * MINUTE,
      requests,
      errors: i === 59 ? 2 : i % 10 === 0 ? 1 : 0,
      completionTokens: requests * 100,
      generationMs: requests * 100 * (2000 / 3000),
      latencyMs: sketch.toJSON(),
    };
  });
  return { series, lastP95 };
}

describe.skipIf(SKIP)(
  SKIP ? "dashboard (skipped: chromium not installed (apt-get install chromium))" : "dashboard in Chromium",
  () => {
    beforeAll(async () => {
      if (!HAVE_CHROMIUM) throw new Error(`chromium not installed at ${CHROMIUM} (apt-get install chromium)`);
      stack = await startStack({ vars: { HEALTH_INTERVAL_MS: "500" } });
      admin = await stack.token("admin", "dash-operator");
      viewer = await stack.token("user", "dash-viewer");
      forged = await mintToken({ secret: "not-the-gateway-secret", role: "admin", sub: "dash-forger" });
      // launch() runs Chromium on a fresh temporary profile of its own, removed on close.
      const [, launched] = await Promise.all([
        stack.startAgent({ id: agentIds.first }),
        chromium.launch({
          executablePath: CHROMIUM,
          args: [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
          ],
        }),
      ]);
      browser = launched;
      await stack.waitForAgents((agents) =>
        agents.some((a) => a.id === agentIds.first && a.lastHealth !== null),
      );
      // One answered request, so the agent's tokens/s has something to show.
      const generated = await fetch(`${stack.origin}/generate`, {
        method: "POST",
        headers: { Authorization: `Bearer ${admin}`, "Content-Type": "application/json" },
        body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 8, temperature: 0 }),
      });
      expect(generated.status, await generated.text()).toBe(200);
      context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      page = await openPage();
    });

    afterAll(async () => {
      await secondAgent?.catch(() => undefined);
      await browser?.close();
      await stack?.stop();
    });

    it("signs in from a #token= link, takes the token out of the URL and shows the live agent", async () => {
      await page.goto(`${dashboardUrl()}#token=${admin}`);
      await page.locator("#agents-body tbody tr", { hasText: agentIds.first }).waitFor();

      expect(page.url()).toBe(dashboardUrl());
      expect(await page.evaluate(() => location.hash)).toBe("");
      expect(await storedToken()).toBe(admin);
      await expect(text(page.getByRole("status"))).resolves.toMatch(/^Fleet ok · 1 agent connected( · |$)/);

      // The tables as assistive technology reads them: named by their captions, with headers.
      const agents = page.getByRole("table", { name: /Connected agents/ });
      await expect(agents.getByRole("columnheader", { name: "In flight / capacity" }).count()).resolves.toBe(
        1,
      );
      const row = await rowOf(agents, agentIds.first);
      expect(row).toMatchObject({ Pool: "default", State: "ready", Breaker: "closed" });
      expect(row.Models).toContain(DEMO_MODEL_NAME);
      expect(row["In flight / capacity"]).toMatch(/^0 \/ \d+$/);
      expect(row.Memory).toMatch(/^~?\d+(\.\d)? %$/);
      expect(row["Tokens/s"]).toMatch(/^[\d,]+(\.\d)?$/);

      const models = page.getByRole("table", { name: /Registered models/ });
      expect((await rowOf(models, DEMO_MODEL_NAME))["Served by"]).toBe(
        `${DEMO_MODEL_NAME} on ${agentIds.first}`,
      );

      await expect(page.getByLabel("Admin token").isVisible()).resolves.toBe(false);
      await expect(page.getByRole("button", { name: "Sign out" }).isVisible()).resolves.toBe(true);
      // Started now, so the page, open since, must find it on a refresh of its own (a test below).
      secondAgent = stack.startAgent({ id: agentIds.second });
    });

    it("shows each optional section as the gateway answers it, and hides empty rollouts", async () => {
      const charts = page.locator("#charts-body");
      const reportStatus = await status("/performance/report");
      if (reportStatus === 200) {
        await expect(charts.getByRole("img", { name: /^Requests per minute/ }).count()).resolves.toBe(1);
      } else {
        expect([404, 501]).toContain(reportStatus);
        await expect(text(charts)).resolves.toBe("The performance report is not available on this gateway.");
      }
      const alerts = await text(page.locator("#alerts-body"));
      if ((await status("/alerts/active")) === 200) expect(alerts).toMatch(/^No active alerts\.$|Severity/);
      else expect(alerts).toBe("Alerts are not available on this gateway.");
      // No deployment or A/B test was started: both sections stay out of the way.
      expect(await status("/deployments")).toBe(200);
      await expect(page.locator("#deployments").isHidden()).resolves.toBe(true);
      await expect(page.locator("#ab-tests").isHidden()).resolves.toBe(true);
    });

    it("sends the token only as a bearer header, with no Referer, and never in a URL", async () => {
      const api = requests.filter((r) => new URL(r.url).pathname === "/agents");
      expect(api.length).toBeGreaterThan(0);
      for (const r of api) expect(r.authorization).toBe(`Bearer ${admin}`);
      expect(requests.map((r) => new URL(r.url).pathname)).toContain("/dashboard/app.js");
      for (const r of requests) {
        expect(r.url).not.toContain(admin);
        if (new URL(r.url).pathname !== "/dashboard") expect(r.referer).toBeUndefined();
      }
    });

    it("fits a 1280×800 screen without scrolling sideways, and follows a dark color scheme", async () => {
      expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(1280);
      const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      await page.emulateMedia({ colorScheme: "dark" });
      expect(await background()).toBe("rgb(15, 18, 22)");
      await page.emulateMedia({ colorScheme: "light" });
      expect(await background()).toBe("rgb(246, 247, 249)");
    });

    it("draws the last hour, alerts, deployments and A/B tests from bodies of the API's shapes", async () => {
      await secondAgent;
      const now = Date.now();
      const { series, lastP95 } = hourOfMinutes(now);
      const alerts: ActiveAlerts = {
        generatedAt: new Date(now).toISOString(),
        alerts: [
          {
            rule: "HighLatencyP95",
            severity: "warning",
            since: new Date(now - 5 * MINUTE).toISOString(),
            labels: { pool: "default" },
            value: 12_000,
            threshold: 10_000,
            summary: "p95 latency 12 s over 10 s",
          },
          {
            rule: "CircuitBreakerOpen",
            severity: "critical",
            since: new Date(now - 2 * MINUTE).toISOString(),
            labels: { agent: agentIds.first },
            value: 2,
            threshold: 2,
            summary: `the breaker of ${agentIds.first} is open`,
          },
        ],
        thresholds: {} as ActiveAlerts["thresholds"],
        unreachablePools: [],
      };
      const bodies: Record<string, unknown> = {
        // The report with the fleet's minutes as PoolMonitoring carries them (the page also
        // draws from a report without them: the next tab).
        "/performance/report": { ...report(reportRow({ requests: 30 })), series },
        "/alerts/active": alerts,
        "/deployments": {
          deployments: [
            {
              deployment_id: "dep-1",
              model: "demo",
              strategy: "canary",
              status: "running",
              running: true,
              baseline: "demo:1.0.0",
              candidate: "demo:2.0.0",
              traffic_share: 0.25,
              updated_at: new Date(now).toISOString(),
            },
          ],
        },
        "/ab-tests": {
          ab_tests: [
            {
              test_id: "ab-1",
              status: "running",
              running: true,
              model_a: "demo:1.0.0",
              model_b: "demo:2.0.0",
              traffic_split: 0.5,
              started_at: new Date(now - 60 * MINUTE).toISOString(),
              ends_at: new Date(now + 23 * 60 * MINUTE).toISOString(),
            },
          ],
        },
      };
      const tab = await openPage();
      await tab.route(
        (url) => url.pathname in bodies,
        (route) => route.fulfill({ json: bodies[new URL(route.request().url()).pathname] }),
      );
      await tab.goto(`${dashboardUrl()}#token=${admin}`);
      await tab.locator("#charts-body figure").first().waitFor();

      const charts = tab.locator("#charts-body");
      await expect(charts.getByRole("img").count()).resolves.toBe(4);
      await expect(
        charts.getByRole("img", { name: "Requests per minute, last hour: latest 30, peak 42" }).count(),
      ).resolves.toBe(1);
      await expect(
        charts.getByRole("img", { name: "Errors per minute, last hour: latest 2, peak 2" }).count(),
      ).resolves.toBe(1);
      const p95 = Math.round(lastP95).toLocaleString("en");
      await expect(
        charts.getByRole("img", { name: new RegExp(`^Latency p95, last hour: latest ${p95} ms,`) }).count(),
      ).resolves.toBe(1);
      await expect(
        charts
          .getByRole("img", {
            name: /^Tokens per second, last hour: latest 1,500 tok\/s, peak 1,500 tok\/s$/,
          })
          .count(),
      ).resolves.toBe(1);
      // Bars for counts: one per minute with traffic.
      await expect(charts.locator("svg.bars").first().locator("rect").count()).resolves.toBe(60);
      await expect(text(tab.locator("#charts-note"))).resolves.toBe(
        "Per minute over the last hour, all pools.",
      );
      // The score comes from /health where it says one, else from the report (87 here).
      const health = (await (await fetch(`${stack.origin}/health`)).json()) as { healthScore?: number };
      await expect(text(tab.getByRole("status"))).resolves.toMatch(
        health.healthScore === undefined
          ? /^Fleet ok · 2 agents connected · health score 87\/100$/
          : /^Fleet ok · 2 agents connected · health score \d+\/100$/,
      );

      const alertTable = tab.getByRole("table", { name: /Alerts firing now/ });
      const alertRows = await alertTable.locator("tbody tr").allTextContents();
      expect(alertRows).toHaveLength(2);
      expect(alertRows[0]).toMatch(/^critical/);
      expect(await rowOf(alertTable, "warning")).toMatchObject({
        Rule: "HighLatencyP95",
        Labels: "pool=default",
        Value: "12,000 (threshold 10,000)",
        Since: "5 min ago",
      });

      await expect(tab.locator("#deployments").isVisible()).resolves.toBe(true);
      expect(await rowOf(tab.getByRole("table", { name: /Deployments/ }), "demo")).toMatchObject({
        Strategy: "canary",
        Status: "running",
        Candidate: "demo:2.0.0",
        "New version's share": "25 %",
      });
      await expect(tab.locator("#ab-tests").isVisible()).resolves.toBe(true);
      expect(await rowOf(tab.getByRole("table", { name: /A\/B tests/ }), "ab-1")).toMatchObject({
        "Model B": "demo:2.0.0",
        "Share to B": "50 %",
      });
      await tab.screenshot({ path: SCREENSHOT });
      expect(statSync(SCREENSHOT).size).toBeGreaterThan(0);
      await tab.close();
    });

    it("samples the report's one-minute window when the report has no per-minute series", async () => {
      const tab = await openPage();
      const body = report(
        reportRow({
          requests: 12,
          errors: 1,
          tokensPerSecond: 950.5,
          latencyMs: { p50: 80, p95: 240, p99: 300 },
        }),
      );
      await tab.route(`${stack.origin}/performance/report`, (route) => route.fulfill({ json: body }));
      await tab.goto(`${dashboardUrl()}#token=${admin}`);
      await tab.locator("#charts-body figure").first().waitFor();
      const charts = tab.locator("#charts-body");
      await expect(
        charts.getByRole("img", { name: "Requests per minute, last hour: latest 12, peak 12" }).count(),
      ).resolves.toBe(1);
      await expect(
        charts.getByRole("img", { name: "Latency p95, last hour: latest 240 ms, peak 240 ms" }).count(),
      ).resolves.toBe(1);
      await expect(
        charts.getByRole("img", { name: /^Tokens per second, last hour: latest 950\.5 tok\/s/ }).count(),
      ).resolves.toBe(1);
      await expect(text(tab.locator("#charts-note"))).resolves.toMatch(
        /^Sampled every 10 s from the report's rolling one-minute window/,
      );
      await tab.close();
    });

    it("shows an agent that connects while the page is open, on its own refresh", async () => {
      const before = await text(page.locator("#updated"));
      await secondAgent;
      await page.locator("#agents-body tbody tr", { hasText: agentIds.second }).waitFor({ timeout: 15_000 });
      expect(await text(page.locator("#updated"))).not.toBe(before);
      await expect(text(page.getByRole("status"))).resolves.toMatch(/^Fleet ok · 2 agents connected( · |$)/);
    });

    it("signing out clears the token and the data and returns to the form", async () => {
      await page.getByRole("button", { name: "Sign out" }).click();
      await expect(page.getByLabel("Admin token").isVisible()).resolves.toBe(true);
      expect(await storedToken()).toBeNull();
      await expect(page.locator("#board").isHidden()).resolves.toBe(true);
      await expect(page.locator("#agents-body").innerHTML()).resolves.toBe("");
      expect(await page.evaluate(() => document.activeElement?.id)).toBe("token");
      await expect(text(page.getByRole("alert"))).resolves.toBe("Signed out.");
      await expect(text(page.getByRole("status"))).resolves.toBe("Not signed in");
    });

    it("signs in with a pasted token, after refusing a non-token, a user's token and a forged one", async () => {
      const input = page.getByLabel("Admin token");
      const signIn = page.getByRole("button", { name: "Sign in" });
      await input.fill("not-a-token");
      await signIn.click();
      await expect(text(page.getByRole("alert"))).resolves.toMatch(/not a token/);
      expect(await storedToken()).toBeNull();

      await input.fill(viewer);
      await signIn.click();
      await page.getByText("This token is not an admin's").waitFor();
      expect(await storedToken()).toBeNull();
      await expect(input.isVisible()).resolves.toBe(true);
      await expect.poll(() => refusedOnPurpose).toContain(`403 ${stack.origin}/agents`);

      await input.fill(forged);
      await signIn.click();
      await page
        .getByText("The gateway refused this token: it is invalid or expired (UNAUTHORIZED)")
        .waitFor();
      expect(await storedToken()).toBeNull();
      await expect.poll(() => refusedOnPurpose).toContain(`401 ${stack.origin}/agents`);

      await input.fill(admin);
      await signIn.click();
      await page.locator("#agents-body tbody tr", { hasText: agentIds.second }).waitFor();
      expect(await storedToken()).toBe(admin);
      expect(page.url()).toBe(dashboardUrl());
    });

    it("logged no console error or page error beyond the expected 404s, 401s and 403s", async () => {
      // A round trip to the page: console events sent before it have arrived.
      await page.evaluate(() => 0);
      expect(logged.length).toBeGreaterThan(0);
      expect(unexpectedErrors(logged)).toEqual([]);
    });
  },
);
