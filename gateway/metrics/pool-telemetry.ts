// The pool's Prometheus counters and histograms (schema/monitoring.ts METRICS), counted by the hub
// as requests end: requests by status class, errors by code, latency, time to first token, queue
// wait, tokens, per agent, per rollout arm, retries and fallbacks. Model labels are bounded
// (MAX_LABELLED_MODELS per pool); the hub persists toJSON() on its flush cycle and restores it on
// a wake, so a count survives evictions and redeploys but for the last flush interval.
import type { RequestOutcome } from "../../schema/hub.ts";
import { parseModelId } from "../../schema/model-id.ts";
import {
  MAX_LABELLED_MODELS,
  type MetricFamily,
  type MetricName,
  OTHER_LABEL,
} from "../../schema/monitoring.ts";
import { CounterFamily, HistogramFamily } from "./series.ts";

export type StatusClass = "2xx" | "4xx" | "5xx";
export type StructuredOutcome = "valid" | "invalid";

/**
 * The status class a caller saw for an outcome: a cancellation is the caller's own (nginx's 499),
 * a full queue is 429, an unknown model 404; the rest are the service failing (503, 504, 502).
 * A stream that broke after its 200 counts as 5xx: the caller did not get its answer.
 */
export function statusClassOf(outcome: RequestOutcome): StatusClass {
  switch (outcome) {
    case "ok":
      return "2xx";
    case "cancelled":
    case "queue_full":
    case "model_not_found":
    case "slow_consumer":
      return "4xx";
    case "upstream_error":
    case "queue_timeout":
    case "timeout":
    case "no_agent":
      return "5xx";
  }
}

export interface RolloutLabels {
  id: string;
  kind: string;
  arm: string;
}

/** A request the hub finished or refused. */
export interface RequestRecord {
  /** The model id that answered, or the one asked for ("" when none was named). */
  model: string;
  route: string;
  outcome: RequestOutcome;
  /** The error code the caller got; null for success and cancellations. */
  code: string | null;
  /** The agent of the last attempt, when one was sent the request. */
  agent: string | null;
  latencyMs: number;
  ttftMs: number | null;
  /** Time in the hub's queue before the first dispatch (null: never dispatched). */
  queueWaitMs: number | null;
  promptTokens: number;
  completionTokens: number;
  rollout: RolloutLabels | null;
}

const COUNTERS = [
  "ml_inference_requests_total",
  "ml_inference_errors_total",
  "ml_inference_prompt_tokens_total",
  "ml_inference_generated_tokens_total",
  "ml_inference_agent_requests_total",
  "ml_inference_agent_generated_tokens_total",
  "ml_inference_retries_total",
  "ml_inference_fallbacks_total",
  "ml_inference_rollout_requests_total",
  "ml_inference_structured_outputs_total",
] as const satisfies readonly MetricName[];
const HISTOGRAMS = [
  "ml_inference_request_duration_seconds",
  "ml_inference_time_to_first_token_seconds",
  "ml_inference_queue_wait_seconds",
  "ml_inference_rollout_request_duration_seconds",
  "ml_inference_structured_output_attempts",
] as const satisfies readonly MetricName[];
type CounterName = (typeof COUNTERS)[number];
type HistogramName = (typeof HISTOGRAMS)[number];

const STORED_VERSION = 1;

