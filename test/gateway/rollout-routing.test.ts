// Rollouts in the hub's pure parts: routeModel splitting a bare name between two arms by end user
// (sticky, monotone in the share, pinned ids and aliases never split, the b arm another model),
// the rolling deployment's drained agents, placement of a rollout's candidate (its placement,
// rolling assignments, warmPrevious), per-arm statistics by phase, and the recent-request memory
// that feedback checks against (ownership, duplicates, bounds, persistence in chunks).
import { describe, expect, it } from "vitest";
import { ArmStats } from "../../gateway/experiments/stats/arm-stats.ts";
import {
  desiredPlacement,
  type ObservedAgent,
  type PlacementAction,
  type PlacementObservation,
  placementShort,
  planPlacement,
} from "../../gateway/hub/placement.ts";
import { CHUNK_SIZE, RecentRequests } from "../../gateway/hub/recent-requests.ts";
import { RolloutStats, type StoredRolloutStats } from "../../gateway/hub/rollout-stats.ts";
import { rollingDrained, rolloutIds, routeModel } from "../../gateway/hub/routing-table.ts";
import type { RoutedVersion, RoutingTable } from "../../schema/registry.ts";
import { assignArm, type RolloutRoute } from "../../schema/rollouts.ts";

const GB = 1024 ** 3;

function version(name: string, v: string, fields: Partial<RoutedVersion> = {}): RoutedVersion {
  return {
    version: v,
    status: "registered",
    servedAs: `${name}:${v}`,
    source: { kind: "artifact", format: "gguf" },
    sha256: "a".repeat(64),
    size: GB,
    parameters: {},
    placement: null,
    ...fields,
  };
}

function rollout(fields: Partial<RolloutRoute> = {}): RolloutRoute {
  return {
    id: "dep-1",
    kind: "canary",
    phase: 2,
    arms: { a: { name: "m", version: "1.0.0" }, b: { name: "m", version: "2.0.0" } },
    share: 0.3,
    labels: { a: "baseline", b: "canary" },
    placement: null,
    ...fields,
  };
}

/** `m` with 1.0.0 active (1 replica), 0.9.0 previous, 2.0.0 the candidate; `other` for A/B tests. */
function table(route: RolloutRoute | null, fields: { warmPrevious?: boolean } = {}): RoutingTable {
  return {
    revision: 1,
    builtAt: 0,
    preparing: {},
    models: {
      m: {
        name: "m",
        active: "1.0.0",
        previous: "0.9.0",
        aliases: { stable: "1.0.0", next: "2.0.0" },
        warmPrevious: fields.warmPrevious ?? true,
        rollout: route,
        versions: {
          "0.9.0": version("m", "0.9.0", { status: "deprecated" }),
          "1.0.0": version("m", "1.0.0", { status: "active", placement: { replicas: 1 } }),
          "2.0.0": version("m", "2.0.0", { placement: { replicas: 3 } }),
          "3.0.0": version("m", "3.0.0", { status: "archived" }),
        },
      },
      other: {
        name: "other",
        active: "5.0.0",
        previous: null,
        aliases: {},
        warmPrevious: true,
        rollout: null,
        versions: { "5.0.0": version("other", "5.0.0", { status: "active" }) },
      },
    },
  };
}

const subjects = Array.from({ length: 2000 }, (_, i) => `user-${i}`);
const served = (t: RoutingTable, requested: string, subject: string) => {
  const route = routeModel(t, requested, subject);
  return route.kind === "routed" ? route : null;
};

