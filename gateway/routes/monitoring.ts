// GET /performance/report and GET /alerts/active (role admin): every pool's hub asked in parallel
// for what it counted (monitoring()), then the pure report and alert rules of gateway/monitoring/.
// A pool whose hub does not answer in time is listed in unreachablePools (and raises ServiceDown).
// The alerts' memory of since-when lives in the default pool's hub, so every isolate agrees.
import { Hono } from "hono";
import { DEFAULT_POOL } from "../../schema/hub.ts";
import type {
  ActiveAlerts,
  PerformanceReport,
  PoolMonitoring,
  ReportWindow,
} from "../../schema/monitoring.ts";
import { type Pools, readConfig } from "../config.ts";
import { askPools } from "../inference/hub-client.ts";
import { log } from "../log.ts";
import { auth } from "../middleware/auth/index.ts";
import { type AlertMemory, alertMemoryChanges, evaluateAlerts } from "../monitoring/alerts.ts";
import { buildReport } from "../monitoring/report.ts";
import type { AppEnv } from "../types.ts";

const NO_STORE = { "Cache-Control": "no-store" };
/** A hub slower than this counts as not answering: an operator's page must not hang on one pool. */
const MONITORING_TIMEOUT_MS = 5_000;
/** The alert rules read the 5-minute window, and the 1-hour one brings the minute series. */
const ALERT_WINDOWS: ReportWindow[] = ["5m", "1h"];

export const monitoringRoutes = new Hono<AppEnv>()
  .get("/performance/report", auth({ role: "admin" }), async (c) => {
    const { pools, unreachable } = await observeMonitoring(c.env);
    const body: PerformanceReport = buildReport(
      pools,
      unreachable,
      Date.now(),
      readConfig(c.env).alertThresholds,
    );
    return c.json(body, 200, NO_STORE);
  })
  .get("/alerts/active", auth({ role: "admin" }), async (c) => {
    const config = readConfig(c.env);
    const [{ pools, unreachable }, before] = await Promise.all([
      observeMonitoring(c.env, ALERT_WINDOWS),
      readAlertMemory(c.env, config.pools),
    ]);
    const now = Date.now();
    const thresholds = config.alertThresholds;
    const { alerts, memory } = evaluateAlerts(pools, thresholds, now, before ?? {}, unreachable);
    // Unread memory is not overwritten: the next evaluation that reads it carries on from it.
    const changes = before === null ? null : alertMemoryChanges(before, memory);
    if (changes !== null) {
      c.executionCtx.waitUntil(
        askPools(c.env, (hub) => hub.alertMemory(changes), {
          pools: defaultPoolOnly(config.pools),
          timeoutMs: MONITORING_TIMEOUT_MS,
        }).then(([written]) => {
          if (written?.answer === null) log("warn", "the alert memory was not written; since may restart");
        }),
      );
    }
    const body: ActiveAlerts = {
      generatedAt: new Date(now).toISOString(),
      alerts,
      thresholds,
      unreachablePools: unreachable,
    };
    return c.json(body, 200, NO_STORE);
  });

/** Every configured pool's monitoring(), those that answered and the names of those that did not. */
export async function observeMonitoring(
  env: Env,
  windows?: ReportWindow[],
): Promise<{ pools: PoolMonitoring[]; unreachable: string[] }> {
  const answers = await askPools(env, (hub) => hub.monitoring(windows), {
    timeoutMs: MONITORING_TIMEOUT_MS,
  });
  const pools: PoolMonitoring[] = [];
  const unreachable: string[] = [];
  for (const { pool, answer } of answers) {
    if (answer === null) unreachable.push(pool.name);
    else pools.push(answer);
  }
  return { pools, unreachable: unreachable.sort() };
}

/** The stored alert memory; null when the default pool's hub did not give it. */
async function readAlertMemory(env: Env, pools: Pools): Promise<AlertMemory | null> {
  const [read] = await askPools(env, (hub) => hub.alertMemory(null), {
    pools: defaultPoolOnly(pools),
    timeoutMs: MONITORING_TIMEOUT_MS,
  });
  return read?.answer ?? null;
}

function defaultPoolOnly(pools: Pools): Pools {
  const pool = pools.byName.get(DEFAULT_POOL);
  return {
    byName: new Map(pool === undefined ? [] : [[DEFAULT_POOL, pool]]),
    byModel: new Map(),
  };
}
