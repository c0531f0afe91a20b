// Circuit breakers for one pool, per agent and per agent+model: a pure state machine driven by an
// injected clock (every method takes `now`), serializable so the AgentHub can persist it in Durable
// Object storage and rebuild it after hibernation or eviction.
//
// Why not cockatiel (4.0.0, the obvious library): its breakers read Date.now() directly (no clock to
// inject), move open -> half-open only inside execute(fn) (the scheduler needs a side-effect-free
// "may this agent take a request?"), wrap each call in a promise (our calls are frames on
// hibernatable sockets, settled by later events), count any non-failure, including a cancelled
// call, as a half-open success, and open on failures > threshold rather than >= rate after a
// minimum number of calls. Its toJSON()/initialState would have covered persistence; the rest
// would have been fought around. opossum is Node-only (EventEmitter, setTimeout-driven reset).
import { z } from "zod";

export type BreakerState = "closed" | "open" | "half_open";

export interface BreakerPolicy {
  /** Rolling window over which calls and failures are counted. */
  windowMs: number;
  /** Calls (successes + failures) in the window before the failure rate is judged. */
  minCalls: number;
  /** Failure rate (0..1] at or above which the breaker opens. */
  failureRate: number;
  /** Time an open breaker waits before letting probes through (half-open). */
  cooldownMs: number;
  /** Concurrent requests a half-open breaker lets through; that many successes close it. */
  halfOpenProbes: number;
}

/** How one dispatch attempt ended, as far as breakers care. */
export type AttemptOutcome =
  /** The agent finished the generation. */
  | "success"
  /** The agent itself failed: its socket closed, or it timed out (first chunk, idle). */
  | "agent_failure"
  /** The agent answered, but this model failed on it (load failure, engine error). */
  | "model_failure"
  /** Says nothing about health: the caller left, the request's own deadline passed, a busy agent. */
  | "neutral";

/** Rolling-window counts kept in buckets, so memory stays bounded however busy an agent is. */
const BUCKETS = 12;

const Bucket = z.tuple([z.number(), z.number().int().nonnegative(), z.number().int().nonnegative()]);

/** What is persisted per breaker (probes in flight are not: requests do not survive a restart). */
export const BreakerRecord = z.object({
  agentId: z.string().min(1),
  model: z.string().min(1).nullable(),
  /** "half_open" is never stored: it is derived from openedAt + cooldown. */
  state: z.enum(["closed", "open"]),
  /** [bucket start, successes, failures]. */
  buckets: z.array(Bucket).max(BUCKETS),
  openedAt: z.number().nullable(),
  lastTransitionAt: z.number(),
  /** Each re-opening starts a new half-open round; probes of an older round are not counted. */
  round: z.number().int().nonnegative(),
});
export type BreakerRecord = z.infer<typeof BreakerRecord>;

export interface BreakerStats {
  failures: number;
  successes: number;
  calls: number;
  failureRate: number;
}

/** One breaker. All time comes in as `now`, so tests drive it with a fake clock. */
export class CircuitBreaker {
  #state: "closed" | "open";
  #buckets: [number, number, number][];
  #openedAt: number | null;
  #lastTransitionAt: number;
  #round: number;
  /** Half-open round bookkeeping (in memory only). */
  #probesInFlight = 0;
  #probeSuccesses = 0;

