// The rolling state machine against a simulated fleet: agents drain a and load b ("b") or load b
// beside a ("both"), as the published route says. After every step: arm a never has zero agents
// while the share is below 1, the share never falls while the rollout progresses, and the step is
// idempotent. maxUnavailable / maxSurge variants, failures (load, health, timeout), commands.
import { describe, expect, it } from "vitest";
import type { AgentAssignment, RouteFields } from "../../gateway/deployments/machine.ts";
import { Driver, kinds, MINUTE, makeSpec, type PartialObservation, SECOND } from "./deployment-harness.ts";

interface SimAgent {
  holdsA: boolean;
  holdsB: boolean;
  healthy: boolean;
  /** Ticks until b is loaded once asked for; null: not loading. */
  loadIn: number | null;
  /** This agent's b load fails. */
  failsLoad?: boolean;
}

/** Agents that follow the route: "b" drains a at once and loads b; "both" loads b and keeps a. */
class Fleet {
  readonly agents = new Map<string, SimAgent>();
  failed: { agentId: string; code: string; message: string }[] = [];

  constructor(
    ids: string[],
    readonly loadTicks = 1,
  ) {
    for (const id of ids) this.agents.set(id, { holdsA: true, holdsB: false, healthy: true, loadIn: null });
  }

  /** Applies the route as the hub would: drains happen at once, loads take `loadTicks` ticks. */
  apply(route: RouteFields | null): void {
    for (const [id, agent] of this.agents) {
      const assignment: AgentAssignment = route?.agents?.[id] ?? "a";
      if (assignment === "b") agent.holdsA = false;
      if (assignment !== "a" && !agent.holdsB && agent.loadIn === null) agent.loadIn = this.loadTicks;
    }
  }

  /** One tick of loading. */
  progress(): void {
    for (const [id, agent] of this.agents) {
      if (agent.loadIn === null) continue;
      if (agent.loadIn > 0) {
        agent.loadIn--;
        continue;
      }
      agent.loadIn = null;
      if (agent.failsLoad) this.failed.push({ agentId: id, code: "ENGINE_ERROR", message: "bad weights" });
      else agent.holdsB = true;
    }
  }

  observation(): PartialObservation {
    const entries = [...this.agents];
    return {
      a: { loaded: entries.filter(([, a]) => a.holdsA).map(([id]) => id) },
      b: {
        loaded: entries.filter(([, a]) => a.holdsB).map(([id]) => id),
        loading: entries.filter(([, a]) => a.loadIn !== null).map(([id]) => id),
        failed: this.failed,
      },
      agents: entries.map(([id, a]) => ({
        id,
        holdsA: a.holdsA,
        holdsB: a.holdsB,
        busyA: false,
        healthy: a.healthy,
      })),
    };
  }
}

/** Agents serving arm a under the route (assigned a or both, holding a). */
function servingA(fleet: Fleet, route: RouteFields): number {
  return [...fleet.agents].filter(([id, agent]) => (route.agents?.[id] ?? "a") !== "b" && agent.holdsA)
    .length;
}

/** Starts a rolling deployment over `fleet` and drives it to its end. */
function run(d: Driver, fleet: Fleet): number[] {
  d.start(fleet.observation());
  return drive(d, fleet);
}

/** Drives a started deployment until it leaves the table; checks the invariants at every step. */
function drive(d: Driver, fleet: Fleet, maxTicks = 200): number[] {
  const shares: number[] = [];
  for (let i = 0; i < maxTicks && d.route() !== null; i++) {
    fleet.apply(d.route());
    const route = d.route();
    if (route) {
      if (route.share < 1) expect(servingA(fleet, route)).toBeGreaterThanOrEqual(1);
      expect(route.share).toBeGreaterThanOrEqual(shares.at(-1) ?? 0);
      shares.push(route.share);
    }
    fleet.progress();
    d.tick(5 * SECOND, fleet.observation());
  }
  return shares;
}

const batches = (d: Driver) =>
  d.eventsOf("batch_started").map((e) => ({ surge: e.detail.surge, unavailable: e.detail.unavailable }));

