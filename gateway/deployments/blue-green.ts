// Blue-green: the candidate loads on as many agents as hold the baseline (capacity parity) with no
// user sent to it, passes a smoke test, then takes all traffic at once; the baseline stays warm for
// the rollback window, in which `abort` restores it instantly. Nothing switches before the smoke
// test passes, and b is loaded before the switch, so the switch itself fails no request.
import { notAllowed, pause, resume, type StrategyMachine, underlying } from "./strategy.ts";
import { awaitCandidate, resolveReplicas, type Turn } from "./turn.ts";
import type { SpecOf } from "./types.ts";

/** Added to the prompts' own deadlines before a smoke test with no result is run again. */
export const SMOKE_GRACE_MS = 30_000;
/** Smoke test runs before a deployment whose results never arrive fails. */
export const SMOKE_MAX_ATTEMPTS = 2;

type Spec = SpecOf<"blue_green">;

function startSmokeTest(turn: Turn<Spec>, attempts: number): void {
  turn.state.smoke = { attempts, startedAt: turn.now };
  turn.effect({ kind: "smoke_test" });
  const { smokePrompts, smokeDeadlineMs } = turn.spec.options;
  turn.event(attempts === 1 ? "smoke_test_started" : "smoke_test_retried", {
    attempt: attempts,
    prompts: smokePrompts.length,
    deadlineMs: smokeDeadlineMs,
  });
}

function smokeTimeoutMs(spec: Spec): number {
  return spec.options.smokePrompts.length * spec.options.smokeDeadlineMs + SMOKE_GRACE_MS;
}

function restoreBaseline(turn: Turn<Spec>): void {
  turn.effect({ kind: "restore_baseline" });
  turn.event("baseline_restored", {
    baseline: turn.spec.baseline,
    sinceSwitchMs: turn.now - (turn.state.switchedAt ?? turn.now),
  });
}

export const blueGreen: StrategyMachine<"blue_green"> = {
  needsBaseline: false,

  advance(turn, seen) {
    const { state, spec } = turn;
    const { options } = spec;
    if (state.status === "preparing") {
      const replicas = resolveReplicas(turn, seen, null);
      if (!awaitCandidate(turn, seen, replicas, options.timeoutMs)) return;
      state.status = "smoke_testing";
      state.stepStartedAt = turn.now;
      startSmokeTest(turn, 1);
      return;
    }
    if (state.status === "smoke_testing") {
      const attempt = state.smoke ?? { attempts: 1, startedAt: state.stepStartedAt };
      if (seen.smoke === null) {
        const waitedMs = turn.now - attempt.startedAt;
        if (waitedMs < smokeTimeoutMs(spec)) return;
        if (attempt.attempts < SMOKE_MAX_ATTEMPTS) return startSmokeTest(turn, attempt.attempts + 1);
        turn.finish("failed", `no smoke test result after ${attempt.attempts} attempt(s)`, { waitedMs });
        return;
      }
      const detail = {
        attempt: attempt.attempts,
        results: seen.smoke.results,
        elapsedMs: turn.now - attempt.startedAt,
      };
      if (!seen.smoke.ok) {
        turn.event("smoke_test_failed", detail);
        turn.finish("failed", "the smoke test failed: nothing was switched");
        return;
      }
      turn.event("smoke_test_passed", detail);
      const replicas = state.replicas ?? 1;
      turn.effect({ kind: "activate_candidate", replicas });
      state.status = "switched";
      state.switchedAt = turn.now;
      state.stepStartedAt = turn.now;
      state.share = 1;
      turn.event("candidate_activated", {
        replicas,
        rollbackWindowMs: options.rollbackWindowMs,
        elapsedMs: turn.now - state.startedAt,
      });
      return;
    }
    if (state.status === "switched") {
      const windowMs = turn.now - state.stepStartedAt;
      if (windowMs < options.rollbackWindowMs) return;
      turn.effect({ kind: "cool_previous" });
      turn.event("previous_cooled", { previous: spec.baseline, windowMs });
      turn.finish("succeeded", "the rollback window passed: the candidate stays");
    }
    // paused: only in the rollback window, which it holds open.
  },

  command(turn, command) {
    const { state } = turn;
    const stage = underlying(state);
    const afterSwitch = stage === "switched";
    switch (command) {
      case "abort":
        turn.event("aborted", { status: state.status, switched: afterSwitch });
        if (afterSwitch) restoreBaseline(turn);
        turn.finish(
          "aborted",
          afterSwitch
            ? "aborted in the rollback window: the baseline is active again"
            : "aborted before the switch",
        );
        return null;
      case "promote":
        if (!afterSwitch)
          return notAllowed("a blue-green deployment switches only after its smoke test passes");
        turn.effect({ kind: "cool_previous" });
        turn.event("promoted", { sinceSwitchMs: turn.now - (state.switchedAt ?? turn.now) });
        turn.event("previous_cooled", { previous: turn.spec.baseline });
        turn.finish("succeeded", "promoted in the rollback window: the candidate stays");
        return null;
      case "pause":
        if (state.status !== "switched")
          return notAllowed("a blue-green deployment pauses only in its rollback window");
        pause(turn, `paused by ${turn.actor}: the baseline stays warm until resumed`);
        return null;
      case "resume":
        resume(turn);
        return null;
    }
  },

  route(_spec, state) {
    if (state.status !== "preparing" && state.status !== "smoke_testing") return null;
    return { share: 0, phase: 0, placementReplicas: state.replicas ?? 1 };
  },
};
