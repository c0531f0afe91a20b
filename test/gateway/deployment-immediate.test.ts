// The immediate strategy's state machine: load on the placement's agents at share 0, switch, end;
// failures and the timeout; commands; odd observations; option defaults and validation.
import { describe, expect, it } from "vitest";
import {
  advance,
  checkOptions,
  DEFAULT_OPTIONS,
  isTerminal,
  type Observation,
  routeOf,
  startDeployment,
} from "../../gateway/deployments/machine.ts";
import { Driver, kinds, MINUTE, makeSpec, SECOND, T0 } from "./deployment-harness.ts";

describe("immediate deployment", () => {
  it("enters the table at share 0, loads on as many agents as hold the baseline, then switches and ends", () => {
    const d = new Driver(makeSpec("immediate"));
    const started = d.start();
    expect(d.state.status).toBe("preparing");
    expect(kinds(started.effects)).toEqual(["publish"]);
    expect(kinds(started.events)).toEqual(["started"]);
    expect(d.route()).toEqual({ share: 0, phase: 0, placementReplicas: 1 });

    // Two agents hold the baseline: parity is 2, so the placement grows and is published.
    const first = d.tick(5 * SECOND, { a: { loaded: ["m1", "m2"] }, b: { loading: ["m1", "m2"] } });
    expect(kinds(first.effects)).toEqual(["publish"]);
    expect(d.route()).toEqual({ share: 0, phase: 0, placementReplicas: 2 });

    const half = d.tick(5 * SECOND, { a: { loaded: ["m1", "m2"] }, b: { loaded: ["m1"], loading: ["m2"] } });
    expect(half.effects).toEqual([]);
    expect(d.state.status).toBe("preparing");

    const done = d.tick(5 * SECOND, { a: { loaded: ["m1", "m2"] }, b: { loaded: ["m1", "m2"] } });
    expect(done.effects).toEqual([{ kind: "activate_candidate", replicas: 2 }, { kind: "end" }]);
    expect(kinds(done.events)).toEqual(["candidate_ready", "candidate_activated", "ended"]);
    expect(d.state).toMatchObject({ status: "succeeded", share: 1, endedAt: T0 + 15 * SECOND });
    expect(d.eventsOf("candidate_ready")[0]?.detail).toMatchObject({
      wanted: 2,
      loaded: ["m1", "m2"],
      elapsedMs: 15 * SECOND,
    });
    expect(d.route()).toBeNull();
    expect(isTerminal(d.state.status)).toBe(true);

    // Terminal: nothing more happens, whatever is observed.
    expect(d.tick(MINUTE, { b: { loaded: [] } }).effects).toEqual([]);
  });

  it("uses the replicas option over parity, and at least one agent when none holds the baseline", () => {
    const withOption = new Driver(makeSpec("immediate", { replicas: 1 }));
    withOption.start({ a: { loaded: ["m1", "m2", "m3"] }, b: { loaded: ["m3"] } });
    expect(withOption.effects).toEqual([
      { kind: "publish" },
      { kind: "activate_candidate", replicas: 1 },
      { kind: "end" },
    ]);

    const noBaseline = new Driver(makeSpec("immediate", {}, { baseline: null }));
    noBaseline.start({});
    expect(noBaseline.state.replicas).toBe(1);
    noBaseline.tick(SECOND, { b: { loaded: ["m1"] } });
    expect(noBaseline.state.status).toBe("succeeded");
  });

  it("fails when every agent that could hold the candidate failed to load it, and not while one still tries", () => {
    const d = new Driver(makeSpec("immediate"));
    d.start({ a: { loaded: ["m1", "m2"] } });
    const failure = (agentId: string) => ({ agentId, code: "INSUFFICIENT_MEMORY", message: "no room" });
    d.tick(5 * SECOND, { a: { loaded: ["m1", "m2"] }, b: { loading: ["m2"], failed: [failure("m1")] } });
    expect(d.state.status).toBe("preparing");
    const failed = d.tick(5 * SECOND, {
      a: { loaded: ["m1", "m2"] },
      b: { failed: [failure("m1"), failure("m2")] },
    });
    expect(failed.effects).toEqual([{ kind: "end" }]);
    expect(d.state.status).toBe("failed");
    expect(d.eventsOf("load_failed")[0]?.detail).toMatchObject({
      wanted: 2,
      failed: [failure("m1"), failure("m2")],
    });
  });

  it("fails at the timeout when the candidate is still not loaded on enough agents", () => {
    const d = new Driver(makeSpec("immediate", { timeoutMs: 2 * MINUTE }));
    d.start({ a: { loaded: ["m1"] } });
    d.tick(2 * MINUTE - 1, { a: { loaded: ["m1"] }, b: { loading: ["m1"] } });
    expect(d.state.status).toBe("preparing");
    d.tick(1, { a: { loaded: ["m1"] }, b: { loading: ["m1"] } });
    expect(d.state.status).toBe("failed");
    expect(kinds(d.last.events)).toEqual(["load_timeout", "ended"]);
    expect(d.last.events[0]?.detail).toMatchObject({ elapsedMs: 2 * MINUTE, timeoutMs: 2 * MINUTE });
  });

  it("accepts abort while preparing and refuses the other commands with stable codes", () => {
    const d = new Driver(makeSpec("immediate"));
    d.start({ a: { loaded: ["m1"] } });
    expect(d.command("pause")).toMatchObject({ ok: false, code: "COMMAND_NOT_ALLOWED" });
    expect(d.command("promote")).toMatchObject({ ok: false, code: "COMMAND_NOT_ALLOWED" });
    expect(d.command("resume")).toMatchObject({ ok: false, code: "DEPLOYMENT_NOT_PAUSED" });
    const aborted = d.command("abort", "alice");
    expect(aborted).toMatchObject({ ok: true, effects: [{ kind: "end" }] });
    expect(d.state.status).toBe("aborted");
    expect(d.eventsOf("aborted")[0]?.actor).toBe("alice");
    expect(d.command("abort")).toMatchObject({ ok: false, code: "DEPLOYMENT_NOT_RUNNING" });
  });

  it("never throws on odd observations: missing or malformed fields mean not ready yet", () => {
    const spec = makeSpec("immediate");
    const { state } = startDeployment(spec, T0);
    const odd = [
      {},
      { now: T0 + 1 },
      { now: T0 + 1, a: null, b: { loaded: "m1", failed: [null, { code: 1 }] } },
      { now: T0 + 1, b: { loaded: [1, 2] }, requests: { a: Number.NaN } },
    ] as unknown as Observation[];
    for (const seen of odd) {
      const step = advance(spec, state, seen);
      expect(step.state.status).toBe("preparing");
      expect(kinds(step.effects).filter((k) => k !== "publish")).toEqual([]);
    }
    expect(routeOf(spec, state)).not.toBeNull();
  });
});

