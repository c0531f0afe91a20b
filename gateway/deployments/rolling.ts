// Rolling: agent by agent over the agents that held the baseline at the start. A batch takes up to
// maxSurge agents that load b beside a ("both", flipped to "b" once healthy) and up to
// maxUnavailable agents that drain a and load b ("b"); each changed agent must hold b loaded and
// healthy for healthCheckMs before the next batch. The share follows capacity (agents serving b
// over agents serving either), and arm a never has zero agents while the share is below 1.
// A failure halts and rolls every changed agent back.
import { notAllowed, pause, resume, type StrategyMachine, underlying } from "./strategy.ts";
import type { Seen, Turn } from "./turn.ts";
import type { DeploymentStatus, RollingAgentState, RollingMode, SpecOf } from "./types.ts";

type Spec = SpecOf<"rolling">;
type SeenAgent = NonNullable<Seen["agents"]>[number];

function fleetOf(seen: Seen): Map<string, SeenAgent> {
  return new Map((seen.agents ?? []).map((agent) => [agent.id, agent]));
}

/** Agents serving each arm for this model: assigned to it and holding it loaded. */
function serving(turn: Turn<Spec>, fleet: Map<string, SeenAgent>): { a: number; b: number } {
  const counts = { a: 0, b: 0 };
  for (const id of turn.state.rolling?.order ?? []) {
    const agent = fleet.get(id);
    if (!agent) continue;
    const assignment = turn.state.agents?.[id] ?? "a";
    if (assignment !== "b" && agent.holdsA) counts.a++;
    if (assignment !== "a" && agent.holdsB) counts.b++;
  }
  return counts;
}

function shareOf(counts: { a: number; b: number }): number {
  return counts.a + counts.b === 0 ? 0 : counts.b / (counts.a + counts.b);
}

/** Sets the share from capacity; true when it changed. */
function updateShare(turn: Turn<Spec>, fleet: Map<string, SeenAgent>): boolean {
  const share = shareOf(serving(turn, fleet));
  if (share === turn.state.share) return false;
  turn.state.share = share;
  return true;
}

function inBatch(agent: RollingAgentState): boolean {
  return agent.stage === "changing" || agent.stage === "checking";
}

function closeBatch(turn: Turn<Spec>, verdict: "pass" | "fail"): void {
  const step = turn.state.steps.at(-1);
  if (step && step.endedAt === null) {
    step.endedAt = turn.now;
    step.verdict = verdict;
  }
}

function rollBack(turn: Turn<Spec>, status: DeploymentStatus, reason: string): void {
  const rolling = turn.state.rolling;
  const changed = (rolling?.order ?? []).filter((id) => {
    const stage = rolling?.agents[id]?.stage;
    return stage !== "pending" && stage !== "skipped";
  });
  closeBatch(turn, "fail");
  turn.state.agents = {};
  turn.state.share = 0;
  turn.event("rolled_back", { agents: changed, share: 0, reason });
  turn.finish(status, reason);
}

/** Watches the batch in progress; returns a failure, if any. */
function watchBatch(turn: Turn<Spec>, fleet: Map<string, SeenAgent>, seen: Seen): string | null {
  const { options } = turn.spec;
  const rolling = turn.state.rolling;
  if (!rolling) return null;
  const holding = turn.state.status === "paused";
  for (const id of rolling.order) {
    const progress = rolling.agents[id];
    if (!progress || !inBatch(progress)) continue;
    const agent = fleet.get(id);
    const sinceMs = turn.now - progress.since;
    if (progress.stage === "changing") {
      const failure = seen.bFailed.find((f) => f.agentId === id);
      if (failure && !agent?.holdsB && !seen.bLoading.includes(id)) {
        turn.event("agent_failed", {
          agentId: id,
          cause: "load_failed",
          code: failure.code,
          message: failure.message,
          sinceMs,
        });
        return `the candidate failed to load on ${id} (${failure.code})`;
      }
      if (agent?.holdsB && agent.healthy) {
        progress.stage = "checking";
        progress.since = turn.now;
        turn.event("agent_ready", {
          agentId: id,
          mode: progress.mode,
          loadMs: sinceMs,
          healthCheckMs: options.healthCheckMs,
        });
      } else if (!holding && sinceMs >= options.agentTimeoutMs) {
        turn.event("agent_failed", {
          agentId: id,
          cause: "timeout",
          sinceMs,
          timeoutMs: options.agentTimeoutMs,
        });
        return `the candidate was not loaded and healthy on ${id} within ${options.agentTimeoutMs} ms`;
      }
    }
    if (progress.stage === "checking") {
      if (!agent?.holdsB || !agent.healthy) {
        const cause = agent ? (agent.holdsB ? "unhealthy" : "unloaded") : "disconnected";
        turn.event("agent_failed", { agentId: id, cause, checkedMs: turn.now - progress.since });
        return `${id} did not stay loaded and healthy for ${options.healthCheckMs} ms (${cause})`;
      }
      const checkedMs = turn.now - progress.since;
      if (holding || checkedMs < options.healthCheckMs) continue;
      progress.stage = "converted";
      progress.since = turn.now;
      turn.state.agents ??= {};
      turn.state.agents[id] = "b";
      turn.event("agent_converted", { agentId: id, mode: progress.mode, checkedMs });
    }
  }
  return null;
}

