// A fake clock and a driver for the deployment state machines (gateway/deployments): builds specs
// with defaults applied, fills observations, keeps every effect and event, and checks that each
// step is idempotent (the same observation again changes nothing).
import { expect } from "vitest";
import {
  advance,
  applyCommand,
  type DeploymentCommand,
  type DeploymentEvent,
  type DeploymentSpec,
  type DeploymentState,
  type Effect,
  type Observation,
  parseOptions,
  routeOf,
  type Strategy,
  startDeployment,
  type Transition,
} from "../../gateway/deployments/machine.ts";

export const T0 = 1_800_000_000_000;
export const SECOND = 1000;
export const MINUTE = 60 * SECOND;

export function makeSpec(
  strategy: Strategy,
  options: Record<string, unknown> = {},
  fields: Partial<DeploymentSpec> = {},
): DeploymentSpec {
  return {
    id: `dep-${strategy}`,
    model: "m",
    baseline: "1.0.0",
    candidate: "2.0.0",
    strategy,
    options: parseOptions(strategy, options),
    createdAt: T0,
    ...fields,
  };
}

export type PartialObservation = Partial<Omit<Observation, "a" | "b" | "requests">> & {
  a?: Partial<Observation["a"]>;
  b?: Partial<Observation["b"]>;
  requests?: Partial<Observation["requests"]>;
};

export function observation(now: number, partial: PartialObservation = {}): Observation {
  return {
    ...partial,
    now,
    a: { loaded: [], ...partial.a },
    b: { loaded: [], loading: [], failed: [], ...partial.b },
    requests: { a: 0, b: 0, ...partial.requests },
  };
}

export const kinds = (items: { kind: string }[]) => items.map((item) => item.kind);

/** Runs one deployment against a fake clock. */
export class Driver {
  now = T0;
  state!: DeploymentState;
  readonly effects: Effect[] = [];
  readonly events: DeploymentEvent[] = [];
  last!: Transition;

  constructor(readonly spec: DeploymentSpec) {}

  start(partial?: PartialObservation): Transition {
    return this.#take(
      startDeployment(
        this.spec,
        this.now,
        partial === undefined ? undefined : observation(this.now, partial),
      ),
    );
  }

  /** Moves the clock by `ms` and advances once; checks the step is idempotent. */
  tick(ms: number, partial: PartialObservation = {}): Transition {
    this.now += ms;
    const seen = observation(this.now, partial);
    const step = this.#take(advance(this.spec, this.state, seen));
    expectIdempotent(this.spec, this.state, seen);
    return step;
  }

  command(command: DeploymentCommand, actor = "alice") {
    const result = applyCommand(this.spec, this.state, command, actor, this.now);
    if (result.ok) this.#take(result);
    return result;
  }

  route() {
    return routeOf(this.spec, this.state);
  }

  eventsOf(kind: string): DeploymentEvent[] {
    return this.events.filter((event) => event.kind === kind);
  }

  #take(step: Transition): Transition {
    // Stored in D1 as JSON: whatever the machine returns must survive the round trip.
    expect(JSON.parse(JSON.stringify(step.state))).toEqual(step.state);
    this.state = step.state;
    this.effects.push(...step.effects);
    this.events.push(...step.events);
    this.last = step;
    return step;
  }
}

export function expectIdempotent(spec: DeploymentSpec, state: DeploymentState, seen: Observation): void {
  const again = advance(spec, state, seen);
  expect(again.effects).toEqual([]);
  expect(again.events).toEqual([]);
  expect(again.state).toEqual(state);
}