describe("deployment options", () => {
  it("documents every default", () => {
    expect(DEFAULT_OPTIONS).toEqual({
      immediate: { replicas: null, timeoutMs: 600_000 },
      blue_green: {
        timeoutMs: 600_000,
        smokePrompts: ["Say hello."],
        smokeDeadlineMs: 30_000,
        rollbackWindowMs: 600_000,
      },
      canary: {
        steps: [5, 25, 50, 100],
        minStepMs: 300_000,
        minRequestsPerArm: 100,
        stepDeadlineMs: 1_800_000,
        rollbackWindowMs: 600_000,
        replicas: 1,
        timeoutMs: 600_000,
      },
      rolling: { maxUnavailable: 1, maxSurge: 0, healthCheckMs: 10_000, agentTimeoutMs: 600_000 },
    });
  });

  it("names the offending option as the HTTP body spells it", () => {
    expect(checkOptions("canary", { minStepMs: 60_000, stepDeadlineMs: 30_000 })).toMatchObject({
      ok: false,
      param: "step_deadline_ms",
    });
    expect(checkOptions("canary", { steps: [50, 25] })).toMatchObject({ ok: false, param: "steps" });
    expect(checkOptions("rolling", { maxUnavailable: 0, maxSurge: 0 })).toMatchObject({
      ok: false,
      param: "max_unavailable",
    });
    expect(checkOptions("immediate", { replicas: 0 })).toMatchObject({ ok: false, param: "replicas" });
    expect(checkOptions("blue_green", { smokeDeadline: 5 })).toMatchObject({
      ok: false,
      param: "smoke_deadline",
    });
    expect(checkOptions("rolling", { maxSurge: 2 })).toEqual({
      ok: true,
      options: { maxUnavailable: 1, maxSurge: 2, healthCheckMs: 10_000, agentTimeoutMs: 600_000 },
    });
  });
});