  constructor(
    readonly policy: BreakerPolicy,
    now: number,
    restored?: Pick<BreakerRecord, "state" | "buckets" | "openedAt" | "lastTransitionAt" | "round">,
  ) {
    this.#state = restored?.state ?? "closed";
    this.#buckets = restored?.buckets.map((b) => [...b] as [number, number, number]) ?? [];
    this.#openedAt = restored?.openedAt ?? null;
    this.#lastTransitionAt = restored?.lastTransitionAt ?? now;
    this.#round = restored?.round ?? 0;
    if (this.#state === "open" && this.#openedAt === null) this.#openedAt = this.#lastTransitionAt;
  }

  /** The state at `now`: an open breaker whose cool-down has passed is half-open. */
  state(now: number): BreakerState {
    if (this.#state === "closed") return "closed";
    return now >= this.nextAttemptAt() ? "half_open" : "open";
  }

  /** When an open breaker lets probes through (meaningful only while open or half-open). */
  nextAttemptAt(): number {
    return (this.#openedAt ?? this.#lastTransitionAt) + this.policy.cooldownMs;
  }

  get openedAt(): number | null {
    return this.#state === "closed" ? null : this.#openedAt;
  }

  lastTransitionAt(now: number): number {
    return this.state(now) === "half_open" ? this.nextAttemptAt() : this.#lastTransitionAt;
  }

  /** Whether a new request may go through now (closed, or half-open with a probe slot free). */
  allows(now: number): boolean {
    const state = this.state(now);
    if (state === "closed") return true;
    if (state === "open") return false;
    return this.#probesInFlight < this.policy.halfOpenProbes;
  }

  /**
   * A request goes through. Returns the half-open round it probes, or null when it is an ordinary
   * call (closed). Callers check allows() first.
   */
  begin(now: number): number | null {
    if (this.state(now) !== "half_open") return null;
    this.#probesInFlight += 1;
    return this.#round;
  }

  /**
   * Records how a call ended. `probe` is what begin() returned. Returns the new state when this
   * outcome changed it (closed -> open, half-open -> open or closed), else null.
   */
  record(outcome: "success" | "failure" | "neutral", probe: number | null, now: number): BreakerState | null {
    // Every transition starts a new round, so a probe of an earlier round is an ordinary late call.
    const isProbe = probe !== null && probe === this.#round && this.#state === "open";
    if (isProbe) this.#probesInFlight = Math.max(0, this.#probesInFlight - 1);
    if (outcome === "neutral") return null;
    this.#count(outcome === "success", now);
    if (isProbe) {
      if (outcome === "failure") return this.#open(now);
      this.#probeSuccesses += 1;
      if (this.#probeSuccesses >= this.policy.halfOpenProbes) return this.#close(now);
      return null;
    }
    if (this.#state === "closed" && outcome === "failure" && this.#shouldOpen(now)) return this.#open(now);
    return null;
  }

  stats(now: number): BreakerStats {
    let successes = 0;
    let failures = 0;
    for (const [start, ok, failed] of this.#buckets) {
      if (start <= now - this.policy.windowMs) continue;
      successes += ok;
      failures += failed;
    }
    const calls = successes + failures;
    return { failures, successes, calls, failureRate: calls === 0 ? 0 : failures / calls };
  }

  /** Back to closed with empty counts (an operator's reset). */
  reset(now: number): void {
    this.#close(now);
  }

  /** Nothing worth keeping: closed and no calls in the window. */
  idle(now: number): boolean {
    return this.#state === "closed" && this.stats(now).calls === 0;
  }

  toRecord(agentId: string, model: string | null, now: number): BreakerRecord {
    this.#prune(now);
    return {
      agentId,
      model,
      state: this.#state,
      buckets: this.#buckets.map((b) => [...b] as [number, number, number]),
      openedAt: this.#openedAt,
      lastTransitionAt: this.#lastTransitionAt,
      round: this.#round,
    };
  }

  #shouldOpen(now: number): boolean {
    const { calls, failureRate } = this.stats(now);
    return calls >= this.policy.minCalls && failureRate >= this.policy.failureRate;
  }

  #open(now: number): BreakerState {
    this.#state = "open";
    this.#openedAt = now;
    this.#lastTransitionAt = now;
    this.#round += 1;
    this.#probesInFlight = 0;
    this.#probeSuccesses = 0;
    return "open";
  }

  #close(now: number): BreakerState {
    this.#state = "closed";
    this.#openedAt = null;
    this.#lastTransitionAt = now;
    // A fresh start: the failures that opened it must not re-open it on the next single failure.
    this.#buckets = [];
    this.#round += 1;
    this.#probesInFlight = 0;
    this.#probeSuccesses = 0;
    return "closed";
  }

  #count(success: boolean, now: number): void {
    const width = Math.max(1, Math.ceil(this.policy.windowMs / BUCKETS));
    const start = now - (now % width);
    let bucket = this.#buckets.find((b) => b[0] === start);
    if (bucket === undefined) {
      bucket = [start, 0, 0];
      this.#buckets.push(bucket);
      this.#prune(now);
    }
    if (success) bucket[1] += 1;
    else bucket[2] += 1;
  }

  #prune(now: number): void {
    this.#buckets = this.#buckets
      .filter((b) => b[0] > now - this.policy.windowMs)
      .sort((a, b) => a[0] - b[0])
      .slice(-BUCKETS - 1);
  }
}

