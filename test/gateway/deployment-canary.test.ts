// The canary state machine: steps of share, each a new phase held for a minimum time and a minimum of
// requests per arm; Pass advances, Fail rolls back at once, Not enough data holds and then pauses at
// the step deadline (never a failure); commands in every state; stale observations; idempotence.
import { describe, expect, it } from "vitest";
import { MAX_JUDGEMENTS_PER_STEP, STEP_DEADLINE_REASON } from "../../gateway/deployments/canary.ts";
import { Driver, kinds, MINUTE, makeSpec, type PartialObservation, SECOND } from "./deployment-harness.ts";

const A = { loaded: ["m1", "m2", "m3", "m4"] };
const B = { loaded: ["m5"] };
const summary = (verdict: string) => ({ verdict, metrics: [{ metric: "error_rate", verdict, p: 0.4 }] });
const pass = (requests = 150): PartialObservation => ({
  a: A,
  b: B,
  requests: { a: requests, b: requests },
  judgement: { verdict: "pass", summary: summary("pass") },
});
const noData = (requests = 20): PartialObservation => ({
  a: A,
  b: B,
  requests: { a: requests, b: requests },
  judgement: { verdict: "not_enough_data", summary: summary("not_enough_data") },
});
const fail: PartialObservation = {
  a: A,
  b: B,
  requests: { a: 40, b: 40 },
  judgement: { verdict: "fail", summary: summary("fail") },
};

/** A canary at its first step (5 %). */
function atFirstStep(options: Record<string, unknown> = {}): Driver {
  const d = new Driver(makeSpec("canary", options));
  d.start({ a: A });
  d.tick(5 * SECOND, { a: A, b: B });
  expect(d.state).toMatchObject({ status: "progressing", share: 0.05, phase: 1, stepIndex: 0 });
  return d;
}

