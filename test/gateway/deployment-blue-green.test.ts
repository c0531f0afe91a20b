// The blue-green state machine: capacity parity, smoke test, switch, rollback window (abort restores
// the baseline at once, pause holds the window open), smoke failure and a smoke test that never answers.
import { describe, expect, it } from "vitest";
import { SMOKE_GRACE_MS } from "../../gateway/deployments/blue-green.ts";
import { Driver, kinds, MINUTE, makeSpec, SECOND } from "./deployment-harness.ts";

const A = { loaded: ["m1", "m2", "m3"] };
const smokeOk = { ok: true, results: [{ prompt: "Say hello.", ok: true, ms: 120 }] };
const smokeBad = {
  ok: false,
  results: [{ prompt: "Say hello.", ok: false, ms: 30_000, error: "DEADLINE_EXCEEDED" }],
};

/** A blue-green deployment driven to the switch. */
function switched(options: Record<string, unknown> = {}): Driver {
  const d = new Driver(makeSpec("blue_green", options));
  d.start({ a: A });
  d.tick(5 * SECOND, { a: A, b: { loaded: ["m4", "m5", "m6"] } });
  d.tick(5 * SECOND, { a: A, b: { loaded: ["m4", "m5", "m6"] }, smoke: smokeOk });
  expect(d.state.status).toBe("switched");
  return d;
}

