// What every strategy module provides to the dispatcher in machine.ts, and the pause/resume that
// they share (a pause holds the clock; a resume restarts it).
import type { Seen, Turn } from "./turn.ts";
import type {
  CommandErrorCode,
  DeploymentCommand,
  DeploymentState,
  RouteFields,
  SpecOf,
  Strategy,
} from "./types.ts";

export interface CommandRefusal {
  code: CommandErrorCode;
  message: string;
}

export interface StrategyMachine<S extends Strategy> {
  /** Whether arm a must exist (a deployment without a baseline fails at start). */
  needsBaseline: boolean;
  advance(turn: Turn<SpecOf<S>>, seen: Seen): void;
  /** Carries out a command on a running deployment, or says why not. */
  command(turn: Turn<SpecOf<S>>, command: DeploymentCommand): CommandRefusal | null;
  route(spec: SpecOf<S>, state: DeploymentState): RouteFields | null;
}

export function notAllowed(message: string): CommandRefusal {
  return { code: "COMMAND_NOT_ALLOWED", message };
}

export function pause(turn: Turn, reason: string, detail: Record<string, unknown> = {}): void {
  const { state } = turn;
  state.pausedFrom = state.status;
  state.pausedReason = reason;
  state.status = "paused";
  turn.event("paused", {
    reason,
    from: state.pausedFrom,
    share: state.share,
    elapsedMs: turn.now - state.stepStartedAt,
    ...detail,
  });
}

export function resume(turn: Turn): void {
  const { state } = turn;
  const to = state.pausedFrom ?? "progressing";
  turn.event("resumed", { to, pausedReason: state.pausedReason, share: state.share });
  state.status = to;
  state.stepStartedAt = turn.now;
  delete state.pausedFrom;
  delete state.pausedReason;
}

/** The status a paused deployment returns to, or its own status when not paused. */
export function underlying(state: DeploymentState) {
  return state.status === "paused" ? (state.pausedFrom ?? "progressing") : state.status;
}
