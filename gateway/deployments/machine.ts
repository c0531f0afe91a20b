// Deployment strategies (immediate, blue-green, canary, rolling) as pure state machines: the
// controller's alarm calls advance() with what it observed, carries out the effects in order, and
// stores the state and events. Same state and observation twice: the second call changes nothing
// (reconciler-style), so a restart mid-step is safe. Any change of routeOf() yields a `publish`.
import { blueGreen } from "./blue-green.ts";
import { canary } from "./canary.ts";
import { immediate } from "./immediate.ts";
import { rolling } from "./rolling.ts";
import type { StrategyMachine } from "./strategy.ts";
import { readObservation, Turn } from "./turn.ts";
import {
  type CommandResult,
  type DeploymentCommand,
  type DeploymentSpec,
  type DeploymentState,
  isTerminal,
  type Observation,
  type RouteFields,
  type Strategy,
  type Transition,
} from "./types.ts";

export type {
  BlueGreenOptions,
  CanaryOptions,
  CheckedOptions,
  ImmediateOptions,
  OptionsOf,
  RollingOptions,
  StrategyOptions,
} from "./options.ts";
export { checkOptions, DEFAULT_OPTIONS, parseOptions } from "./options.ts";
export * from "./types.ts";

const MACHINES: { [S in Strategy]: StrategyMachine<S> } = {
  immediate,
  blue_green: blueGreen,
  canary,
  rolling,
};

function machineOf(spec: DeploymentSpec): StrategyMachine<Strategy> {
  return MACHINES[spec.strategy] as StrategyMachine<Strategy>;
}

/** Whether a strategy needs an active version to start from (canary and rolling compare or replace one). */
export function needsBaseline(strategy: Strategy): boolean {
  return MACHINES[strategy].needsBaseline;
}

/** What the routing table's RolloutRoute says for this deployment now; null when it is not in the table. */
export function routeOf(spec: DeploymentSpec, state: DeploymentState): RouteFields | null {
  return isTerminal(state.status) ? null : machineOf(spec).route(spec, state);
}

function sameRoute(a: RouteFields | null, b: RouteFields | null): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Adds `publish` when the route changed, unless the deployment ended (`end` republishes). */
function settle(spec: DeploymentSpec, before: DeploymentState, turn: Turn): Transition {
  if (!isTerminal(turn.state.status) && !sameRoute(routeOf(spec, before), routeOf(spec, turn.state))) {
    turn.effect({ kind: "publish" });
  }
  return turn.result();
}

/**
 * The first state of a deployment: preparing, with the rollout in the table at share 0 (`publish`).
 * With an observation, the first advance runs at once.
 */
export function startDeployment(spec: DeploymentSpec, now: number, observation?: Observation): Transition {
  const state: DeploymentState = {
    status: "preparing",
    phase: 0,
    share: 0,
    stepIndex: spec.strategy === "canary" ? -1 : 0,
    stepStartedAt: now,
    startedAt: now,
    endedAt: null,
    replicas: null,
    baselineAgents: null,
    steps: [],
  };
  const turn = new Turn(spec, state, now);
  turn.event("started", {
    strategy: spec.strategy,
    baseline: spec.baseline,
    candidate: spec.candidate,
    options: spec.options,
  });
  if (spec.baseline === null && machineOf(spec).needsBaseline) {
    turn.finish("failed", `a ${spec.strategy} deployment needs an active version to start from`);
    return turn.result();
  }
  turn.effect({ kind: "publish" });
  if (observation === undefined) return turn.result();
  const next = advance(spec, turn.state, observation);
  return {
    state: next.state,
    effects: [...turn.effects, ...next.effects.filter((e) => e.kind !== "publish")],
    events: [...turn.events, ...next.events],
  };
}

/** One reconciliation: what the deployment does given what the controller observed. Never throws. */
export function advance(spec: DeploymentSpec, state: DeploymentState, observation: Observation): Transition {
  const seen = readObservation(observation, state.stepStartedAt);
  const turn = new Turn(spec, state, seen.now);
  if (isTerminal(state.status)) return turn.result();
  machineOf(spec).advance(turn, seen);
  return settle(spec, state, turn);
}

/** A human's command (actor: the user's subject). Refused with a stable code when it does not apply. */
export function applyCommand(
  spec: DeploymentSpec,
  state: DeploymentState,
  command: DeploymentCommand,
  actor: string,
  now: number,
): CommandResult {
  if (isTerminal(state.status)) {
    return {
      ok: false,
      code: "DEPLOYMENT_NOT_RUNNING",
      message: `the deployment has ended (${state.status})`,
    };
  }
  if (command === "resume" && state.status !== "paused") {
    return {
      ok: false,
      code: "DEPLOYMENT_NOT_PAUSED",
      message: `the deployment is ${state.status}, not paused`,
    };
  }
  if (command === "pause" && state.status === "paused") {
    return { ok: false, code: "COMMAND_NOT_ALLOWED", message: "the deployment is already paused" };
  }
  const turn = new Turn(spec, state, now, actor);
  const refusal = machineOf(spec).command(turn, command);
  if (refusal) return { ok: false, ...refusal };
  return { ok: true, ...settle(spec, state, turn) };
}