describe("rolling deployment", () => {
  it("converts agent by agent by default (maxUnavailable 1), the share following capacity, then switches", () => {
    const d = new Driver(makeSpec("rolling"));
    const fleet = new Fleet(["m1", "m2", "m3"]);
    const shares = run(d, fleet);
    expect(batches(d)).toEqual([
      { surge: [], unavailable: ["m1"] },
      { surge: [], unavailable: ["m2"] },
      { surge: [], unavailable: ["m3"] },
    ]);
    expect(new Set(shares)).toEqual(new Set([0, 1 / 3, 0.5, 2 / 3, 1]));
    expect(d.state.status).toBe("succeeded");
    expect(d.last.effects).toEqual([
      { kind: "activate_candidate", replicas: 3 },
      { kind: "cool_previous" },
      { kind: "end" },
    ]);
    expect(d.state.steps.map((s) => s.verdict)).toEqual(["pass", "pass", "pass"]);
    // Each agent held b loaded and healthy for the health check before the next batch.
    for (const converted of d.eventsOf("agent_converted")) {
      expect(converted.detail.checkedMs).toBeGreaterThanOrEqual(10_000);
    }
    expect([...fleet.agents.values()].every((agent) => agent.holdsB && !agent.holdsA)).toBe(true);
  });

  it("with maxSurge loads b beside a ('both'), then flips the agent to b once healthy", () => {
    const d = new Driver(makeSpec("rolling", { maxSurge: 1, maxUnavailable: 0 }));
    const fleet = new Fleet(["m1", "m2"]);
    d.start(fleet.observation());
    expect(d.route()?.agents).toEqual({ m1: "both" });
    expect(d.route()?.share).toBe(0);
    fleet.apply(d.route());
    fleet.progress();
    fleet.progress();
    d.tick(5 * SECOND, fleet.observation());
    // m1 holds both: it counts for each arm while b is health-checked.
    expect(d.route()).toMatchObject({ share: 1 / 3, agents: { m1: "both" } });
    expect(kinds(d.last.events)).toEqual(["agent_ready", "share_changed"]);
    d.tick(10 * SECOND, fleet.observation());
    expect(d.route()?.agents).toEqual({ m1: "b", m2: "both" });
    drive(d, fleet);
    expect(batches(d)).toEqual([
      { surge: ["m1"], unavailable: [] },
      { surge: ["m2"], unavailable: [] },
    ]);
    expect(d.state.status).toBe("succeeded");
  });

  it("with maxUnavailable 2 converts two at a time, and keeps one agent on a until b serves somewhere", () => {
    const wide = new Driver(makeSpec("rolling", { maxUnavailable: 2 }));
    run(wide, new Fleet(["m1", "m2", "m3", "m4", "m5"]));
    expect(batches(wide).map((b) => b.unavailable)).toEqual([["m1", "m2"], ["m3", "m4"], ["m5"]]);

    // maxUnavailable covers every agent: the first batch still leaves one on a.
    const all = new Driver(makeSpec("rolling", { maxUnavailable: 3 }));
    run(all, new Fleet(["m1", "m2", "m3"]));
    expect(batches(all).map((b) => b.unavailable)).toEqual([["m1", "m2"], ["m3"]]);
    expect(all.state.status).toBe("succeeded");
  });

  it("mixes surge and unavailable agents in one batch when both are allowed", () => {
    const d = new Driver(makeSpec("rolling", { maxUnavailable: 1, maxSurge: 1 }));
    run(d, new Fleet(["m1", "m2", "m3"]));
    expect(batches(d)).toEqual([
      { surge: ["m1"], unavailable: ["m2"] },
      { surge: ["m3"], unavailable: [] },
    ]);
    expect(d.state.status).toBe("succeeded");
  });

  it("surges a lone agent even with maxSurge 0, so a is never left with no agent", () => {
    const d = new Driver(makeSpec("rolling"));
    run(d, new Fleet(["m1"]));
    expect(d.eventsOf("batch_started")[0]?.detail).toMatchObject({
      surge: ["m1"],
      unavailable: [],
      forcedSurge: true,
    });
    expect(d.state.status).toBe("succeeded");
  });

  it("halts and rolls the changed agents back when a load fails", () => {
    const d = new Driver(makeSpec("rolling"));
    const fleet = new Fleet(["m1", "m2", "m3"]);
    const second = fleet.agents.get("m2");
    if (second) second.failsLoad = true;
    run(d, fleet);
    expect(d.state).toMatchObject({ status: "rolled_back", share: 0, agents: {} });
    expect(d.last.effects).toEqual([{ kind: "end" }]);
    expect(d.eventsOf("agent_failed")[0]?.detail).toMatchObject({
      agentId: "m2",
      cause: "load_failed",
      code: "ENGINE_ERROR",
    });
    expect(d.eventsOf("rolled_back")[0]?.detail).toMatchObject({ agents: ["m1", "m2"], share: 0 });
    expect(d.state.steps.map((s) => s.verdict)).toEqual(["pass", "fail"]);
    expect(kinds(d.effects)).not.toContain("activate_candidate");
    expect(d.route()).toBeNull();
  });

  it("rolls back when a changed agent turns unhealthy during its health check, or does not load in time", () => {
    const sick = new Driver(makeSpec("rolling"));
    const fleet = new Fleet(["m1", "m2"]);
    sick.start(fleet.observation());
    fleet.apply(sick.route());
    fleet.progress();
    fleet.progress();
    sick.tick(5 * SECOND, fleet.observation());
    expect(sick.state.rolling?.agents.m1?.stage).toBe("checking");
    const m1 = fleet.agents.get("m1");
    if (m1) m1.healthy = false;
    sick.tick(5 * SECOND, fleet.observation());
    expect(sick.state.status).toBe("rolled_back");
    expect(sick.eventsOf("agent_failed")[0]?.detail).toMatchObject({ agentId: "m1", cause: "unhealthy" });

    const slow = new Driver(makeSpec("rolling", { agentTimeoutMs: MINUTE }));
    const stuck = new Fleet(["m1", "m2"], 1_000);
    slow.start(stuck.observation());
    stuck.apply(slow.route());
    slow.tick(MINUTE - 1, stuck.observation());
    expect(slow.state.status).toBe("progressing");
    slow.tick(1, stuck.observation());
    expect(slow.state.status).toBe("rolled_back");
    expect(slow.eventsOf("agent_failed")[0]?.detail).toMatchObject({
      agentId: "m1",
      cause: "timeout",
      sinceMs: MINUTE,
    });
  });

  it("skips an agent that left before its turn, and switches with the agents it converted", () => {
    const d = new Driver(makeSpec("rolling"));
    const fleet = new Fleet(["m1", "m2", "m3"]);
    d.start(fleet.observation());
    fleet.agents.delete("m3");
    drive(d, fleet);
    expect(d.eventsOf("agent_skipped")[0]?.detail).toMatchObject({ agentId: "m3", cause: "disconnected" });
    expect(d.last.effects[0]).toEqual({ kind: "activate_candidate", replicas: 2 });
  });

  it("waits for the baseline's agents, then fails when none appears in time", () => {
    const d = new Driver(makeSpec("rolling", { agentTimeoutMs: MINUTE }));
    d.start({});
    expect(d.route()).toEqual({ share: 0, phase: 0, placementReplicas: 0, agents: {} });
    d.tick(30 * SECOND, { agents: [] });
    expect(d.state.status).toBe("preparing");
    d.tick(30 * SECOND, {});
    expect(d.state.status).toBe("failed");
  });

  it("pause lets the batch under way settle but starts no new one; resume restarts its clocks", () => {
    const d = new Driver(makeSpec("rolling", { agentTimeoutMs: MINUTE }));
    const fleet = new Fleet(["m1", "m2", "m3"]);
    d.start(fleet.observation());
    expect(d.command("promote")).toMatchObject({ ok: false, code: "COMMAND_NOT_ALLOWED" });
    expect(d.command("pause", "frank")).toMatchObject({ ok: true, effects: [] });
    // Paused: no timeout fires, no batch starts, whatever the clock says.
    d.tick(10 * MINUTE, fleet.observation());
    expect(d.state.status).toBe("paused");
    fleet.apply(d.route());
    fleet.progress();
    fleet.progress();
    d.tick(10 * MINUTE, fleet.observation());
    expect(d.state.rolling?.agents.m1?.stage).toBe("checking");
    expect(batches(d)).toHaveLength(1);
    d.command("resume");
    expect(d.state.status).toBe("progressing");
    d.tick(5 * SECOND, fleet.observation());
    expect(d.state.rolling?.agents.m1?.stage).toBe("checking");
    d.tick(5 * SECOND, fleet.observation());
    expect(d.state.rolling?.agents.m1?.stage).toBe("converted");
    expect(batches(d)).toHaveLength(2);
  });

  it("abort rolls the changed agents back and ends", () => {
    const d = new Driver(makeSpec("rolling"));
    const fleet = new Fleet(["m1", "m2"]);
    d.start(fleet.observation());
    expect(d.state.agents).toEqual({ m1: "b" });
    const aborted = d.command("abort", "grace");
    expect(aborted).toMatchObject({ ok: true, effects: [{ kind: "end" }] });
    expect(d.state).toMatchObject({ status: "aborted", share: 0, agents: {} });
    expect(d.eventsOf("rolled_back")[0]?.detail).toMatchObject({ agents: ["m1"] });
    expect(d.command("resume")).toMatchObject({ ok: false, code: "DEPLOYMENT_NOT_RUNNING" });
  });

  it("needs a baseline: without one it fails at the start", () => {
    const d = new Driver(makeSpec("rolling", {}, { baseline: null }));
    d.start({});
    expect(d.state.status).toBe("failed");
  });
});
