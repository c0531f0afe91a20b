// Canary: a growing share of end users (sticky per user) goes to the candidate in steps; each step
// is a new statistics phase, held for a minimum time and a minimum of requests per arm, and judged
// against the baseline serving at the same time (the judge's verdict comes in the observation).
// Fail rolls back at once; not enough data holds the step, then pauses for a human at its deadline.
import { notAllowed, pause, resume, type StrategyMachine, underlying } from "./strategy.ts";
import { awaitCandidate, resolveReplicas, type Seen, type Turn } from "./turn.ts";
import type { DeploymentState, JudgementRecord, SpecOf, StepRecord } from "./types.ts";

type Spec = SpecOf<"canary">;

/** Judgements kept per step: the first and each change of verdict (the latest is kept apart). */
export const MAX_JUDGEMENTS_PER_STEP = 50;
export const STEP_DEADLINE_REASON = "not enough data by the step deadline";

function shareOf(spec: Spec, index: number): number {
  return (spec.options.steps[index] ?? 100) / 100;
}

/** Agents that should hold the candidate at `share`: the option, growing with the share to the baseline's count. */
function placementAt(spec: Spec, state: DeploymentState, share: number): number {
  return Math.max(spec.options.replicas, Math.ceil(share * (state.baselineAgents ?? 0)));
}

function startStep(turn: Turn<Spec>, index: number): void {
  const { state } = turn;
  state.stepIndex = index;
  state.share = shareOf(turn.spec, index);
  state.phase = index + 1;
  state.stepStartedAt = turn.now;
  state.status = "progressing";
  state.steps.push({
    index,
    share: state.share,
    phase: state.phase,
    startedAt: turn.now,
    endedAt: null,
    verdict: null,
    requests: { a: 0, b: 0 },
    judgements: [],
  });
  turn.event("step_started", {
    step: index,
    of: turn.spec.options.steps.length,
    share: state.share,
    phase: state.phase,
    placementReplicas: placementAt(turn.spec, state, state.share),
  });
}

/** Records what this phase's observation says on the current step; null when it is another phase's. */
function observeStep(
  turn: Turn<Spec>,
  seen: Seen,
): { step: StepRecord; judgement: JudgementRecord | null } | null {
  const step = turn.state.steps.at(-1);
  if (!step || step.endedAt !== null) return null;
  // Figures from another phase, or observed no later than the step began (the observation that
  // started it was counted under the previous phase), say nothing about this step.
  if (seen.phase !== null && seen.phase !== turn.state.phase) return { step, judgement: null };
  if (turn.now <= step.startedAt) return { step, judgement: null };
  step.requests = { ...seen.requests };
  if (seen.judgement === null) return { step, judgement: null };
  const judgement: JudgementRecord = {
    at: turn.now,
    verdict: seen.judgement.verdict,
    requests: { ...seen.requests },
    elapsedMs: turn.now - turn.state.stepStartedAt,
    summary: seen.judgement.summary,
  };
  step.judgements ??= [];
  const judgements = step.judgements;
  if (judgements.at(-1)?.verdict !== judgement.verdict && judgements.length < MAX_JUDGEMENTS_PER_STEP) {
    judgements.push(judgement);
  }
  step.lastJudgement = judgement;
  return { step, judgement };
}

function activate(turn: Turn<Spec>, how: "passed" | "promoted"): void {
  const replicas = Math.max(1, turn.state.baselineAgents ?? 0, turn.state.replicas ?? 0);
  turn.effect({ kind: "activate_candidate", replicas });
  turn.event("candidate_activated", { replicas, how, elapsedMs: turn.now - turn.state.startedAt });
  turn.finish("succeeded", how === "passed" ? "every step passed" : `promoted by ${turn.actor}`);
}

export const canary: StrategyMachine<"canary"> = {
  needsBaseline: true,

  advance(turn, seen) {
    const { state, spec } = turn;
    const { options } = spec;
    if (state.status === "preparing") {
      const replicas = resolveReplicas(turn, seen, options.replicas);
      if (awaitCandidate(turn, seen, replicas, options.timeoutMs)) startStep(turn, 0);
      return;
    }
    if (state.status === "rolling_back") {
      const windowMs = turn.now - state.stepStartedAt;
      if (windowMs >= options.rollbackWindowMs) {
        turn.event("rolled_back", { windowMs, share: 0 });
        turn.finish("rolled_back", state.reason ?? "the canary failed its judgement");
      }
      return;
    }
    if (underlying(state) !== "progressing") return; // paused while preparing: hold
    const observed = observeStep(turn, seen);
    if (observed === null) return;
    const { step, judgement } = observed;
    const elapsedMs = turn.now - state.stepStartedAt;
    const requests = step.requests ?? { a: 0, b: 0 };
    const numbers = { step: step.index, share: state.share, phase: state.phase, requests, elapsedMs };
    // A failing judgement acts at once, before the minimum time, and even while paused.
    if (judgement?.verdict === "fail") {
      step.verdict = "fail";
      step.endedAt = turn.now;
      turn.event("canary_failed", { ...numbers, summary: judgement.summary });
      state.status = "rolling_back";
      delete state.pausedFrom;
      delete state.pausedReason;
      state.share = 0;
      state.stepStartedAt = turn.now;
      state.reason = `step ${step.index} (${step.share * 100}%) failed its judgement`;
      return;
    }
    if (state.status === "paused") return;
    const enoughRequests = requests.a >= options.minRequestsPerArm && requests.b >= options.minRequestsPerArm;
    if (judgement?.verdict === "pass" && enoughRequests && elapsedMs >= options.minStepMs) {
      step.verdict = "pass";
      step.endedAt = turn.now;
      turn.event("step_passed", { ...numbers, summary: judgement.summary });
      if (step.index + 1 >= options.steps.length) activate(turn, "passed");
      else startStep(turn, step.index + 1);
      return;
    }
    if (elapsedMs >= options.stepDeadlineMs) {
      pause(turn, STEP_DEADLINE_REASON, {
        ...numbers,
        verdict: judgement?.verdict ?? null,
        minRequestsPerArm: options.minRequestsPerArm,
        stepDeadlineMs: options.stepDeadlineMs,
        summary: judgement?.summary ?? null,
      });
    }
  },

  command(turn, command) {
    const { state } = turn;
    if (state.status === "rolling_back") {
      return notAllowed("the canary is already rolling back; it ends when the rollback window passes");
    }
    switch (command) {
      case "promote": {
        const step = state.steps.at(-1);
        if (step && step.endedAt === null) {
          step.endedAt = turn.now;
          step.endedBy = "promote";
        }
        turn.event("promoted", { step: state.stepIndex, share: state.share, status: state.status });
        activate(turn, "promoted");
        return null;
      }
      case "abort": {
        const step = state.steps.at(-1);
        if (step && step.endedAt === null) step.endedBy = "abort";
        turn.event("aborted", { step: state.stepIndex, share: state.share, status: state.status });
        turn.finish("aborted", `aborted by ${turn.actor}`);
        return null;
      }
      case "pause":
        pause(turn, `paused by ${turn.actor}`);
        return null;
      case "resume":
        resume(turn);
        return null;
    }
  },

  route(spec, state) {
    const stage = underlying(state);
    if (stage === "preparing") {
      return { share: 0, phase: 0, placementReplicas: state.replicas ?? spec.options.replicas };
    }
    if (stage === "progressing" || stage === "rolling_back") {
      return {
        share: state.share,
        phase: state.phase,
        placementReplicas: placementAt(spec, state, shareOf(spec, state.stepIndex)),
      };
    }
    return null;
  },
};