describe("routeModel with a rollout", () => {
  it("assigns a bare name's end users to arm a or b by the rollout's hash, and says which", () => {
    const t = table(rollout());
    const route = served(t, "m", "alice");
    const arm = assignArm("dep-1", "alice", 0.3);
    expect(route).toEqual({
      kind: "routed",
      servedAs: arm === "b" ? "m:2.0.0" : "m:1.0.0",
      deprecated: false,
      rollout: {
        id: "dep-1",
        phase: 2,
        arm,
        label: arm === "b" ? "canary" : "baseline",
        other:
          arm === "b"
            ? { arm: "a", label: "baseline", servedAs: "m:1.0.0" }
            : { arm: "b", label: "canary", servedAs: "m:2.0.0" },
      },
    });
  });

  it("is sticky: the same end user gets the same arm every time, and the split matches the share", () => {
    const t = table(rollout());
    let b = 0;
    for (const subject of subjects) {
      const first = served(t, "m", subject);
      expect(served(t, "m", subject)).toEqual(first);
      if (first?.rollout?.arm === "b") b += 1;
      expect(first?.servedAs).toBe(first?.rollout?.arm === "b" ? "m:2.0.0" : "m:1.0.0");
    }
    // Binomial(2000, 0.3): sd ~ 20.5; 4 sd either side.
    expect(Math.abs(b - 600)).toBeLessThan(82);
  });

  it("raising the share only moves end users from a to b", () => {
    const shares = [0, 0.05, 0.25, 0.5, 1];
    for (const subject of subjects) {
      const arms = shares.map((share) => served(table(rollout({ share })), "m", subject)?.rollout?.arm);
      const firstB = arms.indexOf("b");
      if (firstB >= 0) expect(arms.slice(firstB).every((arm) => arm === "b")).toBe(true);
      expect(arms[0]).toBe("a");
      expect(arms[shares.length - 1]).toBe("b");
    }
  });

  it("never splits a pinned version or an alias, and ignores a rollout whose arm is missing or archived", () => {
    const t = table(rollout({ share: 1 }));
    expect(served(t, "m:1.0.0", "alice")).toMatchObject({ servedAs: "m:1.0.0", rollout: null });
    expect(served(t, "m@stable", "alice")).toMatchObject({ servedAs: "m:1.0.0", rollout: null });
    expect(served(t, "m@next", "alice")).toMatchObject({ servedAs: "m:2.0.0", rollout: null });
    for (const b of [
      { name: "m", version: "3.0.0" },
      { name: "m", version: "9.9.9" },
      { name: "nope", version: "1.0.0" },
    ]) {
      const broken = table(rollout({ share: 1, arms: { a: { name: "m", version: "1.0.0" }, b } }));
      expect(served(broken, "m", "alice")).toEqual({
        kind: "routed",
        servedAs: "m:1.0.0",
        deprecated: false,
        rollout: null,
      });
    }
  });

  it("serves another model's version as arm b (an A/B test), under the test's labels", () => {
    const t = table(
      rollout({
        id: "ab-1",
        kind: "ab_test",
        phase: 0,
        share: 1,
        arms: { a: { name: "m", version: "1.0.0" }, b: { name: "other", version: "5.0.0" } },
        labels: { a: "a", b: "b" },
      }),
    );
    expect(served(t, "m", "bob")).toMatchObject({
      servedAs: "other:5.0.0",
      rollout: { id: "ab-1", phase: 0, arm: "b", label: "b", other: { arm: "a", servedAs: "m:1.0.0" } },
    });
    // The other model's own name is not split.
    expect(served(t, "other", "bob")).toMatchObject({ servedAs: "other:5.0.0", rollout: null });
    expect(rolloutIds(t)).toEqual(new Set(["ab-1"]));
  });

  it("routes a table stored before rollouts existed (no rollout field) as before", () => {
    const t = table(null);
    delete (t.models.m as { rollout?: unknown }).rollout;
    expect(served(t, "m", "alice")).toMatchObject({ servedAs: "m:1.0.0", rollout: null });
    expect(rolloutIds(t)).toEqual(new Set());
    expect(rollingDrained(t)).toEqual(new Map());
  });

  it("a rolling deployment drains arm a from the agents listed b (not from both, nor unlisted)", () => {
    const t = table(rollout({ kind: "rolling", agents: { x: "b", y: "both", z: "a" } }));
    expect(rollingDrained(t)).toEqual(new Map([["m:1.0.0", new Set(["x"])]]));
  });
});

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

function observe(agents: ObservedAgent[]): PlacementObservation {
  return { pool: "default", now: 1_000_000, agents, pending: new Map(), failures: new Map() };
}

