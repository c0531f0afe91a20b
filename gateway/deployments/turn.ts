// One decision of a deployment's state machine: a copy of the state to change, the effects and
// events it yields, and the reading of an observation that tolerates anything missing or odd
// (a missing field means "not ready yet", never an exception).
import type {
  DeploymentEvent,
  DeploymentEventKind,
  DeploymentSpec,
  DeploymentState,
  DeploymentStatus,
  Effect,
  Observation,
  Transition,
  Verdict,
} from "./types.ts";

export const CONTROLLER = "controller";

export class Turn<S extends DeploymentSpec = DeploymentSpec> {
  readonly state: DeploymentState;
  readonly effects: Effect[] = [];
  readonly events: DeploymentEvent[] = [];

  constructor(
    readonly spec: S,
    state: DeploymentState,
    readonly now: number,
    readonly actor: string = CONTROLLER,
  ) {
    this.state = structuredClone(state);
  }

  effect(effect: Effect): void {
    if (effect.kind === "publish" && this.effects.some((e) => e.kind === "publish")) return;
    this.effects.push(effect);
  }

  event(kind: DeploymentEventKind, detail: Record<string, unknown> = {}, actor = this.actor): void {
    this.events.push({ at: this.now, kind, actor, detail });
  }

  /** Ends the deployment: the rollout leaves the routing table. */
  finish(status: DeploymentStatus, reason: string, detail: Record<string, unknown> = {}): void {
    this.state.status = status;
    this.state.reason = reason;
    this.state.endedAt = this.now;
    // Users all on the candidate once it is active, none otherwise.
    this.state.share = status === "succeeded" ? 1 : 0;
    delete this.state.pausedFrom;
    delete this.state.pausedReason;
    const open = this.state.steps.at(-1);
    if (open && open.endedAt === null) open.endedAt = this.now;
    this.effect({ kind: "end" });
    this.event("ended", { status, reason, elapsedMs: this.now - this.state.startedAt, ...detail });
  }

  result(): Transition {
    return { state: this.state, effects: this.effects, events: this.events };
  }
}

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
}

function count(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? value : 0;
}

const VERDICTS: readonly Verdict[] = ["pass", "fail", "not_enough_data"];

/** An observation with every field present and well-typed. */
export interface Seen {
  now: number;
  phase: number | null;
  aLoaded: string[];
  bLoaded: string[];
  bLoading: string[];
  bFailed: { agentId: string; code: string; message: string }[];
  requests: { a: number; b: number };
  judgement: { verdict: Verdict; summary: unknown } | null;
  smoke: { ok: boolean; results: unknown[] } | null;
  agents: { id: string; holdsA: boolean; holdsB: boolean; busyA: boolean; healthy: boolean }[] | null;
}

export function readObservation(observation: Observation | undefined, fallbackNow: number): Seen {
  const o = (observation ?? {}) as Partial<Observation>;
  const now = typeof o.now === "number" && Number.isFinite(o.now) ? o.now : fallbackNow;
  const failed = Array.isArray(o.b?.failed) ? o.b.failed : [];
  const judgement =
    o.judgement && VERDICTS.includes(o.judgement.verdict)
      ? { verdict: o.judgement.verdict, summary: o.judgement.summary ?? null }
      : null;
  const smoke =
    o.smoke && typeof o.smoke.ok === "boolean"
      ? { ok: o.smoke.ok, results: Array.isArray(o.smoke.results) ? o.smoke.results : [] }
      : null;
  const agents = Array.isArray(o.agents)
    ? o.agents
        .filter((agent) => agent && typeof agent.id === "string")
        .map((agent) => ({
          id: agent.id,
          holdsA: agent.holdsA === true,
          holdsB: agent.holdsB === true,
          busyA: agent.busyA === true,
          healthy: agent.healthy === true,
        }))
    : null;
  return {
    now,
    phase: typeof o.phase === "number" ? o.phase : null,
    aLoaded: strings(o.a?.loaded),
    bLoaded: strings(o.b?.loaded),
    bLoading: strings(o.b?.loading),
    bFailed: failed
      .filter((f) => f && typeof f.agentId === "string")
      .map((f) => ({ agentId: f.agentId, code: String(f.code ?? ""), message: String(f.message ?? "") })),
    requests: { a: count(o.requests?.a), b: count(o.requests?.b) },
    judgement,
    smoke,
    agents,
  };
}

export interface CandidateLoad {
  ready: boolean;
  /** No agent holds or is loading b, and too few untried agents remain to reach `wanted`. */
  hopeless: boolean;
  detail: Record<string, unknown>;
}

/**
 * Whether b is loaded on `wanted` agents. Candidates for a load are the agents holding a and the
 * agents the observation lists; an agent that failed and is not retrying counts as tried.
 */
export function candidateLoad(seen: Seen, wanted: number): CandidateLoad {
  const loaded = new Set(seen.bLoaded);
  const loading = new Set(seen.bLoading.filter((id) => !loaded.has(id)));
  const failed = new Set(
    seen.bFailed.map((f) => f.agentId).filter((id) => !loaded.has(id) && !loading.has(id)),
  );
  const candidates = new Set([...seen.aLoaded, ...(seen.agents ?? []).map((agent) => agent.id)]);
  const untried = [...candidates].filter((id) => !loaded.has(id) && !loading.has(id) && !failed.has(id));
  const ready = loaded.size >= wanted;
  const hopeless = !ready && loading.size === 0 && failed.size > 0 && loaded.size + untried.length < wanted;
  return {
    ready,
    hopeless,
    detail: {
      wanted,
      loaded: [...loaded],
      loading: [...loading],
      failed: seen.bFailed.filter((f) => failed.has(f.agentId)),
    },
  };
}

/** How many agents b should prepare on: the option, else as many as hold a (at least 1). */
export function resolveReplicas(turn: Turn, seen: Seen, option: number | null): number {
  if (turn.state.baselineAgents === null) turn.state.baselineAgents = seen.aLoaded.length;
  if (turn.state.replicas === null) turn.state.replicas = option ?? Math.max(1, turn.state.baselineAgents);
  return turn.state.replicas;
}

/**
 * The preparing stage every strategy but rolling shares: b loads on `replicas` agents. True once
 * ready; a hopeless load or the timeout fails the deployment (nothing switched).
 */
export function awaitCandidate(turn: Turn, seen: Seen, replicas: number, timeoutMs: number): boolean {
  const load = candidateLoad(seen, replicas);
  const elapsedMs = turn.now - turn.state.stepStartedAt;
  if (load.ready) {
    turn.event("candidate_ready", { ...load.detail, elapsedMs });
    return true;
  }
  if (load.hopeless) {
    turn.event("load_failed", { ...load.detail, elapsedMs });
    turn.finish("failed", "the candidate failed to load on every agent that could hold it");
  } else if (elapsedMs >= timeoutMs) {
    turn.event("load_timeout", { ...load.detail, elapsedMs, timeoutMs });
    turn.finish("failed", `the candidate was not loaded on ${replicas} agent(s) within ${timeoutMs} ms`);
  }
  return false;
}
