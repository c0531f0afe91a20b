// The placement reconciler as a pure function: what the routing table wants loaded in a pool against
// what its agents report, and the load/unload actions between them (replicas, pools, the artifacts
// capability, memory headroom, cached artifacts first, backoff after failures, idempotence, never
// unloading a model in use, never touching agent-local models).
import { describe, expect, it } from "vitest";
import {
  LOAD_RETRY_BASE_MS,
  LOAD_RETRY_MAX_MS,
  LOAD_TIMEOUT_MS,
  type LoadFailure,
  loadKey,
  type ObservedAgent,
  type PlacementAction,
  type PlacementObservation,
  planPlacement,
  retryDelayMs,
} from "../../gateway/hub/placement.ts";
import type { Placement, RoutedVersion, RoutingTable } from "../../schema/registry.ts";

const SHA_1 = "1".repeat(64);
const SHA_2 = "2".repeat(64);
const GB = 1024 ** 3;

function version(v: string, fields: Partial<RoutedVersion> = {}): RoutedVersion {
  return {
    version: v,
    status: "registered",
    servedAs: `m:${v}`,
    source: { kind: "artifact", format: "gguf" },
    sha256: v === "1.0.0" ? SHA_1 : SHA_2,
    size: GB,
    parameters: {},
    placement: null,
    ...fields,
  };
}

/** `m` with 2.0.0 active (placement as given) and 1.0.0 previous. */
function table(placement: Placement | null, extra: Partial<RoutingTable> = {}): RoutingTable {
  return {
    revision: 1,
    builtAt: 0,
    preparing: {},
    models: {
      m: {
        name: "m",
        active: "2.0.0",
        previous: "1.0.0",
        aliases: {},
        warmPrevious: true,
        rollout: null,
        versions: {
          "1.0.0": version("1.0.0"),
          "2.0.0": version("2.0.0", { status: "active", placement }),
          "3.0.0": version("3.0.0"),
          "0.0.0-local": version("0.0.0-local", { servedAs: "m", source: { kind: "agent-local" } }),
        },
      },
    },
    ...extra,
  };
}

function agent(id: string, fields: Partial<ObservedAgent> = {}): ObservedAgent {
  return {
    id,
    usable: true,
    artifacts: true,
    loaded: new Set(),
    busy: new Set(),
    memoryFreeBytes: 8 * GB,
    cached: new Set(),
    ...fields,
  };
}

function observe(agents: ObservedAgent[], fields: Partial<PlacementObservation> = {}): PlacementObservation {
  return { pool: "default", now: 1_000_000, agents, pending: new Map(), failures: new Map(), ...fields };
}

const summary = (actions: PlacementAction[]) =>
  actions.map((a) =>
    a.kind === "load" ? `load ${a.agentId} ${a.version.servedAs}` : `unload ${a.agentId} ${a.servedAs}`,
  );

