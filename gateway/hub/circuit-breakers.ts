// Every circuit breaker of a pool, keyed by agent and agent+model, with the bookkeeping the
// AgentHub needs to persist them cheaply: transitions reported at once, counts flushed lazily.
import { isModelId, type ModelId } from "../../schema/model-id.ts";
import {
  type AttemptOutcome,
  type BreakerPolicy,
  BreakerRecord,
  type BreakerState,
  type BreakerStats,
  CircuitBreaker,
} from "./circuit-breaker.ts";

export interface BreakerStatus extends BreakerStats {
  agentId: string;
  model: ModelId | null;
  state: BreakerState;
  openedAt: number | null;
  lastTransitionAt: number;
  nextAttemptAt: number | null;
}

/** What a dispatch attempt holds so its outcome reaches the right breakers and probe rounds. */
export interface BreakerTicket {
  agentId: string;
  model: ModelId;
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
export function breakerKey(agentId: string, model: ModelId | null): string {
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
  readonly #breakers = new Map<string, { agentId: string; model: ModelId | null; breaker: CircuitBreaker }>();
  readonly #dirty = new Set<string>();

  constructor(
    readonly policy: BreakerPolicy,
    private readonly onTransition: (change: BreakerChange) => void = () => {},
    /** Called when the first count change since the last flush() happens (to schedule one). */
    private readonly onDirty: () => void = () => {},
  ) {}

  /**
   * Loads persisted records (after a wake); malformed ones are skipped, and so are breakers that
   * already exist in memory (a restore retried after the hub started serving: memory is newer).
   */
  restore(records: Iterable<unknown>, now: number): number {
    const inMemory = new Set(this.#breakers.keys());
    let loaded = 0;
    for (const raw of records) {
      const parsed = BreakerRecord.safeParse(raw);
      if (!parsed.success) continue;
      const { agentId } = parsed.data;
      // A record of a model whose name is no model id (written by a build without the rule).
      const model =
        parsed.data.model === null ? null : isModelId(parsed.data.model) ? parsed.data.model : undefined;
      if (model === undefined) continue;
      const key = breakerKey(agentId, model);
      if (inMemory.has(key)) continue;
      this.#breakers.set(key, {
        agentId,
        model,
        breaker: new CircuitBreaker(this.policy, now, parsed.data),
      });
      loaded += 1;
    }
    return loaded;
  }

  /** May `agentId` take a request for `model` now? */
  allows(agentId: string, model: ModelId, now: number): boolean {
    return (
      (this.#get(agentId, null)?.allows(now) ?? true) && (this.#get(agentId, model)?.allows(now) ?? true)
    );
  }

  /** Open (not half-open) for the agent or the agent+model: this agent cannot serve the model. */
  isOpen(agentId: string, model: ModelId, now: number): boolean {
    return (
      this.#get(agentId, null)?.state(now) === "open" || this.#get(agentId, model)?.state(now) === "open"
    );
  }

  /** The agent-level breaker's state (closed when there is none yet). */
  agentState(agentId: string, now: number): BreakerState {
    return this.#get(agentId, null)?.state(now) ?? "closed";
  }

  /** A request is sent to `agentId` for `model`: creates breakers on first use, takes probe slots. */
  admit(agentId: string, model: ModelId, now: number): BreakerTicket {
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
    model: ModelId | null,
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

  #get(agentId: string, model: ModelId | null): CircuitBreaker | undefined {
    return this.#breakers.get(breakerKey(agentId, model))?.breaker;
  }

  #getOrCreate(agentId: string, model: ModelId | null, now: number): CircuitBreaker {
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