/** One row of GET /circuit-breaker/status. */
export interface BreakerStatus extends BreakerStats {
  agentId: string;
  model: string | null;
  state: BreakerState;
  openedAt: number | null;
  lastTransitionAt: number;
  nextAttemptAt: number | null;
}

/** What a dispatch attempt holds so its outcome reaches the right breakers and probe rounds. */
export interface BreakerTicket {
  agentId: string;
  model: string;
  agentProbe: number | null;
  modelProbe: number | null;
}

export interface BreakerSelector {
  agentId?: string;
  model?: string;
}

export interface BreakerChange {
  key: string;
  /** null: the breaker was dropped (idle, agent gone) and its stored record should be deleted. */
  record: BreakerRecord | null;
  /** True for state changes, which are persisted at once; counts alone are flushed lazily. */
  transition: boolean;
}

/** Storage key of a breaker (agent: model null). */
export function breakerKey(agentId: string, model: string | null): string {
  return `breaker:${JSON.stringify([agentId, model])}`;
}
export const BREAKER_KEY_PREFIX = "breaker:";

/**
 * Every breaker of a pool. Agent breakers count agent failures (disconnects, timeouts) and
 * successes; agent+model breakers count model failures and successes. A request may go to an agent
 * only when both allow it. Changes are reported through `onChange` (transitions, at once) and
 * collected as dirty keys for the owner to flush cheaply (flush()).
 */
export class CircuitBreakers {
  readonly #breakers = new Map<string, { agentId: string; model: string | null; breaker: CircuitBreaker }>();
  readonly #dirty = new Set<string>();

  constructor(
    readonly policy: BreakerPolicy,
    private readonly onTransition: (change: BreakerChange) => void = () => {},
    /** Called when the first count change since the last flush() happens (to schedule one). */
    private readonly onDirty: () => void = () => {},
  ) {}

