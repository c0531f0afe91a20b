// The pool's request counters (outcomes, retries, fallbacks, tokens; in all and per model). They
// live in the hub, which sees every request, and reach Durable Object storage on a flush cycle
// (the AgentHub's alarm), so an eviction or a redeploy loses at most one flush interval of counts.
import { HubMetrics, RequestOutcome } from "../../schema/hub.ts";
import { describeError, log } from "../log.ts";

/** Models counted one by one; beyond this, further models are counted under OTHER_MODELS. */
export const MAX_COUNTED_MODELS = 256;
export const OTHER_MODELS = "(other)";
export const METRICS_STORAGE_KEY = "metrics";

type ModelCounts = HubMetrics["byModel"][string];

function emptyOutcomes(): Record<RequestOutcome, number> {
  return {
    ok: 0,
    upstream_error: 0,
    cancelled: 0,
    queue_full: 0,
    queue_timeout: 0,
    timeout: 0,
    slow_consumer: 0,
    no_agent: 0,
    model_not_found: 0,
  };
}

/**
 * Adds `from`'s counts into `into` (a restore onto counts taken before it, or the pools of
 * GET /agents summed). Per-model counts are merged by model, unbounded: callers sum bounded inputs.
 */
export function addMetrics(into: HubMetrics, from: HubMetrics): void {
  addOutcomes(into.requests, from.requests);
  into.retries += from.retries;
  into.fallbacks += from.fallbacks;
  into.tokens.prompt += from.tokens.prompt;
  into.tokens.completion += from.tokens.completion;
  for (const [model, counts] of Object.entries(from.byModel)) {
    const sum = into.byModel[model] ?? { requests: emptyOutcomes(), tokens: { prompt: 0, completion: 0 } };
    into.byModel[model] = sum;
    addOutcomes(sum.requests, counts.requests);
    sum.tokens.prompt += counts.tokens.prompt;
    sum.tokens.completion += counts.tokens.completion;
  }
}

function addOutcomes(into: Record<RequestOutcome, number>, from: Record<RequestOutcome, number>): void {
  for (const outcome of RequestOutcome.options) into[outcome] += from[outcome] ?? 0;
}

export function emptyMetrics(): HubMetrics {
  return {
    requests: emptyOutcomes(),
    retries: 0,
    fallbacks: 0,
    tokens: { prompt: 0, completion: 0 },
    byModel: {},
  };
}

export class HubCounters {
  #metrics: HubMetrics = emptyMetrics();
  /** Counted since the last flush. */
  #dirty = false;

  /** `onDirty`: the first count since the last flush (the owner schedules one). */
  constructor(private readonly onDirty: () => void = () => {}) {}

  get dirty(): boolean {
    return this.#dirty;
  }

  /** A copy: callers (the snapshot RPC) must not see later counts change it. */
  snapshot(): HubMetrics {
    return structuredClone(this.#metrics);
  }

  /** `model` is the model that answered, or the one asked for when none did (null: none named). */
  outcome(outcome: RequestOutcome, model: string | null): void {
    this.#metrics.requests[outcome] += 1;
    if (model !== null) this.#model(model).requests[outcome] += 1;
    this.#changed();
  }

  tokens(model: string, prompt: number, completion: number): void {
    this.#metrics.tokens.prompt += prompt;
    this.#metrics.tokens.completion += completion;
    const counts = this.#model(model);
    counts.tokens.prompt += prompt;
    counts.tokens.completion += completion;
    this.#changed();
  }

  retry(): void {
    this.#metrics.retries += 1;
    this.#changed();
  }

  fallback(): void {
    this.#metrics.fallbacks += 1;
    this.#changed();
  }

  #changed(): void {
    if (this.#dirty) return;
    this.#dirty = true;
    this.onDirty();
  }

  /** What to write now (null when nothing changed); marks the counters clean. */
  flush(): HubMetrics | null {
    if (!this.#dirty) return null;
    this.#dirty = false;
    return this.snapshot();
  }

  /**
   * Counters from storage, added to what was counted before the restore finished (a wake answers
   * requests only after the restore, but an explicit restore in tests may come later).
   */
  restore(stored: unknown): void {
    if (stored === undefined) return;
    const parsed = HubMetrics.safeParse(stored);
    if (!parsed.success) {
      log("error", "stored hub metrics are malformed; counting from zero", describeError(parsed.error));
      return;
    }
    const current = this.#metrics;
    this.#metrics = parsed.data;
    addMetrics(this.#metrics, current);
  }

  #model(model: string): ModelCounts {
    const byModel = this.#metrics.byModel;
    let counts = byModel[model];
    if (counts === undefined) {
      const key = Object.keys(byModel).length >= MAX_COUNTED_MODELS ? OTHER_MODELS : model;
      counts = byModel[key] ??= { requests: emptyOutcomes(), tokens: { prompt: 0, completion: 0 } };
    }
    return counts;
  }
}