export class PoolTelemetry {
  readonly #counters = new Map<CounterName, CounterFamily>(COUNTERS.map((n) => [n, new CounterFamily(n)]));
  readonly #histograms = new Map<HistogramName, HistogramFamily>(
    HISTOGRAMS.map((n) => [n, new HistogramFamily(n)]),
  );
  /** Model id -> [model, version] label values; at most MAX_LABELLED_MODELS ids get their own. */
  readonly #modelLabels = new Map<string, readonly [string, string]>();
  dirty = false;

  /** The model and version labels of a model id (bounded; the rest are OTHER_LABEL). */
  modelLabels(id: string): readonly [string, string] {
    let labels = this.#modelLabels.get(id);
    if (labels !== undefined) return labels;
    if (this.#modelLabels.size >= MAX_LABELLED_MODELS) return [OTHER_LABEL, ""];
    try {
      const { name, version } = parseModelId(id);
      labels = [name, version ?? ""];
    } catch {
      // "" (no model named) and "(unknown)" (refused as unknown) are not model ids: kept as they are.
      labels = [id === "" || id.startsWith("(") ? id : OTHER_LABEL, ""];
    }
    this.#modelLabels.set(id, labels);
    return labels;
  }

  #counter(name: CounterName): CounterFamily {
    return this.#counters.get(name) as CounterFamily;
  }

  #histogram(name: HistogramName): HistogramFamily {
    return this.#histograms.get(name) as HistogramFamily;
  }

  record(r: RequestRecord): void {
    const [model, version] = this.modelLabels(r.model);
    const status = statusClassOf(r.outcome);
    this.#counter("ml_inference_requests_total").add([model, version, r.route, status]);
    if (r.code !== null) this.#counter("ml_inference_errors_total").add([model, version, r.code, status]);
    this.#histogram("ml_inference_request_duration_seconds").observe(
      [model, version, r.route],
      r.latencyMs / 1000,
    );
    if (r.ttftMs !== null) {
      this.#histogram("ml_inference_time_to_first_token_seconds").observe([model, version], r.ttftMs / 1000);
    }
    if (r.queueWaitMs !== null) {
      this.#histogram("ml_inference_queue_wait_seconds").observe([model], r.queueWaitMs / 1000);
    }
    if (r.promptTokens > 0)
      this.#counter("ml_inference_prompt_tokens_total").add([model, version], r.promptTokens);
    if (r.completionTokens > 0) {
      this.#counter("ml_inference_generated_tokens_total").add([model, version], r.completionTokens);
    }
    if (r.agent !== null) {
      this.#counter("ml_inference_agent_requests_total").add([r.agent, status]);
      if (r.completionTokens > 0) {
        this.#counter("ml_inference_agent_generated_tokens_total").add([r.agent], r.completionTokens);
      }
    }
    if (r.rollout !== null) {
      const { id, kind, arm } = r.rollout;
      this.#counter("ml_inference_rollout_requests_total").add([model, id, kind, arm, status]);
      this.#histogram("ml_inference_rollout_request_duration_seconds").observe(
        [model, id, kind, arm],
        r.latencyMs / 1000,
      );
    }
    this.dirty = true;
  }

  retry(modelId: string): void {
    this.#counter("ml_inference_retries_total").add([this.modelLabels(modelId)[0]]);
    this.dirty = true;
  }

  fallback(modelId: string): void {
    this.#counter("ml_inference_fallbacks_total").add([this.modelLabels(modelId)[0]]);
    this.dirty = true;
  }

  /** A structured-output request's end: valid or not, after how many generations. */
  structured(modelId: string, outcome: StructuredOutcome, attempts: number): void {
    const [model, version] = this.modelLabels(modelId);
    this.#counter("ml_inference_structured_outputs_total").add([model, version, outcome]);
    this.#histogram("ml_inference_structured_output_attempts").observe([model, version], attempts);
    this.dirty = true;
  }

  /** One count, for tests and for the hub's own checks: `values` in label order without pool. */
  count(name: CounterName, values: readonly string[]): number {
    return this.#counter(name).get(values);
  }

  families(pool: string): MetricFamily[] {
    return [
      ...[...this.#counters.values()].map((f) => f.family(pool)),
      ...[...this.#histograms.values()].map((f) => f.family(pool)),
    ];
  }

  toJSON(): unknown {
    const families: Record<string, unknown> = {};
    for (const [name, f] of this.#counters) families[name] = f.toJSON();
    for (const [name, f] of this.#histograms) families[name] = f.toJSON();
    return { v: STORED_VERSION, families };
  }

  /** Adds what storage holds to what was counted since the wake; anything malformed is skipped. */
  restore(stored: unknown): boolean {
    if (typeof stored !== "object" || stored === null) return false;
    const { v, families } = stored as { v?: unknown; families?: unknown };
    if (v !== STORED_VERSION || typeof families !== "object" || families === null) return false;
    const byName = families as Record<string, unknown>;
    for (const [name, f] of this.#counters) f.restore(byName[name]);
    for (const [name, f] of this.#histograms) f.restore(byName[name]);
    return true;
  }
}
