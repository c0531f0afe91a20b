// Pure scheduling for one pool: which agent takes a request, whether a model can be served at
// all, the bounded per-model FIFO queue with deadlines, and Retry-After. No I/O, no clocks.
import type { ModelId } from "../../schema/model-id.ts";

export interface AgentLoad {
  id: string;
  models: ReadonlySet<ModelId>;
  capacity: number;
  inFlight: number;
  draining: boolean;
  /** Recent time to first chunk (EWMA), null until the agent served something. */
  latencyMs: number | null;
}

const serves = (agent: AgentLoad, model: ModelId) => agent.models.has(model) && !agent.draining;

/**
 * Among agents serving `model`, not draining and below capacity, the one with the lowest
 * inFlight/capacity; ties go to the lower recent latency (unknown counts as 0, so new agents get
 * tried), then to the lower id so the choice is stable.
 */
export function pickAgent<A extends AgentLoad>(
  agents: Iterable<A>,
  model: ModelId,
  exclude: ReadonlySet<string> = new Set(),
): A | null {
  let best: A | null = null;
  for (const agent of agents) {
    if (!serves(agent, model) || agent.inFlight >= agent.capacity || exclude.has(agent.id)) continue;
    if (best === null || compareLoad(agent, best) < 0) best = agent;
  }
  return best;
}

function compareLoad(a: AgentLoad, b: AgentLoad): number {
  const byLoad = a.inFlight / a.capacity - b.inFlight / b.capacity;
  if (byLoad !== 0) return byLoad;
  const byLatency = (a.latencyMs ?? 0) - (b.latencyMs ?? 0);
  if (byLatency !== 0) return byLatency;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

export type ModelAvailability =
  /** Some usable agent serves it (it may still be busy: then the request queues). */
  | "servable"
  /** Known to the pool, but no connected, non-draining agent serves it now. */
  | "unavailable"
  /** Never seen on any agent. */
  | "unknown";

export function modelAvailability(
  model: ModelId,
  agents: Iterable<AgentLoad>,
  knownModels: { has(model: ModelId): boolean },
): ModelAvailability {
  for (const agent of agents) if (serves(agent, model)) return "servable";
  return knownModels.has(model) ? "unavailable" : "unknown";
}

/** Agents that could ever take this request (ignoring current load). */
export function hasCandidate(
  agents: Iterable<AgentLoad>,
  model: ModelId,
  exclude: ReadonlySet<string>,
): boolean {
  for (const agent of agents) if (serves(agent, model) && !exclude.has(agent.id)) return true;
  return false;
}

/** Total slots for `model` across usable agents. */
export function slotsFor(agents: Iterable<AgentLoad>, model: ModelId): number {
  let slots = 0;
  for (const agent of agents) if (serves(agent, model)) slots += agent.capacity;
  return slots;
}

export const RETRY_AFTER_MAX_SECONDS = 60;

/**
 * Seconds until a rejected caller has a fair chance: the work ahead of it (queued requests times
 * recent service time) spread over the slots serving the model; at least 1, at most 60.
 */
export function retryAfterSeconds({
  queued,
  slots,
  serviceTimeMs,
}: {
  queued: number;
  slots: number;
  serviceTimeMs: number | null;
}): number {
  const perRequest = serviceTimeMs ?? 1000;
  const seconds = Math.ceil((queued * perRequest) / Math.max(1, slots) / 1000);
  return Math.min(RETRY_AFTER_MAX_SECONDS, Math.max(1, seconds));
}

/** Exponentially weighted moving average; the first sample seeds it. */
export function ewma(previous: number | null, sample: number, alpha = 0.2): number {
  return previous === null ? sample : previous + alpha * (sample - previous);
}

export interface Queued {
  model: ModelId;
  /** Epoch ms after which the request leaves the queue with QUEUE_TIMEOUT. */
  deadline: number;
}

/** Bounded FIFO queues, one per model, so one hot model cannot starve the others. */
export class RequestQueue<T extends Queued> {
  readonly #byModel = new Map<ModelId, T[]>();

  constructor(readonly maxPerModel: number) {}

  get size(): number {
    let n = 0;
    for (const items of this.#byModel.values()) n += items.length;
    return n;
  }

  sizeFor(model: ModelId): number {
    return this.#byModel.get(model)?.length ?? 0;
  }

  /** Appends unless the model's queue is full; returns whether it was queued. */
  push(item: T): boolean {
    const items = this.#byModel.get(item.model) ?? [];
    if (items.length >= this.maxPerModel) return false;
    items.push(item);
    this.#byModel.set(item.model, items);
    return true;
  }

  /** Puts an item back at the head (a retry that already waited its turn); ignores the bound. */
  pushFront(item: T): void {
    const items = this.#byModel.get(item.model) ?? [];
    items.unshift(item);
    this.#byModel.set(item.model, items);
  }

  /**
   * Puts an item that was already admitted (a request re-routed to another model) in its place by
   * deadline, so it keeps the turn it waited for; ignores the bound.
   */
  insert(item: T): void {
    const items = this.#byModel.get(item.model) ?? [];
    const at = items.findIndex((queued) => queued.deadline > item.deadline);
    items.splice(at < 0 ? items.length : at, 0, item);
    this.#byModel.set(item.model, items);
  }

  remove(item: T): boolean {
    const items = this.#byModel.get(item.model);
    const index = items?.indexOf(item) ?? -1;
    if (items === undefined || index < 0) return false;
    items.splice(index, 1);
    if (items.length === 0) this.#byModel.delete(item.model);
    return true;
  }

  /** Items of one model in FIFO order (a copy: callers may remove while iterating). */
  itemsFor(model: ModelId): T[] {
    return [...(this.#byModel.get(model) ?? [])];
  }

  models(): ModelId[] {
    return [...this.#byModel.keys()];
  }

  /**
   * Models with queued items, the one whose head has the earliest deadline first (each item's
   * deadline is when it was queued plus the queue timeout, so: the longest waiting first).
   */
  modelsByHead(): ModelId[] {
    const head = (model: ModelId) => this.#byModel.get(model)?.[0]?.deadline ?? Number.POSITIVE_INFINITY;
    return this.models().sort((a, b) => head(a) - head(b));
  }

  /** Removes and returns every item whose deadline is at or before `now`, oldest first. */
  takeExpired(now: number): T[] {
    const expired: T[] = [];
    for (const [model, items] of this.#byModel) {
      const keep = items.filter((item) => {
        if (item.deadline > now) return true;
        expired.push(item);
        return false;
      });
      if (keep.length === 0) this.#byModel.delete(model);
      else this.#byModel.set(model, keep);
    }
    return expired.sort((a, b) => a.deadline - b.deadline);
  }

  nextDeadline(): number | null {
    let next: number | null = null;
    for (const items of this.#byModel.values()) {
      for (const item of items) if (next === null || item.deadline < next) next = item.deadline;
    }
    return next;
  }

  countsByModel(): Record<string, number> {
    return Object.fromEntries([...this.#byModel].map(([model, items]) => [model, items.length]));
  }
}