describe("planPlacement", () => {
  it("loads the active version on as many agents as its replicas ask, the roomiest first", () => {
    const agents = [
      agent("a", { memoryFreeBytes: 2 * GB }),
      agent("b"),
      agent("c", { memoryFreeBytes: 4 * GB }),
    ];
    expect(summary(planPlacement(table({ replicas: 2 }), observe(agents)))).toEqual([
      "load b m:2.0.0",
      "load c m:2.0.0",
    ]);
    const [first] = planPlacement(table({ replicas: 1 }), observe(agents));
    expect(first).toMatchObject({
      kind: "load",
      modelId: "m:2.0.0",
      reason: "m:2.0.0 wants 1 replica(s), has 0",
    });
  });

  it("is idempotent: the loads it sent are pending in the next observation, and loaded ones count", () => {
    const wanted = table({ replicas: 2 });
    const agents = [agent("a"), agent("b"), agent("c")];
    const first = planPlacement(wanted, observe(agents));
    const pending = new Map(
      first.map((a) => [loadKey(a.agentId, a.kind === "load" ? a.version.servedAs : a.servedAs), 1_000_000]),
    );
    expect(planPlacement(wanted, observe(agents, { pending, now: 1_000_500 }))).toEqual([]);
    // One load answered (loaded), the other still pending: still nothing to do.
    agents[0] = agent("a", { loaded: new Set(["m:2.0.0"]) });
    expect(planPlacement(wanted, observe(agents, { pending, now: 1_001_000 }))).toEqual([]);
    // A load never answered within LOAD_TIMEOUT_MS no longer counts: another agent is asked.
    const late = planPlacement(wanted, observe(agents, { pending, now: 1_000_000 + LOAD_TIMEOUT_MS + 1 }));
    expect(late.filter((a) => a.kind === "load")).toHaveLength(1);
  });

  it("asks only agents that negotiated artifacts, are usable, and have 1.2x the weights free", () => {
    const agents = [
      agent("old", { artifacts: false }),
      agent("draining", { usable: false }),
      agent("small", { memoryFreeBytes: 1.1 * GB }),
      agent("unknown-memory", { memoryFreeBytes: null }),
      agent("fits", { memoryFreeBytes: 1.2 * GB }),
    ];
    expect(summary(planPlacement(table({ replicas: 5 }), observe(agents)))).toEqual([
      "load fits m:2.0.0",
      "load unknown-memory m:2.0.0",
    ]);
    // Without a known size, memory does not rule anyone out.
    const unsized = table({ replicas: 5 });
    const active = unsized.models.m?.versions["2.0.0"];
    if (active) active.size = null;
    expect(summary(planPlacement(unsized, observe(agents)))).toContain("load small m:2.0.0");
  });

  it("prefers an agent that already holds the artifact in its cache", () => {
    const agents = [agent("a", { memoryFreeBytes: 16 * GB }), agent("b", { cached: new Set([SHA_2]) })];
    expect(summary(planPlacement(table({ replicas: 1 }), observe(agents)))).toEqual(["load b m:2.0.0"]);
  });

  it("restricts placement to the listed pools", () => {
    const agents = [agent("a")];
    expect(planPlacement(table({ replicas: 1, pools: ["lab-a"] }), observe(agents))).toEqual([]);
    expect(
      summary(planPlacement(table({ replicas: 1, pools: ["lab-a", "default"] }), observe(agents))),
    ).toEqual(["load a m:2.0.0"]);
  });

  it("backs off a failed load on that agent (5 s doubling to 5 min) and asks another meanwhile", () => {
    expect([1, 2, 3, 4, 10, 100].map(retryDelayMs)).toEqual([
      LOAD_RETRY_BASE_MS,
      2 * LOAD_RETRY_BASE_MS,
      4 * LOAD_RETRY_BASE_MS,
      8 * LOAD_RETRY_BASE_MS,
      LOAD_RETRY_MAX_MS,
      LOAD_RETRY_MAX_MS,
    ]);
    const now = 1_000_000;
    const failure: LoadFailure = {
      count: 1,
      retryAt: now + 5_000,
      code: "ENGINE_LOAD",
      message: "no",
      at: now,
    };
    const failures = new Map([[loadKey("a", "m:2.0.0"), failure]]);
    const agents = [agent("a", { memoryFreeBytes: 16 * GB }), agent("b")];
    expect(summary(planPlacement(table({ replicas: 1 }), observe(agents, { failures, now })))).toEqual([
      "load b m:2.0.0",
    ]);
    expect(
      planPlacement(table({ replicas: 1 }), observe([agents[0] as ObservedAgent], { failures, now })),
    ).toEqual([]);
    expect(
      summary(
        planPlacement(
          table({ replicas: 1 }),
          observe([agents[0] as ObservedAgent], { failures, now: now + 5_000 }),
        ),
      ),
    ).toEqual(["load a m:2.0.0"]);
  });

  it("loads a version being prepared, and keeps the previous one warm", () => {
    const wanted = table({ replicas: 1 }, { preparing: { "m:3.0.0": { replicas: 1 } } });
    const agents = [
      agent("a", { loaded: new Set(["m:2.0.0", "m:1.0.0"]) }),
      agent("b", { loaded: new Set(["m:1.0.0"]) }),
    ];
    expect(summary(planPlacement(wanted, observe(agents)))).toEqual(["load a m:3.0.0"]);
  });

  it("unloads registry versions nobody wants, but never one in use, and never an agent-local model", () => {
    const wanted = table({ replicas: 1 });
    const m = wanted.models.m;
    if (m) m.previous = null;
    const agents = [
      agent("a", {
        loaded: new Set(["m:2.0.0", "m:1.0.0", "m:3.0.0", "m", "someone-else"]),
        busy: new Set(["m:3.0.0"]),
      }),
    ];
    expect(summary(planPlacement(wanted, observe(agents)))).toEqual(["unload a m:1.0.0"]);
    // In flight no more: now it goes too.
    agents[0] = { ...(agents[0] as ObservedAgent), busy: new Set() };
    expect(summary(planPlacement(wanted, observe(agents)))).toEqual(["unload a m:1.0.0", "unload a m:3.0.0"]);
  });

  it("never loads agent-local versions, archived ones, or an active version without placement", () => {
    const local = table(null);
    const m = local.models.m;
    if (m) {
      m.active = "0.0.0-local";
      const v = m.versions["0.0.0-local"];
      if (v) v.placement = { replicas: 3 };
      const archived = m.versions["3.0.0"];
      if (archived) archived.status = "archived";
    }
    local.preparing = { "m:3.0.0": { replicas: 1 } };
    const agents = [agent("a", { loaded: new Set(["m:1.0.0"]) })];
    expect(planPlacement(local, observe(agents))).toEqual([]);
    expect(planPlacement(table(null), observe([agent("b")]))).toEqual([]);
  });
});
