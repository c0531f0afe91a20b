// One circuit breaker (per agent, or per agent+model): a pure state machine driven by an injected
// clock (every method takes `now`), serializable so the AgentHub can persist it in Durable Object
// storage and rebuild it after hibernation or eviction. The pool's set of them: circuit-breakers.ts.
//
// Why not cockatiel (4.0.0, the obvious library): its breakers read Date.now() directly (no clock to
// inject), move open -> half-open only inside execute(fn) (the scheduler needs a side-effect-free
// "may this agent take a request?"), wrap each call in a promise (our calls are frames on
// hibernatable sockets, settled by later events), count any non-failure, including a cancelled
// call, as a half-open success, and open on failures > threshold rather than >= rate after a
// minimum number of calls. Its toJSON()/initialState would have covered persistence; the rest
// would have been fought around. opossum is Node-only (EventEmitter, setTimeout-driven reset).
import { z } from "zod";
import { BreakerState as BreakerStates } from "../../schema/api.ts";

/** The public states (schema/api.ts is their one definition). */
export type BreakerState = z.infer<typeof BreakerStates>;

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
  state: BreakerStates.exclude(["half_open"]),
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
