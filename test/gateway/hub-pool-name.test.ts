// An AgentHub woken by its alarm (or an agent socket's message) after a restart has no name in its
// id (measured in workerd for the RolloutController, same pattern): it keeps its pool's name in
// storage and reads it back on such a wake. A wake is a new AgentHub constructed over the same
// state; here that state's id is made nameless, as such a wake's is.
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { LiveMetrics } from "../../gateway/hub/live-metrics.ts";
import { AgentHub } from "../../gateway/index.ts";
import type { RoutingTable } from "../../schema/registry.ts";

const POOL_NAME_KEY = "pool";

/**
 * Runs `work` while `state` looks as a wake without a name sees it: its id has no name. Own
 * properties over the runtime's (the DurableObject base class takes only the real state object),
 * removed afterwards. `restored()` settles when the blockConcurrencyWhile started last meanwhile
 * (a new AgentHub's restore) has.
 */
async function asNamelessWake<T>(
  state: DurableObjectState,
  work: (restored: () => Promise<void>) => Promise<T>,
): Promise<T> {
  const realId = state.id;
  const realBlock = state.blockConcurrencyWhile;
  let restore: Promise<unknown> = Promise.resolve();
  const id = new Proxy(realId, {
    get(target, prop) {
      if (prop === "name") return undefined;
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  Object.defineProperty(state, "id", { value: id, configurable: true });
  Object.defineProperty(state, "blockConcurrencyWhile", {
    configurable: true,
    value: <R>(block: () => Promise<R>): Promise<R> => {
      const done = realBlock.call(state, block) as Promise<R>;
      restore = done;
      return done;
    },
  });
  try {
    return await work(async () => void (await restore));
  } finally {
    Reflect.deleteProperty(state, "id");
    Reflect.deleteProperty(state, "blockConcurrencyWhile");
  }
}

/** A table wanting `modelId` (name:1, active) loaded once, in `pools` only. */
function tableWanting(name: string, pools: string[]): RoutingTable {
  return {
    revision: Number.MAX_SAFE_INTEGER,
    builtAt: Date.now(),
    preparing: {},
    models: {
      [name]: {
        name,
        active: "1",
        previous: null,
        aliases: {},
        warmPrevious: true,
        rollout: null,
        versions: {
          "1": {
            version: "1",
            status: "active",
            servedAs: `${name}:1`,
            source: { kind: "path", path: "/models/x.gguf" },
            sha256: null,
            size: null,
            parameters: {},
            placement: { replicas: 1, pools },
          },
        },
      },
    },
  };
}

describe("hub pool name", () => {
  it("a hub called by name keeps its pool's name; a wake without a name reads it back", async () => {
    const stub = env.AGENT_HUB.getByName("lab-a");
    expect((await stub.snapshot()).pool).toBe("lab-a");
    const woken = await runInDurableObject(stub, async (_instance: AgentHub, state) => {
      const stored = await state.storage.get(POOL_NAME_KEY);
      return asNamelessWake(state, async (restored) => {
        expect(state.id.name).toBeUndefined();
        const fresh = new AgentHub(state, env);
        await restored();
        return { stored, pool: fresh.snapshot().pool };
      });
    });
    expect(woken).toEqual({ stored: "lab-a", pool: "lab-a" });
  });

  it("placement on such a wake is the stored pool's, not the default's", async () => {
    // An object that was never called by name: its own instance has no name, like an alarm's wake.
    const stub = env.AGENT_HUB.get(env.AGENT_HUB.newUniqueId());
    const status = await runInDurableObject(stub, async (instance: AgentHub, state) => {
      expect(state.id.name).toBeUndefined();
      const before = instance.snapshot().pool;
      await state.storage.put(POOL_NAME_KEY, "lab-a");
      const fresh = await asNamelessWake(state, async (restored) => {
        const hub = new AgentHub(state, env);
        await restored();
        return hub;
      });
      fresh.applyRoutingTable(tableWanting("pool-name-a", ["lab-a"]));
      const onlyA = Object.keys(fresh.placementStatus());
      fresh.applyRoutingTable({ ...tableWanting("pool-name-d", ["default"]), builtAt: Date.now() + 1 });
      const onlyDefault = Object.keys(fresh.placementStatus());
      return { before, after: fresh.snapshot().pool, onlyA, onlyDefault };
    });
    expect(status).toEqual({ before: "default", after: "lab-a", onlyA: ["pool-name-a:1"], onlyDefault: [] });
  });

  it("a brand-new hub without a name serves as the default pool and stores no guess", async () => {
    const stub = env.AGENT_HUB.get(env.AGENT_HUB.newUniqueId());
    expect((await stub.snapshot()).pool).toBe("default");
    const stored = await runInDurableObject(stub, (_instance: AgentHub, state) =>
      state.storage.get(POOL_NAME_KEY),
    );
    expect(stored).toBeUndefined();
  });

  it("live metrics name the pool as it is when a window closes, not when they were made", () => {
    let pool = "default";
    const live = new LiveMetrics(() => pool, 1_000, 0);
    live.record({ modelId: "m:1", ok: true, latencyMs: 5, ttftMs: 1, completionTokens: 1, generationMs: 4 });
    pool = "lab-a"; // the wake's restore read the stored name
    expect(live.take(1_000).map((w) => w.pool)).toEqual(["lab-a"]);
  });
});