describe("canary deployment", () => {
  it("waits at share 0 while the candidate loads, then walks 5/25/50/100 % and promotes itself", () => {
    const d = new Driver(makeSpec("canary"));
    d.start({ a: A, b: { loading: ["m5"] } });
    expect(d.state.status).toBe("preparing");
    expect(d.route()).toEqual({ share: 0, phase: 0, placementReplicas: 1 });
    d.tick(5 * SECOND, { a: A, b: { loading: ["m5"] } });
    expect(d.state.share).toBe(0);

    const first = d.tick(5 * SECOND, { a: A, b: B });
    expect(first.effects).toEqual([{ kind: "publish" }]);
    expect(kinds(first.events)).toEqual(["candidate_ready", "step_started"]);
    expect(d.route()).toEqual({ share: 0.05, phase: 1, placementReplicas: 1 });

    const shares = [0.05, 0.25, 0.5, 1];
    // The candidate's placement grows with the share up to the baseline's 4 agents.
    const placements = [1, 1, 2, 4];
    for (const [i, share] of shares.entries()) {
      expect(d.route()).toEqual({ share, phase: i + 1, placementReplicas: placements[i] });
      // Passing, with enough requests, but before the minimum time: held.
      expect(d.tick(5 * MINUTE - 1, pass()).effects).toEqual([]);
      const passed = d.tick(1, pass());
      expect(d.state.steps[i]).toMatchObject({
        verdict: "pass",
        share,
        phase: i + 1,
        requests: { a: 150, b: 150 },
      });
      const detail = d.eventsOf("step_passed")[i]?.detail;
      expect(detail).toMatchObject({ step: i, share, requests: { a: 150, b: 150 }, elapsedMs: 5 * MINUTE });
      expect(detail?.summary).toEqual(summary("pass"));
      if (i < shares.length - 1) {
        expect(passed.effects).toEqual([{ kind: "publish" }]);
        expect(d.state.phase).toBe(i + 2);
      } else {
        expect(passed.effects).toEqual([{ kind: "activate_candidate", replicas: 4 }, { kind: "end" }]);
      }
    }
    expect(d.state).toMatchObject({ status: "succeeded", share: 1 });
    expect(d.route()).toBeNull();
  });

  it("holds a passing step until each arm has the minimum of requests", () => {
    const d = atFirstStep();
    expect(d.tick(6 * MINUTE, pass(99)).effects).toEqual([]);
    expect(d.state.stepIndex).toBe(0);
    d.tick(SECOND, { ...pass(), requests: { a: 500, b: 100 } });
    expect(d.state.stepIndex).toBe(1);
  });

  it("rolls back at once on a failing judgement, even before the minimum time, and ends after the window", () => {
    const d = atFirstStep();
    const failed = d.tick(30 * SECOND, fail);
    expect(failed.effects).toEqual([{ kind: "publish" }]);
    expect(d.state).toMatchObject({ status: "rolling_back", share: 0 });
    expect(d.state.steps[0]).toMatchObject({ verdict: "fail" });
    expect(d.eventsOf("canary_failed")[0]?.detail).toMatchObject({
      step: 0,
      share: 0.05,
      requests: { a: 40, b: 40 },
      elapsedMs: 30 * SECOND,
      summary: summary("fail"),
    });
    // Still in the table at share 0 (phase kept) so in-flight work on b finishes.
    expect(d.route()).toEqual({ share: 0, phase: 1, placementReplicas: 1 });
    expect(d.command("abort")).toMatchObject({ ok: false, code: "COMMAND_NOT_ALLOWED" });
    expect(d.command("promote")).toMatchObject({ ok: false, code: "COMMAND_NOT_ALLOWED" });
    expect(d.tick(10 * MINUTE - 1, pass()).effects).toEqual([]);
    const ended = d.tick(1, pass());
    expect(ended.effects).toEqual([{ kind: "end" }]);
    expect(d.state).toMatchObject({ status: "rolled_back", reason: "step 0 (5%) failed its judgement" });
    expect(kinds(d.effects)).not.toContain("activate_candidate");
  });

  it("holds on not enough data, then pauses at the step deadline (never a failure) and resumes with a fresh clock", () => {
    const d = atFirstStep();
    for (let t = 0; t < 29; t++) expect(d.tick(MINUTE, noData()).effects).toEqual([]);
    expect(d.state.status).toBe("progressing");
    const paused = d.tick(MINUTE, noData());
    expect(paused.effects).toEqual([]);
    expect(d.state).toMatchObject({
      status: "paused",
      pausedReason: STEP_DEADLINE_REASON,
      pausedFrom: "progressing",
    });
    expect(d.eventsOf("paused")[0]).toMatchObject({
      actor: "controller",
      detail: {
        reason: STEP_DEADLINE_REASON,
        requests: { a: 20, b: 20 },
        verdict: "not_enough_data",
        elapsedMs: 30 * MINUTE,
      },
    });
    expect(d.route()).toEqual({ share: 0.05, phase: 1, placementReplicas: 1 });

    // Paused: a pass does not advance.
    expect(d.tick(MINUTE, pass()).effects).toEqual([]);
    expect(d.state.status).toBe("paused");
    expect(d.command("resume", "dave")).toMatchObject({ ok: true, effects: [] });
    expect(d.state.status).toBe("progressing");
    // The step's clock restarted at the resume: the minimum time counts again.
    expect(d.tick(5 * MINUTE - 1, pass()).effects).toEqual([]);
    expect(d.tick(1, pass()).effects).toEqual([{ kind: "publish" }]);
    expect(d.state.stepIndex).toBe(1);
  });

  it("rolls back on a failing judgement while paused", () => {
    const d = atFirstStep();
    d.command("pause");
    d.tick(SECOND, fail);
    expect(d.state.status).toBe("rolling_back");
    expect(d.state.pausedReason).toBeUndefined();
  });

  it("keeps the first judgement and each change of verdict, and always the latest", () => {
    const d = atFirstStep();
    d.tick(MINUTE, noData(10));
    d.tick(MINUTE, noData(30));
    d.tick(MINUTE, pass(60));
    d.tick(MINUTE, noData(70));
    const step = d.state.steps[0];
    expect(step?.judgements?.map((j) => [j.verdict, j.requests.a])).toEqual([
      ["not_enough_data", 10],
      ["pass", 60],
      ["not_enough_data", 70],
    ]);
    expect(step?.lastJudgement).toMatchObject({
      verdict: "not_enough_data",
      requests: { a: 70, b: 70 },
      elapsedMs: 4 * MINUTE,
    });
    for (let i = 0; i < 2 * MAX_JUDGEMENTS_PER_STEP; i++) d.tick(SECOND, i % 2 ? pass(1) : noData(1));
    expect(d.state.steps[0]?.judgements).toHaveLength(MAX_JUDGEMENTS_PER_STEP);
  });

  it("ignores figures observed for another phase (a hub that has not seen the new step yet)", () => {
    const d = atFirstStep({ minStepMs: 0 });
    d.tick(SECOND, { ...fail, phase: 0 });
    expect(d.state.status).toBe("progressing");
    d.tick(SECOND, { ...pass(), phase: 1 });
    expect(d.state.stepIndex).toBe(1);
    d.tick(SECOND, { ...pass(), phase: 1 });
    expect(d.state.stepIndex).toBe(1);
  });

  it("promote skips to the switch from any running step, and from preparing", () => {
    const d = atFirstStep();
    d.now += MINUTE;
    expect(d.command("promote", "erin")).toMatchObject({
      ok: true,
      effects: [{ kind: "activate_candidate", replicas: 4 }, { kind: "end" }],
    });
    expect(d.state.status).toBe("succeeded");
    expect(d.state.steps[0]).toMatchObject({ endedBy: "promote", verdict: null });
    expect(d.eventsOf("promoted")[0]).toMatchObject({ actor: "erin", detail: { step: 0, share: 0.05 } });

    const early = new Driver(makeSpec("canary"));
    early.start({ a: A });
    expect(early.command("promote")).toMatchObject({ ok: true });
    expect(early.state.status).toBe("succeeded");
  });

  it("abort sends everyone back to the baseline and ends", () => {
    const d = atFirstStep();
    d.tick(6 * MINUTE, pass());
    expect(d.state.share).toBe(0.25);
    expect(d.command("abort")).toMatchObject({ ok: true, effects: [{ kind: "end" }] });
    expect(d.state).toMatchObject({ status: "aborted", share: 0 });
    expect(d.state.steps[1]).toMatchObject({ endedBy: "abort" });
    expect(d.route()).toBeNull();
  });

  it("pauses and resumes while preparing; refuses resume when running and pause when paused", () => {
    const d = new Driver(makeSpec("canary"));
    d.start({ a: A });
    expect(d.command("resume")).toMatchObject({ ok: false, code: "DEPLOYMENT_NOT_PAUSED" });
    expect(d.command("pause")).toMatchObject({ ok: true });
    expect(d.command("pause")).toMatchObject({ ok: false, code: "COMMAND_NOT_ALLOWED" });
    // Paused while preparing: the load finishing starts no step, and no timeout runs.
    d.tick(20 * MINUTE, { a: A, b: B });
    expect(d.state).toMatchObject({ status: "paused", share: 0 });
    expect(d.route()).toEqual({ share: 0, phase: 0, placementReplicas: 1 });
    d.command("resume");
    expect(d.state.status).toBe("preparing");
    d.tick(SECOND, { a: A, b: B });
    expect(d.state).toMatchObject({ status: "progressing", share: 0.05 });
  });

  it("needs a baseline: without one it fails at the start", () => {
    const d = new Driver(makeSpec("canary", {}, { baseline: null }));
    const started = d.start({});
    expect(started.effects).toEqual([{ kind: "end" }]);
    expect(d.state.status).toBe("failed");
  });

  it("fails when the candidate never loads", () => {
    const d = new Driver(makeSpec("canary", { timeoutMs: MINUTE }));
    d.start({
      a: A,
      b: { failed: [{ agentId: "m1", code: "ENGINE_ERROR", message: "bad weights" }], loading: ["m2"] },
    });
    expect(d.state.status).toBe("preparing");
    d.tick(MINUTE, { a: A, b: { loading: ["m2"] } });
    expect(d.state.status).toBe("failed");
  });
});
