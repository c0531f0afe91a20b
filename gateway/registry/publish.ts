// The registry's side of the hubs: pushing the routing table to every pool's AgentHub after a change,
// and reading what each hub's agents hold loaded (the activation's readiness check).
import type { PlacementEntry, RoutingTable } from "../../schema/registry.ts";
import { readConfig } from "../config.ts";
import { poolHub } from "../inference/hub-client.ts";
import { describeError, log } from "../log.ts";
import { loadRoutingTable } from "./hub-store.ts";

export type { PlacementEntry };

/** The RPC methods the registry calls on AgentHub (gateway/hub/agent-hub.ts). */
interface RegistryHub {
  applyRoutingTable(table: RoutingTable): Promise<{ revision: number }>;
  placementStatus(): Promise<Record<string, PlacementEntry>>;
}

function registryHub(env: Env, pool: string): RegistryHub {
  // Typed through this interface, not AgentHub's class, so the registry states exactly what it needs.
  return poolHub(env, pool) as unknown as RegistryHub;
}

/** What a push reached: per pool, the revision the hub holds after it, or null when it did not answer. */
export type PublishResult = Record<string, number | null>;

/**
 * Builds the routing table from D1 and pushes it to every configured pool's hub in parallel. A hub
 * that does not answer is logged and reported null: D1 stays the truth, and a hub reloads the table
 * from D1 when it wakes, so a missed push delays that hub, it does not lose the change.
 */
export async function publishRoutingTable(env: Env): Promise<PublishResult> {
  const table = await loadRoutingTable(env.DB);
  const pools = [...readConfig(env).pools.byName.keys()];
  const answers = await Promise.all(
    pools.map(async (pool) => {
      try {
        const { revision } = await registryHub(env, pool).applyRoutingTable(table);
        return [pool, revision] as const;
      } catch (err) {
        log("warn", "routing table push: the pool did not answer", {
          pool,
          revision: table.revision,
          ...describeError(err),
        });
        return [pool, null] as const;
      }
    }),
  );
  return Object.fromEntries(answers);
}

/** Per pool, each hub's placement status; a pool whose hub did not answer is absent. */
export async function placementStatus(
  env: Env,
  pools?: readonly string[],
): Promise<Record<string, Record<string, PlacementEntry>>> {
  const names = pools ?? [...readConfig(env).pools.byName.keys()];
  const answers = await Promise.all(
    names.map(async (pool) => {
      try {
        return [[pool, await registryHub(env, pool).placementStatus()] as const];
      } catch (err) {
        log("warn", "placement status: the pool did not answer", { pool, ...describeError(err) });
        return [];
      }
    }),
  );
  return Object.fromEntries(answers.flat());
}

export interface ArmPlacement {
  loaded: string[];
  loading: string[];
  failed: PlacementEntry["failed"];
}

/** Where each served id is loaded, loading or failed, over `pools` (default every pool). */
export async function placementOf(
  env: Env,
  servedAs: readonly string[],
  pools?: readonly string[],
): Promise<Map<string, ArmPlacement>> {
  const byPool = await placementStatus(env, pools);
  const out = new Map<string, ArmPlacement>();
  for (const id of servedAs) {
    const loaded = new Set<string>();
    const loading = new Set<string>();
    const failed: PlacementEntry["failed"] = [];
    for (const status of Object.values(byPool)) {
      const entry = status[id];
      if (entry === undefined) continue;
      for (const agent of entry.loaded) loaded.add(agent);
      for (const agent of entry.loading) loading.add(agent);
      failed.push(...entry.failed);
    }
    out.set(id, { loaded: [...loaded].sort(), loading: [...loading].sort(), failed });
  }
  return out;
}
