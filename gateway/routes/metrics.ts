// GET /metrics: Prometheus's view of the fleet. Every pool's hub reports its families (counted in
// the Durable Object that saw the requests, so every isolate renders the same numbers); this
// route merges them, adds whether each pool answered and the health score, and writes the text
// format or OpenMetrics as the scraper's Accept asks. Protected: an admin JWT, or the scrape token
// METRICS_TOKEN (a secret) that a Prometheus scrape config sends as its bearer credentials.
import { type Context, Hono, type Next } from "hono";
import { HEALTH_COMPONENTS, type MetricFamily, type PoolMonitoring } from "../../schema/monitoring.ts";
import { readConfig } from "../config.ts";
import { askPools } from "../inference/hub-client.ts";
import { CONTENT_TYPES, mergeFamilies, negotiateFormat, renderFamilies } from "../metrics/exposition.ts";
import { auth } from "../middleware/auth/index.ts";
import { healthScore } from "../monitoring/health-score.ts";
import { detectionFamily } from "../security/detections.ts";
import type { AppEnv } from "../types.ts";

/** A hub slower than this is reported down (ml_inference_pool_up 0): a scrape must not hang. */
const SCRAPE_TIMEOUT_MS = 5_000;

const encoder = new TextEncoder();

interface Scrape {
  families: MetricFamily[];
  monitoring: PoolMonitoring;
}

/** Constant-time comparison of the bearer token with METRICS_TOKEN (equal lengths compared in full). */
function isScrapeToken(header: string | undefined, expected: string | undefined): boolean {
  if (!expected || !header) return false;
  const match = header.match(/^Bearer[ \t]+(\S+)[ \t]*$/i);
  if (!match?.[1]) return false;
  const a = encoder.encode(match[1]);
  const b = encoder.encode(expected);
  if (a.byteLength !== b.byteLength) return false;
  return crypto.subtle.timingSafeEqual(a, b);
}

const adminOnly = auth({ role: "admin" });

/** The scrape token, else an admin JWT (401/403 as every other admin route answers). */
async function scrapeAuth(c: Context<AppEnv>, next: Next): Promise<Response | undefined> {
  if (isScrapeToken(c.req.header("Authorization"), c.env.METRICS_TOKEN as string | undefined)) {
    await next();
    return;
  }
  return (await adminOnly(c, next)) ?? undefined;
}

export const metricsRoutes = new Hono<AppEnv>().get("/metrics", scrapeAuth, async (c) => {
  // The RPC's inferred type flattens the union of families; its shape is AgentHub.scrape()'s.
  const answers = await askPools(c.env, (hub) => hub.scrape() as unknown as Promise<Scrape>, {
    timeoutMs: SCRAPE_TIMEOUT_MS,
  });
  const lists: MetricFamily[][] = [];
  const pools: PoolMonitoring[] = [];
  const unreachable: string[] = [];
  const up: MetricFamily = { name: "ml_inference_pool_up", type: "gauge", samples: [] };
  for (const { pool, answer } of answers) {
    up.samples.push({ labels: { pool: pool.name }, value: answer === null ? 0 : 1 });
    if (answer === null) {
      unreachable.push(pool.name);
      continue;
    }
    lists.push(answer.families);
    pools.push(answer.monitoring);
  }
  // Counted in D1 by the Worker, not by a hub (gateway/security/detections.ts).
  lists.push([await detectionFamily(c.env.DB)]);
  const thresholds = readConfig(c.env).alertThresholds;
  const fleet = healthScore(pools, thresholds, unreachable);
  const score: MetricFamily = {
    name: "ml_inference_health_score",
    type: "gauge",
    samples: [{ labels: {}, value: fleet.score }],
  };
  const poolScores: MetricFamily = {
    name: "ml_inference_pool_health_score",
    type: "gauge",
    samples: pools.map((p) => ({ labels: { pool: p.pool }, value: healthScore([p], thresholds).score })),
  };
  const components: MetricFamily = {
    name: "ml_inference_health_score_component",
    type: "gauge",
    samples: HEALTH_COMPONENTS.map((name) => ({
      labels: { component: name },
      value: fleet.components.find((k) => k.name === name)?.value ?? 1,
    })),
  };
  const format = negotiateFormat(c.req.header("Accept"));
  const body = renderFamilies(mergeFamilies([...lists, [up, score, poolScores, components]]), format);
  return c.body(body, 200, { "Content-Type": CONTENT_TYPES[format], "Cache-Control": "no-store" });
});