  /** Loads persisted records (after a wake); malformed ones are skipped. */
  restore(records: Iterable<unknown>, now: number): number {
    let loaded = 0;
    for (const raw of records) {
      const parsed = BreakerRecord.safeParse(raw);
      if (!parsed.success) continue;
      const { agentId, model } = parsed.data;
      this.#breakers.set(breakerKey(agentId, model), {
        agentId,
        model,
        breaker: new CircuitBreaker(this.policy, now, parsed.data),
      });
      loaded += 1;
    }
    return loaded;
  }

  /** May `agentId` take a request for `model` now? */
  allows(agentId: string, model: string, now: number): boolean {
    return (
      (this.#get(agentId, null)?.allows(now) ?? true) && (this.#get(agentId, model)?.allows(now) ?? true)
    );
  }

  /** Open (not half-open) for the agent or the agent+model: this agent cannot serve the model. */
  isOpen(agentId: string, model: string, now: number): boolean {
    return (
      this.#get(agentId, null)?.state(now) === "open" || this.#get(agentId, model)?.state(now) === "open"
    );
  }

  /** The agent-level breaker's state (closed when there is none yet). */
  agentState(agentId: string, now: number): BreakerState {
    return this.#get(agentId, null)?.state(now) ?? "closed";
  }

  /** A request is sent to `agentId` for `model`: creates breakers on first use, takes probe slots. */
  admit(agentId: string, model: string, now: number): BreakerTicket {
    return {
      agentId,
      model,
      agentProbe: this.#getOrCreate(agentId, null, now).begin(now),
      modelProbe: this.#getOrCreate(agentId, model, now).begin(now),
    };
  }

  /** Records an attempt's outcome on the breakers it concerns; the other one just frees its probe. */
  settle(ticket: BreakerTicket, outcome: AttemptOutcome, now: number): void {
    const forAgent = outcome === "success" ? "success" : outcome === "agent_failure" ? "failure" : "neutral";
    const forModel = outcome === "success" ? "success" : outcome === "model_failure" ? "failure" : "neutral";
    this.#record(ticket.agentId, null, forAgent, ticket.agentProbe, now);
    this.#record(ticket.agentId, ticket.model, forModel, ticket.modelProbe, now);
  }

  status(now: number): BreakerStatus[] {
    return [...this.#breakers.values()]
      .map(({ agentId, model, breaker }) => {
        const state = breaker.state(now);
        return {
          agentId,
          model,
          state,
          ...breaker.stats(now),
          openedAt: breaker.openedAt,
          lastTransitionAt: breaker.lastTransitionAt(now),
          nextAttemptAt: state === "closed" ? null : breaker.nextAttemptAt(),
        };
      })
      .sort((a, b) => compareText(a.agentId, b.agentId) || compareText(a.model ?? "", b.model ?? ""));
  }

  /**
   * Resets the selected breakers to closed: all ({}), one agent's (agent and its agent+model
   * breakers: {agentId}), or one agent+model ({agentId, model}). Returns how many, or null when
   * the selector names breakers that do not exist.
   */
  reset(selector: BreakerSelector, now: number): number | null {
    const selected = [...this.#breakers].filter(
      ([, b]) =>
        (selector.agentId === undefined || b.agentId === selector.agentId) &&
        (selector.model === undefined || b.model === selector.model),
    );
    if (selected.length === 0 && selector.agentId !== undefined) return null;
    for (const [key, b] of selected) {
      b.breaker.reset(now);
      this.#dirty.delete(key);
      this.onTransition({ key, record: b.breaker.toRecord(b.agentId, b.model, now), transition: true });
    }
    return selected.length;
  }

  /** The earliest moment an open breaker turns half-open (to wake queued requests), or null. */
  nextHalfOpenAt(now: number): number | null {
    let next: number | null = null;
    for (const { breaker } of this.#breakers.values()) {
      if (breaker.state(now) !== "open") continue;
      const at = breaker.nextAttemptAt();
      if (next === null || at < next) next = at;
    }
    return next;
  }

  /**
   * Count changes not yet persisted, plus breakers to drop: idle ones (closed, nothing in the
   * window) of agents that are not connected. Clears the dirty set.
   */
  flush(now: number, connected: (agentId: string) => boolean): BreakerChange[] {
    const changes: BreakerChange[] = [];
    for (const [key, b] of [...this.#breakers]) {
      if (!connected(b.agentId) && b.breaker.idle(now)) {
        this.#breakers.delete(key);
        this.#dirty.delete(key);
        changes.push({ key, record: null, transition: false });
      }
    }
    for (const key of this.#dirty) {
      const b = this.#breakers.get(key);
      if (b) changes.push({ key, record: b.breaker.toRecord(b.agentId, b.model, now), transition: false });
    }
    this.#dirty.clear();
    return changes;
  }

  get size(): number {
    return this.#breakers.size;
  }

  /** Counts changed since the last flush(). */
  get dirty(): boolean {
    return this.#dirty.size > 0;
  }

  #record(
    agentId: string,
    model: string | null,
    outcome: "success" | "failure" | "neutral",
    probe: number | null,
    now: number,
  ): void {
    const key = breakerKey(agentId, model);
    const entry = this.#breakers.get(key);
    if (entry === undefined) return;
    const transition = entry.breaker.record(outcome, probe, now);
    if (transition !== null) {
      this.#dirty.delete(key);
      this.onTransition({ key, record: entry.breaker.toRecord(agentId, model, now), transition: true });
    } else if (outcome !== "neutral") {
      const wasClean = this.#dirty.size === 0;
      this.#dirty.add(key);
      if (wasClean) this.onDirty();
    }
  }

  #get(agentId: string, model: string | null): CircuitBreaker | undefined {
    return this.#breakers.get(breakerKey(agentId, model))?.breaker;
  }

  #getOrCreate(agentId: string, model: string | null, now: number): CircuitBreaker {
    const key = breakerKey(agentId, model);
    let entry = this.#breakers.get(key);
    if (entry === undefined) {
      entry = { agentId, model, breaker: new CircuitBreaker(this.policy, now) };
      this.#breakers.set(key, entry);
    }
    return entry.breaker;
  }
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