const summary = (actions: PlacementAction[]) =>
  actions
    .map((a) =>
      a.kind === "load" ? `load ${a.agentId} ${a.version.servedAs}` : `unload ${a.agentId} ${a.servedAs}`,
    )
    .sort();

describe("placement during a rollout", () => {
  const holdingActive = () => [
    agent("p", { loaded: new Set(["m:1.0.0", "m:0.9.0"]) }),
    agent("q"),
    agent("r"),
  ];

  it("loads arm b with the rollout's placement, else the version's own, else 1 replica", () => {
    expect(
      summary(planPlacement(table(rollout({ placement: { replicas: 2 } })), observe(holdingActive()))),
    ).toEqual(["load p m:2.0.0", "load q m:2.0.0"]);
    // The version's own placement: 3 replicas.
    expect(summary(planPlacement(table(rollout()), observe(holdingActive())))).toEqual([
      "load p m:2.0.0",
      "load q m:2.0.0",
      "load r m:2.0.0",
    ]);
    const unplaced = table(rollout());
    const candidate = unplaced.models.m?.versions["2.0.0"];
    if (candidate) candidate.placement = null;
    expect(planPlacement(unplaced, observe(holdingActive())).filter((a) => a.kind === "load")).toHaveLength(
      1,
    );
    // Another pool's placement: nothing here.
    expect(
      planPlacement(
        table(rollout({ placement: { replicas: 2, pools: ["lab-a"] } })),
        observe(holdingActive()),
      ),
    ).toEqual([]);
  });

  it("loads an A/B test's b arm of another model, and keeps what it wants when it is loaded", () => {
    const ab = table(
      rollout({ arms: { a: { name: "m", version: "1.0.0" }, b: { name: "other", version: "5.0.0" } } }),
    );
    const agents = [agent("p", { loaded: new Set(["m:1.0.0", "m:0.9.0", "other:5.0.0"]) })];
    expect(planPlacement(ab, observe(agents))).toEqual([]);
    expect(summary(planPlacement(ab, observe([agent("p", { loaded: new Set(["m:1.0.0"]) })])))).toEqual([
      "load p other:5.0.0",
    ]);
  });

  it("warmPrevious false lets the previous version go once idle; true keeps it", () => {
    const agents = [agent("p", { loaded: new Set(["m:1.0.0", "m:0.9.0"]), busy: new Set(["m:0.9.0"]) })];
    expect(planPlacement(table(null, { warmPrevious: false }), observe(agents))).toEqual([]);
    agents[0] = agent("p", { loaded: new Set(["m:1.0.0", "m:0.9.0"]) });
    expect(summary(planPlacement(table(null, { warmPrevious: false }), observe(agents)))).toEqual([
      "unload p m:0.9.0",
    ]);
    expect(planPlacement(table(null), observe(agents))).toEqual([]);
  });

  it("rolling: arm b on exactly the agents listed b or both; arm a leaves the b ones once idle", () => {
    const rolling = table(
      rollout({ kind: "rolling", placement: { replicas: 5 }, agents: { p: "b", q: "both" } }),
    );
    const agents = [
      agent("p", { loaded: new Set(["m:1.0.0"]), busy: new Set(["m:1.0.0"]) }),
      agent("q", { loaded: new Set(["m:1.0.0"]) }),
      agent("r", { loaded: new Set(["m:1.0.0"]) }),
    ];
    // p still has arm a in flight: it keeps it for now.
    expect(summary(planPlacement(rolling, observe(agents)))).toEqual(["load p m:2.0.0", "load q m:2.0.0"]);
    agents[0] = agent("p", { loaded: new Set(["m:1.0.0"]) });
    expect(summary(planPlacement(rolling, observe(agents)))).toEqual([
      "load p m:2.0.0",
      "load q m:2.0.0",
      "unload p m:1.0.0",
    ]);
    // Done: b on p and q, a on q and r. Nothing more, and nothing short.
    const done = [
      agent("p", { loaded: new Set(["m:2.0.0"]) }),
      agent("q", { loaded: new Set(["m:1.0.0", "m:2.0.0"]) }),
      agent("r", { loaded: new Set(["m:1.0.0"]) }),
    ];
    expect(planPlacement(rolling, observe(done))).toEqual([]);
    expect(placementShort(desiredPlacement(rolling, "default"), done)).toBe(false);
    expect(desiredPlacement(rolling, "default").drained).toEqual(new Map([["m:1.0.0", new Set(["p"])]]));
  });

  it("rolling: memory checks as usual, and the agent short of room keeps placement looking", () => {
    const rolling = table(rollout({ kind: "rolling", agents: { p: "b" } }));
    const agents = [agent("p", { memoryFreeBytes: GB }), agent("q", { loaded: new Set(["m:1.0.0"]) })];
    expect(planPlacement(rolling, observe(agents))).toEqual([]);
    expect(placementShort(desiredPlacement(rolling, "default"), agents)).toBe(true);
    // The active version's one replica is held by q; the drained p does not count, and is not asked.
    const drainedOnly = [agent("p", { loaded: new Set(["m:1.0.0", "m:2.0.0"]) })];
    expect(summary(planPlacement(rolling, observe(drainedOnly)))).toEqual(["unload p m:1.0.0"]);
  });
});

