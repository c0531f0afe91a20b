// What a rollout's controller and routes read from the hubs: per-arm statistics (merged over every
// pool), where each arm is loaded, and feedback on a request (whichever pool served it).
import { readConfig } from "../config.ts";
import { ArmStats } from "../experiments/stats/arm-stats.ts";
import { poolHub } from "../inference/hub-client.ts";
import { describeError, log } from "../log.ts";

/** AgentHub.rolloutStats(id) (gateway/hub/agent-hub.ts), as it crosses RPC. */
export interface HubRolloutStats {
  phases: Record<string, { a: unknown; b: unknown }>;
  unavailable: number;
  assigned: { a: number; b: number };
}

export type FeedbackAnswer =
  | { status: "recorded"; rollout: { id: string; arm: string } | null }
  | { status: "not_found" }
  | { status: "forbidden" }
  | { status: "duplicate" };

/** The RPC methods rollouts call on AgentHub. */
interface RolloutHub {
  rolloutStats(id: string): Promise<HubRolloutStats>;
  recordFeedback(requestId: string, caller: string, score: number): Promise<FeedbackAnswer>;
}

const rolloutHub = (env: Env, pool: string) => poolHub(env, pool) as unknown as RolloutHub;
const pools = (env: Env) => [...readConfig(env).pools.byName.keys()];

export interface MergedStats {
  /** phase -> arm -> stats over every pool that answered. */
  phases: Map<number, { a: ArmStats; b: ArmStats }>;
  unavailable: number;
  /** Pools whose hub did not answer (their share of traffic is missing from the figures). */
  missingPools: string[];
}

/** A rollout's statistics from every pool, merged. A pool that does not answer is named, not fatal. */
export async function rolloutStats(env: Env, id: string): Promise<MergedStats> {
  const merged: MergedStats = { phases: new Map(), unavailable: 0, missingPools: [] };
  const answers = await Promise.all(
    pools(env).map(async (pool) => {
      try {
        return { pool, stats: await rolloutHub(env, pool).rolloutStats(id) };
      } catch (err) {
        log("warn", "rollout stats: the pool did not answer", { pool, rollout: id, ...describeError(err) });
        return { pool, stats: null };
      }
    }),
  );
  for (const { pool, stats } of answers) {
    if (stats === null) {
      merged.missingPools.push(pool);
      continue;
    }
    merged.unavailable += stats.unavailable;
    for (const [phase, arms] of Object.entries(stats.phases)) {
      const key = Number(phase);
      const into = merged.phases.get(key) ?? { a: ArmStats.empty(), b: ArmStats.empty() };
      try {
        into.a.merge(ArmStats.fromJSON(arms.a));
        into.b.merge(ArmStats.fromJSON(arms.b));
      } catch (err) {
        log("error", "rollout stats: a pool sent unreadable statistics", {
          pool,
          rollout: id,
          ...describeError(err),
        });
        continue;
      }
      merged.phases.set(key, into);
    }
  }
  return merged;
}

/** The stats of one phase (empty arms when no pool has any yet). */
export function phaseStats(merged: MergedStats, phase: number): { a: ArmStats; b: ArmStats } {
  return merged.phases.get(phase) ?? { a: ArmStats.empty(), b: ArmStats.empty() };
}

/**
 * Feedback goes to the pool that served the request; the Worker does not know which, so it asks
 * each (a handful at most) until one knows the request.
 */
export async function recordFeedback(
  env: Env,
  requestId: string,
  caller: string,
  score: number,
): Promise<FeedbackAnswer> {
  let answer: FeedbackAnswer = { status: "not_found" };
  for (const pool of pools(env)) {
    try {
      answer = await rolloutHub(env, pool).recordFeedback(requestId, caller, score);
    } catch (err) {
      log("warn", "feedback: the pool did not answer", { pool, ...describeError(err) });
      continue;
    }
    if (answer.status !== "not_found") return answer;
  }
  return answer;
}