describe("blue-green deployment", () => {
  it("waits for capacity parity, smoke-tests, switches all at once and cools the baseline after the window", () => {
    const d = new Driver(makeSpec("blue_green"));
    d.start({ a: A });
    expect(d.state.replicas).toBe(3);
    expect(d.route()).toEqual({ share: 0, phase: 0, placementReplicas: 3 });

    d.tick(5 * SECOND, { a: A, b: { loaded: ["m4", "m5"], loading: ["m6"] } });
    expect(d.state.status).toBe("preparing");

    const ready = d.tick(5 * SECOND, { a: A, b: { loaded: ["m4", "m5", "m6"] } });
    expect(ready.effects).toEqual([{ kind: "smoke_test" }]);
    expect(kinds(ready.events)).toEqual(["candidate_ready", "smoke_test_started"]);
    expect(d.state.status).toBe("smoke_testing");
    expect(d.route()).toEqual({ share: 0, phase: 0, placementReplicas: 3 });

    const passed = d.tick(5 * SECOND, { a: A, b: { loaded: ["m4", "m5", "m6"] }, smoke: smokeOk });
    // The rollout leaves the table once the registry serves b by name: hence the publish.
    expect(passed.effects).toEqual([{ kind: "activate_candidate", replicas: 3 }, { kind: "publish" }]);
    expect(kinds(passed.events)).toEqual(["smoke_test_passed", "candidate_activated"]);
    expect(d.eventsOf("smoke_test_passed")[0]?.detail).toMatchObject({
      results: smokeOk.results,
      elapsedMs: 5 * SECOND,
    });
    expect(d.state).toMatchObject({ status: "switched", share: 1 });
    expect(d.route()).toBeNull();

    expect(d.tick(10 * MINUTE - 1, { smoke: smokeOk }).effects).toEqual([]);
    const cooled = d.tick(1, { smoke: smokeOk });
    expect(cooled.effects).toEqual([{ kind: "cool_previous" }, { kind: "end" }]);
    expect(d.state.status).toBe("succeeded");
    expect(d.eventsOf("previous_cooled")[0]?.detail).toMatchObject({
      previous: "1.0.0",
      windowMs: 10 * MINUTE,
    });
  });

  it("fails without switching when the smoke test fails", () => {
    const d = new Driver(makeSpec("blue_green"));
    d.start({ a: A, b: { loaded: ["m4", "m5", "m6"] } });
    expect(kinds(d.effects)).toEqual(["publish", "smoke_test"]);
    d.tick(5 * SECOND, { a: A, b: { loaded: ["m4", "m5", "m6"] }, smoke: smokeBad });
    expect(d.last.effects).toEqual([{ kind: "end" }]);
    expect(d.state.status).toBe("failed");
    expect(kinds(d.effects)).not.toContain("activate_candidate");
    expect(d.eventsOf("smoke_test_failed")[0]?.detail).toMatchObject({ results: smokeBad.results });
  });

  it("runs a smoke test that never answered once more, then fails", () => {
    const d = new Driver(makeSpec("blue_green", { smokePrompts: ["a", "b"], smokeDeadlineMs: 10_000 }));
    d.start({ a: A, b: { loaded: ["m4", "m5", "m6"] } });
    const waitMs = 2 * 10_000 + SMOKE_GRACE_MS;
    expect(d.tick(waitMs - 1).effects).toEqual([]);
    expect(d.tick(1).effects).toEqual([{ kind: "smoke_test" }]);
    expect(d.eventsOf("smoke_test_retried")[0]?.detail).toMatchObject({ attempt: 2 });
    d.tick(waitMs);
    expect(d.state.status).toBe("failed");
    expect(d.state.reason).toBe("no smoke test result after 2 attempt(s)");
  });

  it("fails when the candidate cannot reach parity in time", () => {
    const d = new Driver(makeSpec("blue_green", { timeoutMs: MINUTE }));
    d.start({ a: A, b: { loaded: ["m4"] } });
    d.tick(MINUTE, { a: A, b: { loaded: ["m4"], loading: ["m5"] } });
    expect(d.state.status).toBe("failed");
    expect(d.eventsOf("load_timeout")[0]?.detail).toMatchObject({
      wanted: 3,
      loaded: ["m4"],
      loading: ["m5"],
    });
  });

  it("restores the baseline instantly on abort in the rollback window", () => {
    const d = switched();
    d.now += MINUTE;
    const aborted = d.command("abort", "bob");
    expect(aborted).toMatchObject({ ok: true, effects: [{ kind: "restore_baseline" }, { kind: "end" }] });
    expect(d.state).toMatchObject({ status: "aborted", share: 0 });
    expect(d.eventsOf("baseline_restored")[0]?.detail).toMatchObject({
      baseline: "1.0.0",
      sinceSwitchMs: MINUTE,
    });
    expect(d.eventsOf("aborted")[0]).toMatchObject({ actor: "bob", detail: { switched: true } });
  });

  it("aborts before the switch without touching the registry", () => {
    const d = new Driver(makeSpec("blue_green"));
    d.start({ a: A, b: { loaded: ["m4", "m5", "m6"] } });
    expect(d.state.status).toBe("smoke_testing");
    expect(d.command("abort")).toMatchObject({ ok: true, effects: [{ kind: "end" }] });
    expect(d.state.status).toBe("aborted");
  });

  it("pauses only in the rollback window, holding it open until resumed (which restarts it)", () => {
    const before = new Driver(makeSpec("blue_green"));
    before.start({ a: A });
    expect(before.command("pause")).toMatchObject({ ok: false, code: "COMMAND_NOT_ALLOWED" });
    expect(before.command("promote")).toMatchObject({ ok: false, code: "COMMAND_NOT_ALLOWED" });
    expect(before.command("resume")).toMatchObject({ ok: false, code: "DEPLOYMENT_NOT_PAUSED" });

    const d = switched();
    d.now += MINUTE;
    expect(d.command("pause", "carol")).toMatchObject({ ok: true, effects: [] });
    expect(d.state).toMatchObject({ status: "paused", pausedFrom: "switched" });
    expect(d.command("pause")).toMatchObject({ ok: false, code: "COMMAND_NOT_ALLOWED" });
    expect(d.tick(60 * MINUTE).effects).toEqual([]);
    expect(d.route()).toBeNull();
    expect(d.command("resume")).toMatchObject({ ok: true, effects: [] });
    expect(d.state.status).toBe("switched");
    expect(d.tick(10 * MINUTE - 1).effects).toEqual([]);
    expect(kinds(d.tick(1).effects)).toEqual(["cool_previous", "end"]);
  });

  it("promote in the rollback window ends it early: the candidate stays, the baseline cools", () => {
    const d = switched();
    expect(d.command("promote")).toMatchObject({
      ok: true,
      effects: [{ kind: "cool_previous" }, { kind: "end" }],
    });
    expect(d.state.status).toBe("succeeded");
    expect(d.command("abort")).toMatchObject({ ok: false, code: "DEPLOYMENT_NOT_RUNNING" });
  });

  it("prepares on one agent when no agent holds the baseline", () => {
    const d = new Driver(makeSpec("blue_green", {}, { baseline: null }));
    d.start({});
    expect(d.route()).toEqual({ share: 0, phase: 0, placementReplicas: 1 });
  });
});
