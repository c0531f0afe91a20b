// GET /health (liveness, always 200, reports what is degraded, the health score and what each pool
// serves with how many agents) and GET /ready (200 only when D1 answers and at least one pool has
// an agent serving a model). Neither needs a token, so both are answered from a short-lived
// observation instead of costing a D1 query and hub RPCs each. Neither names an agent: /health
// gives counts, the score and pools; agents are for admins (GET /agents, /performance/report).
import { Hono } from "hono";
import type { HealthResponse, ReadyResponse } from "../../schema/api.ts";
import type { HubSnapshot } from "../../schema/hub.ts";
import type { PoolMonitoring } from "../../schema/monitoring.ts";
import { readConfig } from "../config.ts";
import { askPools, observePools, type PoolObservation } from "../inference/hub-client.ts";
import { describeError, log } from "../log.ts";
import { healthScore } from "../monitoring/health-score.ts";
import type { AppEnv } from "../types.ts";

const NO_STORE = { "Cache-Control": "no-store" };
/** A hub slower than this to report counts as not answering: a probe must not hang. */
const HUB_PROBE_TIMEOUT_MS = 5_000;
/** The health score reads the last 5 minutes only: the hub sends no other window. */
const HEALTH_WINDOWS = ["5m" as const];

export const healthRoutes = new Hono<AppEnv>()
  .get("/health", async (c) => {
    const { d1, pools, monitoring } = await observeFleet(c.env);
    const thresholds = readConfig(c.env).alertThresholds;
    const answered = monitoring.flatMap((m) => (m.answer === null ? [] : [m.answer]));
    const silent = monitoring.flatMap((m) => (m.answer === null ? [m.pool] : []));
    const byPool = new Map(answered.map((m) => [m.pool, m]));
    const body = {
      status: d1 === "ok" && pools.every((p) => p.snapshot !== null) ? "ok" : "degraded",
      version: readConfig(c.env).version,
      d1,
      agentsConnected: pools.reduce((n, p) => n + (p.snapshot?.agents.filter((a) => a.ready).length ?? 0), 0),
      healthScore: healthScore(answered, thresholds, silent).score,
      pools: pools.map((p) => {
        const own = byPool.get(p.pool.name);
        return {
          pool: p.pool.name,
          reachable: p.snapshot !== null,
          healthScore: own === undefined ? null : healthScore([own], thresholds).score,
          models: p.snapshot === null ? [] : modelsServed(p.snapshot),
        };
      }),
    } satisfies HealthResponse;
    return c.json(body, 200, NO_STORE);
  })
  .get("/ready", async (c) => {
    const { d1, pools } = await observeFleet(c.env);
    const perPool = pools.map((p) => ({
      pool: p.pool.name,
      reachable: p.snapshot !== null,
      models: p.snapshot?.models.map((m) => m.id) ?? [],
    }));
    const models = [...new Set(perPool.flatMap((p) => p.models))].sort();
    const reason =
      d1 !== "ok"
        ? "D1 is not answering"
        : perPool.every((p) => !p.reachable)
          ? "no agent pool is answering"
          : models.length === 0
            ? "no connected agent serves a model"
            : undefined;
    const body = { ready: reason === undefined, reason, d1, models, pools: perPool } satisfies ReadyResponse;
    return c.json(body, reason === undefined ? 200 : 503, NO_STORE);
  });

interface FleetObservation {
  d1: "ok" | "error";
  pools: PoolObservation[];
  /** Each pool's monitoring() (the health score's numbers); null when its hub did not give them. */
  monitoring: { pool: string; answer: PoolMonitoring | null }[];
}

/** The models a pool's ready, not draining agents serve (as its snapshot lists them), with how many. */
function modelsServed(snapshot: HubSnapshot): { id: string; agents: number }[] {
  const serving = snapshot.agents.filter((a) => a.ready && !a.draining);
  return snapshot.models.map(({ id }) => ({
    id,
    agents: serving.filter((a) => a.models.some((m) => m.name === id)).length,
  }));
}

/**
 * The last observation of D1 and the hubs, and when it was taken. A per-isolate cache of
 * observations, not state (STYLE.md keeps state out of Workers): each isolate looks for itself, an
 * answer is at most HEALTH_CACHE_MS old, and nothing is decided from it but a probe's reply — the
 * same exception as the verified-token cache. Single flight: while one observation is under way,
 * every probe waits for it, so a burst costs one D1 query and one RPC per pool per isolate.
 */
let lastObservation: { startedAt: number; settled: boolean; value: Promise<FleetObservation> } | undefined;

function observeFleet(env: Env): Promise<FleetObservation> {
  const ttlMs = readConfig(env).healthCacheMs;
  if (ttlMs === 0) return takeObservation(env);
  const now = Date.now();
  const last = lastObservation;
  if (last !== undefined && (!last.settled || now - last.startedAt < ttlMs)) return last.value;
  const entry = { startedAt: now, settled: false, value: takeObservation(env) };
  void entry.value.then(() => {
    entry.settled = true;
  });
  lastObservation = entry;
  return entry.value;
}

/** Never rejects: a failing dependency is part of what is observed. */
async function takeObservation(env: Env): Promise<FleetObservation> {
  const [d1, pools, monitoring] = await Promise.all([
    checkD1(env),
    observePools(env, { timeoutMs: HUB_PROBE_TIMEOUT_MS }),
    askPools(env, (hub) => hub.monitoring(HEALTH_WINDOWS), { timeoutMs: HUB_PROBE_TIMEOUT_MS }),
  ]);
  return { d1, pools, monitoring: monitoring.map(({ pool, answer }) => ({ pool: pool.name, answer })) };
}

async function checkD1(env: Env): Promise<"ok" | "error"> {
  try {
    await env.DB.prepare("SELECT 1").first();
    return "ok";
  } catch (err) {
    log("error", "D1 health check failed", describeError(err));
    return "error";
  }
}