const observation = (ok: boolean, subjectHash = 1) => ({
  subjectHash,
  ok,
  latencyMs: 100,
  ttftMs: 10,
  tokensPerSecond: 50,
});

describe("RolloutStats", () => {
  it("counts per rollout, phase and arm; a restore adds what storage held; takeDirty hands changes once", () => {
    const stats = new RolloutStats();
    stats.assigned("d", 1, "a", true);
    stats.assigned("d", 1, "b", true);
    stats.assigned("d", 2, "b", false);
    stats.record("d", 1, "a", observation(true));
    stats.record("d", 1, "b", observation(false));
    expect(stats.feedback("d", 1, "b", 1)).toBe(true);
    expect(stats.feedback("gone", 1, "b", 1)).toBe(false);
    const report = stats.report("d");
    expect(report).toMatchObject({ unavailable: 1, assigned: { a: 1, b: 2 } });
    expect(Object.keys(report.phases)).toEqual(["1", "2"]);
    expect(report.phases["1"]?.assigned).toEqual({ a: 1, b: 1 });
    const b = ArmStats.fromJSON(report.phases["1"]?.b);
    expect({ requests: b.requests, errors: b.errors, feedback: b.feedbackCount }).toEqual({
      requests: 1,
      errors: 1,
      feedback: 1,
    });
    expect(stats.report("unknown")).toEqual({ phases: {}, unavailable: 0, assigned: { a: 0, b: 0 } });

    const stored = stats.takeDirty();
    expect([...stored.keys()]).toEqual(["d"]);
    expect(stats.takeDirty().size).toBe(0);
    const woken = new RolloutStats();
    woken.record("d", 1, "a", observation(true));
    const held = stored.get("d") as StoredRolloutStats;
    woken.restore("d", held);
    expect(ArmStats.fromJSON(woken.report("d").phases["1"]?.a).requests).toBe(2);
    expect(woken.report("d").assigned).toEqual({ a: 1, b: 2 });
    const malformed = { ...held, phases: { 1: { a: {}, b: {} } } } as unknown as StoredRolloutStats;
    expect(() => woken.restore("x", malformed)).toThrow(/malformed/);
  });

  it("drops a rollout's statistics an hour after it left the routing table, not before", () => {
    const stats = new RolloutStats();
    stats.record("d", 0, "a", observation(true));
    const hour = 3_600_000;
    expect(stats.prune(new Set(["d"]), 0, hour)).toEqual([]);
    expect(stats.nextDrop(hour)).toBeNull();
    expect(stats.prune(new Set(), 1_000, hour)).toEqual([]);
    expect(stats.nextDrop(hour)).toBe(1_000 + hour);
    expect(stats.prune(new Set(), 1_000 + hour - 1, hour)).toEqual([]);
    expect(stats.prune(new Set(), 1_000 + hour, hour)).toEqual(["d"]);
    expect(stats.report("d").phases).toEqual({});
  });
});