function planBatch(turn: Turn<Spec>, fleet: Map<string, SeenAgent>, pending: string[]): void {
  const { state } = turn;
  const rolling = state.rolling;
  if (!rolling) return;
  const { maxSurge, maxUnavailable } = turn.spec.options;
  const candidates: string[] = [];
  for (const id of pending) {
    const agent = fleet.get(id);
    if (agent?.holdsA) {
      candidates.push(id);
      continue;
    }
    rolling.agents[id] = { stage: "skipped", since: turn.now };
    turn.event("agent_skipped", {
      agentId: id,
      cause: agent ? "no longer holds the baseline" : "disconnected",
    });
  }
  if (candidates.length === 0) return;
  const before = serving(turn, fleet);
  const surge = candidates.slice(0, maxSurge);
  const rest = candidates.slice(surge.length);
  // Draining the last agents on a is fine only once b serves somewhere (the share is then 1).
  const drainable = before.b > 0 ? before.a : before.a - 1;
  const unavailable = rest.slice(0, Math.max(0, Math.min(maxUnavailable, drainable)));
  const forcedSurge = surge.length + unavailable.length === 0;
  if (forcedSurge) surge.push(candidates[0] as string);
  const changes: { id: string; mode: RollingMode }[] = [
    ...surge.map((id) => ({ id, mode: "surge" as const })),
    ...unavailable.map((id) => ({ id, mode: "unavailable" as const })),
  ];
  state.agents ??= {};
  for (const { id, mode } of changes) {
    rolling.agents[id] = { stage: "changing", mode, since: turn.now };
    state.agents[id] = mode === "surge" ? "both" : "b";
  }
  updateShare(turn, fleet);
  state.steps.push({
    index: state.stepIndex,
    share: state.share,
    phase: 0,
    startedAt: turn.now,
    endedAt: null,
    verdict: null,
    agents: changes,
  });
  state.stepIndex++;
  turn.event("batch_started", {
    batch: state.stepIndex - 1,
    surge,
    unavailable,
    forcedSurge,
    draining: unavailable.filter((id) => fleet.get(id)?.busyA),
    share: state.share,
    serving: serving(turn, fleet),
    pending: pending.length - changes.length,
  });
}

function complete(turn: Turn<Spec>): void {
  const rolling = turn.state.rolling;
  const converted = (rolling?.order ?? []).filter((id) => rolling?.agents[id]?.stage === "converted");
  if (converted.length === 0) {
    turn.finish("failed", "no agent was converted: every baseline agent left before its turn");
    return;
  }
  turn.effect({ kind: "activate_candidate", replicas: converted.length });
  turn.event("candidate_activated", {
    replicas: converted.length,
    elapsedMs: turn.now - turn.state.startedAt,
  });
  turn.effect({ kind: "cool_previous" });
  turn.event("previous_cooled", { previous: turn.spec.baseline });
  turn.finish("succeeded", "every agent serves the candidate");
}

export const rolling: StrategyMachine<"rolling"> = {
  needsBaseline: true,

  advance(turn, seen) {
    const { state } = turn;
    if (state.status === "preparing") {
      const holders = (seen.agents ?? []).filter((agent) => agent.holdsA).map((agent) => agent.id);
      if (holders.length === 0) {
        const elapsedMs = turn.now - state.stepStartedAt;
        if (elapsedMs >= turn.spec.options.agentTimeoutMs) {
          turn.event("load_timeout", { elapsedMs, agents: seen.agents?.length ?? 0 });
          turn.finish("failed", "no agent served the baseline to roll over");
        }
        return;
      }
      const order = [...new Set(holders)].sort();
      state.rolling = {
        order,
        agents: Object.fromEntries(order.map((id) => [id, { stage: "pending", since: turn.now }])),
      };
      state.baselineAgents = order.length;
      state.agents = {};
      state.status = "progressing";
      state.stepStartedAt = turn.now;
    }
    if (underlying(state) !== "progressing" || !state.rolling) return;
    const fleet = fleetOf(seen);
    const failure = watchBatch(turn, fleet, seen);
    if (failure !== null) return rollBack(turn, "rolled_back", failure);
    const batchOpen = Object.values(state.rolling.agents).some(inBatch);
    if (!batchOpen) closeBatch(turn, "pass");
    const shareChanged = updateShare(turn, fleet);
    if (state.status === "paused" || batchOpen) {
      if (shareChanged) turn.event("share_changed", { share: state.share, serving: serving(turn, fleet) });
      return;
    }
    const pending = state.rolling.order.filter((id) => state.rolling?.agents[id]?.stage === "pending");
    if (pending.length > 0) planBatch(turn, fleet, pending);
    if (!Object.values(state.rolling.agents).some((agent) => agent.stage === "pending" || inBatch(agent))) {
      complete(turn);
    }
  },

  command(turn, command) {
    const { state } = turn;
    switch (command) {
      case "promote":
        return notAllowed("a rolling deployment moves agent by agent; it cannot be promoted at once");
      case "abort":
        turn.event("aborted", { status: state.status, share: state.share, agents: { ...state.agents } });
        rollBack(turn, "aborted", `aborted by ${turn.actor}`);
        return null;
      case "pause":
        pause(turn, `paused by ${turn.actor}: batches in progress finish, no new batch starts`);
        return null;
      case "resume":
        for (const progress of Object.values(state.rolling?.agents ?? {})) {
          if (inBatch(progress)) progress.since = turn.now;
        }
        resume(turn);
        return null;
    }
  },

  route(_spec, state) {
    const stage = underlying(state);
    if (stage !== "preparing" && stage !== "progressing") return null;
    // Placement 0: b is loaded only where the agents map says ("b" or "both").
    return { share: state.share, phase: 0, placementReplicas: 0, agents: { ...state.agents } };
  },
};