describe("RecentRequests", () => {
  const arm = { id: "d", phase: 1, arm: "b" as const };

  it("lets only the caller give feedback, once; forgets unknown and expired requests", () => {
    const recent = new RecentRequests(10, 1_000);
    recent.remember("r1", { caller: "alice", rollout: arm, at: 0, feedback: false });
    recent.remember("r2", { caller: "alice", rollout: null, at: 0, feedback: false });
    expect(recent.feedback("r1", "mallory", 10)).toEqual({ status: "forbidden" });
    expect(recent.feedback("r1", "alice", 10)).toMatchObject({ status: "ok", request: { rollout: arm } });
    expect(recent.feedback("r1", "alice", 20)).toEqual({ status: "duplicate" });
    expect(recent.feedback("r2", "alice", 20)).toMatchObject({ status: "ok", request: { rollout: null } });
    expect(recent.feedback("nope", "alice", 20)).toEqual({ status: "not_found" });
    recent.remember("r3", { caller: "alice", rollout: null, at: 0, feedback: false });
    expect(recent.feedback("r3", "alice", 1_001)).toEqual({ status: "not_found" });
    recent.expire(1_001);
    expect(recent.size).toBe(0);
  });

  it("keeps the newest `max` requests", () => {
    const recent = new RecentRequests(3);
    for (let i = 0; i < 5; i++)
      recent.remember(`r${i}`, { caller: "c", rollout: arm, at: i, feedback: false });
    expect(recent.size).toBe(3);
    expect(recent.feedback("r1", "c", 5)).toEqual({ status: "not_found" });
    expect(recent.feedback("r4", "c", 5).status).toBe("ok");
  });

  it("persists the rollout's requests in chunks, rewriting only changed ones, and restores them", () => {
    const recent = new RecentRequests(CHUNK_SIZE * 3, 10_000);
    for (let i = 0; i < CHUNK_SIZE + 10; i++) {
      recent.remember(`r${i}`, { caller: "c", rollout: arm, at: 100, feedback: false });
      recent.remember(`plain${i}`, { caller: "c", rollout: null, at: 100, feedback: false });
    }
    const first = recent.takeWrites();
    expect(Object.keys(first.puts)).toHaveLength(2);
    expect(Object.values(first.puts).map((chunk) => chunk.length)).toEqual([CHUNK_SIZE, 10]);
    expect(recent.takeWrites()).toEqual({ puts: {}, deletes: [] });
    expect(recent.feedback("r3", "c", 200).status).toBe("ok");
    const second = recent.takeWrites();
    expect(Object.keys(second.puts)).toEqual([Object.keys(first.puts)[0]]);

    const storage = new Map(Object.entries({ ...first.puts, ...second.puts }));
    const woken = new RecentRequests(CHUNK_SIZE * 3, 10_000);
    woken.remember("new", { caller: "c", rollout: arm, at: 300, feedback: false });
    woken.restore(
      [...storage].sort(([a], [b]) => (a < b ? -1 : 1)),
      300,
    );
    expect(woken.size).toBe(CHUNK_SIZE + 11);
    expect(woken.feedback("r3", "c", 300)).toEqual({ status: "duplicate" });
    expect(woken.feedback("r4", "other", 300)).toEqual({ status: "forbidden" });
    expect(woken.feedback("plain4", "c", 300)).toEqual({ status: "not_found" });
    // The request of this wake went to a new chunk after the stored ones.
    expect(Object.keys(woken.takeWrites().puts)).toEqual(["rollout-recent:0000000002"]);
    // Past the TTL, a chunk whose requests all expired is deleted.
    const late = new RecentRequests(CHUNK_SIZE * 3, 10_000);
    late.restore([...storage], 100_000);
    expect(late.size).toBe(0);
    expect(late.takeWrites().deletes.sort()).toEqual(Object.keys(first.puts).sort());
  });
});
