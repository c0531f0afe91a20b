// The monitoring contract: every metric /metrics exposes (name, type, labels, meaning), the shapes
// of GET /performance/report, GET /alerts/active and the health score (zod: the types and the
// OpenAPI document come from them), and what each pool's AgentHub reports for them over RPC. The
// Prometheus rules and Grafana dashboards in ops/ name metrics from METRICS only (a test checks),
// and the README's metric table is this list.
import { z } from "zod";
import { DDSketchJson } from "./sketch.ts";

// ---- metrics ----

export type MetricType = "counter" | "gauge" | "histogram";

/**
 * Label names, each with a bounded set of values:
 * - pool: configured pools (POOLS); model: at most MAX_LABELLED_MODELS per pool, the rest "(other)";
 * - version: the registry version ("" for a model served without one);
 * - agent: agents connected to the pool (and those lost in the last AGENT_GONE_RETENTION_MS);
 * - route: "generate" | "chat" | "structured"; status_class: "2xx" | "4xx" | "5xx";
 * - code: the stable ErrorCode set (schema/api.ts); rollout/arm: running rollouts (one per model), a|b;
 *   kind: the rollout's kind (ROLLOUT_KINDS in schema/rollouts.ts: the deployment strategies and ab_test);
 * - rule: the prompt-injection rules (RULE_NAMES, gateway/security/injection-rules.ts); mode: flag | block;
 * - component: the health score's components (HEALTH_COMPONENTS);
 * - reason: the limit that refused a request (rpm | tpm | concurrency, each also as model_<limit>);
 * - outcome: a structured output's end (valid | invalid).
 */
export const METRIC_LABELS = [
  "pool",
  "model",
  "version",
  "agent",
  "route",
  "status_class",
  "code",
  "rollout",
  "kind",
  "arm",
  "component",
  "rule",
  "mode",
  "reason",
  "outcome",
  "le",
] as const;
export type MetricLabel = (typeof METRIC_LABELS)[number];

export interface MetricSpec {
  type: MetricType;
  help: string;
  /** The labels every series of the family carries (histograms add `le` to their buckets). */
  labels: readonly MetricLabel[];
  /** Histograms: bucket upper bounds in the metric's unit (+Inf is implied). */
  buckets?: readonly number[];
}

/** Request latency buckets (seconds): a token stream from a Mac takes ms to minutes. */
export const DURATION_BUCKETS = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300,
] as const;
/** Time to first token (seconds). */
export const TTFT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30] as const;
/** Queue wait (seconds). */
export const QUEUE_WAIT_BUCKETS = [0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60] as const;

/** Generations one structured request took (max_retries is at most 5: 6 attempts). */
export const STRUCTURED_ATTEMPT_BUCKETS = [1, 2, 3, 4, 5, 6] as const;

/** Models labelled one by one per pool; the rest are counted under OTHER_LABEL. */
export const MAX_LABELLED_MODELS = 64;
export const OTHER_LABEL = "(other)";
/** A disconnected agent keeps its series (ml_inference_agent_up 0) this long, for the alert. */
export const AGENT_GONE_RETENTION_MS = 15 * 60_000;

/** Breaker state as a number: what ml_inference_circuit_breaker_state reports. */
export const BREAKER_STATE_VALUE = { closed: 0, half_open: 1, open: 2 } as const;
/** Memory pressure as a number (macOS's levels; Linux maps PSI onto them). */
export const MEMORY_PRESSURE_VALUE = { normal: 0, warn: 1, critical: 2 } as const;

export const METRICS = {
  // The specification's six.
  ml_inference_requests_total: {
    type: "counter",
    help: "Inference requests answered, by status class (2xx served, 4xx refused, 5xx failed).",
    labels: ["pool", "model", "version", "route", "status_class"],
  },
  ml_inference_request_duration_seconds: {
    type: "histogram",
    help: "Time from the pool's hub taking a request to its end (streamed: the whole stream); refused requests count 0.",
    labels: ["pool", "model", "version", "route"],
    buckets: DURATION_BUCKETS,
  },
  ml_inference_errors_total: {
    type: "counter",
    help: "Requests that ended in an error, by stable error code and status class (4xx refused, 5xx failed).",
    labels: ["pool", "model", "version", "code", "status_class"],
  },
  ml_inference_circuit_breaker_state: {
    type: "gauge",
    help: 'Circuit breaker per agent (model="") and per agent and model (only while not closed): 0 closed, 1 half-open, 2 open.',
    labels: ["pool", "agent", "model"],
  },
  ml_inference_memory_usage_percent: {
    type: "gauge",
    help: "Memory in use on the agent's host, percent of physical memory (macOS: wired + active + compressed).",
    labels: ["pool", "agent"],
  },
  ml_inference_health_score: {
    type: "gauge",
    help: "Health score 0-100 of the whole fleet; see the README for the formula.",
    labels: [],
  },
  ml_inference_pool_health_score: {
    type: "gauge",
    help: "Health score 0-100 of each pool, from its own hub's numbers alone.",
    labels: ["pool"],
  },
  // What an LLM operator needs besides.
  ml_inference_health_score_component: {
    type: "gauge",
    help: "Each health score component, 0-1 (1 is healthy), fleet-wide.",
    labels: ["component"],
  },
  ml_inference_time_to_first_token_seconds: {
    type: "histogram",
    help: "Time from the pool's hub taking a request to its first generated token, for requests that produced one.",
    labels: ["pool", "model", "version"],
    buckets: TTFT_BUCKETS,
  },
  ml_inference_prompt_tokens_total: {
    type: "counter",
    help: "Prompt tokens of answered requests, as the engine counted them.",
    labels: ["pool", "model", "version"],
  },
  ml_inference_generated_tokens_total: {
    type: "counter",
    help: "Tokens generated for answered requests, as the engine counted them.",
    labels: ["pool", "model", "version"],
  },
  ml_inference_agent_requests_total: {
    type: "counter",
    help: "Requests an agent served last (the attempt that answered or failed), by the request's status class.",
    labels: ["pool", "agent", "status_class"],
  },
  ml_inference_agent_generated_tokens_total: {
    type: "counter",
    help: "Tokens an agent generated.",
    labels: ["pool", "agent"],
  },
  ml_inference_agent_tokens_per_second: {
    type: "gauge",
    help: "Decode speed the agent last reported: tokens/s of the generations it finished in the last 60 s.",
    labels: ["pool", "agent"],
  },
  ml_inference_agent_up: {
    type: "gauge",
    help: "1 while the agent is connected and ready, 0 for an agent lost in the last 15 minutes.",
    labels: ["pool", "agent"],
  },
  ml_inference_agent_in_flight_requests: {
    type: "gauge",
    help: "Requests an agent is working on now.",
    labels: ["pool", "agent"],
  },
  ml_inference_agent_capacity: {
    type: "gauge",
    help: "Concurrent requests the agent accepts.",
    labels: ["pool", "agent"],
  },
  ml_inference_cpu_usage_percent: {
    type: "gauge",
    help: "CPU in use on the agent's host, percent of all cores.",
    labels: ["pool", "agent"],
  },
  ml_inference_gpu_usage_percent: {
    type: "gauge",
    help: "GPU utilization on the agent's host where the OS reports it without root (macOS: IOAccelerator).",
    labels: ["pool", "agent"],
  },
  ml_inference_memory_pressure: {
    type: "gauge",
    help: "Memory pressure on the agent's host: 0 normal, 1 warn, 2 critical.",
    labels: ["pool", "agent"],
  },
  ml_inference_model_memory_bytes: {
    type: "gauge",
    help: "Memory a loaded model takes on an agent (weights and context), when the engine knows it.",
    labels: ["pool", "agent", "model"],
  },
  ml_inference_agents_connected: {
    type: "gauge",
    help: "Agents connected and ready in the pool.",
    labels: ["pool"],
  },
  ml_inference_model_agents: {
    type: "gauge",
    help: "Agents that can serve the model now: ready, not draining, breaker not open (0: the pool serves it with none).",
    labels: ["pool", "model", "version"],
  },
  ml_inference_queue_depth: {
    type: "gauge",
    help: "Requests waiting for an agent.",
    labels: ["pool", "model"],
  },
  ml_inference_queue_wait_seconds: {
    type: "histogram",
    help: "Time requests waited for an agent (0 when one was free at once).",
    labels: ["pool", "model"],
    buckets: QUEUE_WAIT_BUCKETS,
  },
  ml_inference_in_flight_requests: {
    type: "gauge",
    help: "Requests dispatched to an agent and not finished.",
    labels: ["pool"],
  },
  ml_inference_retries_total: {
    type: "counter",
    help: "Requests sent again to another agent after a failure before the first token (failover).",
    labels: ["pool", "model"],
  },
  ml_inference_fallbacks_total: {
    type: "counter",
    help: "Requests answered by a MODEL_FALLBACKS substitute.",
    labels: ["pool", "model"],
  },
  ml_inference_rollout_requests_total: {
    type: "counter",
    help: "Requests a running deployment or A/B test assigned, by arm (a: current, b: candidate).",
    labels: ["pool", "model", "rollout", "kind", "arm", "status_class"],
  },
  ml_inference_rollout_request_duration_seconds: {
    type: "histogram",
    help: "Request duration per rollout arm.",
    labels: ["pool", "model", "rollout", "kind", "arm"],
    buckets: DURATION_BUCKETS,
  },
  ml_inference_rate_limited_total: {
    type: "counter",
    help: "Requests refused 429 RATE_LIMITED, by the limit that refused them (docs/rate-limits.md); counted by the limiter's home, the default pool's hub, with the pool the request was for.",
    labels: ["pool", "route", "reason"],
  },
  ml_inference_injection_detections_total: {
    type: "counter",
    help: "Prompts the injection rules flagged (served) or blocked (400 PROMPT_INJECTION), by route, the rule that scored most, and mode; counted in D1 by the Worker.",
    labels: ["route", "rule", "mode"],
  },
  ml_inference_structured_outputs_total: {
    type: "counter",
    help: "Structured-output requests (/generate/structured, response_format, tools) by how they ended: valid (an output matched the schema) or invalid (422 STRUCTURED_OUTPUT_INVALID); the schema-valid rate is valid over both.",
    labels: ["pool", "model", "version", "outcome"],
  },
  ml_inference_structured_output_attempts: {
    type: "histogram",
    help: "Generations each structured-output request took (1: valid the first time), valid and invalid alike.",
    labels: ["pool", "model", "version"],
    buckets: STRUCTURED_ATTEMPT_BUCKETS,
  },
  ml_inference_pool_up: {
    type: "gauge",
    help: "1 when the pool's hub answered this scrape, 0 when it did not (its series are then missing).",
    labels: ["pool"],
  },
} as const satisfies Record<string, MetricSpec>;
export type MetricName = keyof typeof METRICS;

/** One series: label values in the family's label order (histograms: without `le`). */
export interface Sample {
  labels: Record<string, string>;
  value: number;
}

export interface HistogramSample {
  labels: Record<string, string>;
  /** Cumulative counts per bucket of METRICS[name].buckets, then +Inf (= count). */
  buckets: number[];
  sum: number;
  count: number;
}

/** A family as a hub or the Worker reports it; /metrics merges families of the same name. */
export type MetricFamily =
  | { name: MetricName; type: "counter" | "gauge"; samples: Sample[] }
  | { name: MetricName; type: "histogram"; samples: HistogramSample[] };

// ---- windows, report ----

export const REPORT_WINDOWS = ["1m", "5m", "1h", "24h"] as const;
export type ReportWindow = (typeof REPORT_WINDOWS)[number];
export const REPORT_WINDOW_MS: Record<ReportWindow, number> = {
  "1m": 60_000,
  "5m": 5 * 60_000,
  "1h": 60 * 60_000,
  "24h": 24 * 60 * 60_000,
};

/**
 * What a hub counted over a window for one model version or one agent: counts, errors by code,
 * tokens, and DDSketches (DDSketchJson, schema/sketch.ts) of latency and TTFT in ms.
 */
export interface WindowAggregate {
  requests: number;
  errors: number;
  errorsByCode: Record<string, number>;
  promptTokens: number;
  completionTokens: number;
  /** Time spent generating (first token to last) by successful requests: tokens/s's denominator. */
  generationMs: number;
  /** Unchecked on the RPC: gateway/monitoring/sketches.ts reads it, leaving out a malformed one. */
  latencyMs: unknown;
  ttftMs: unknown;
}

/** One minute of traffic, for the dashboard's charts: a pool's (RPC) or the fleet's (the report). */
export const MinutePoint = z.object({
  t: z.number().int().describe("Start of the minute, epoch ms."),
  requests: z.number().int(),
  errors: z.number().int(),
  completionTokens: z.number().int(),
  generationMs: z
    .number()
    .describe("Time spent generating (first token to last) by successful requests: tokens/s's denominator."),
  latencyMs: DDSketchJson.nullable().describe(
    "The minute's request latencies in ms, as a DDSketch; null when none was recorded.",
  ),
});
export type MinutePoint = z.infer<typeof MinutePoint>;

export interface AgentTelemetry {
  id: string;
  name: string;
  pool: string;
  up: boolean;
  /** Epoch ms the agent was lost (up false), else null. */
  lostAt: number | null;
  capacity: number;
  inFlight: number;
  draining: boolean;
  tokensPerSecond: number | null;
  memoryUsedPercent: number | null;
  memoryPressure: keyof typeof MEMORY_PRESSURE_VALUE | null;
  cpuPercent: number | null;
  gpuPercent: number | null;
  /** Epoch ms memory use first read above the alert threshold (continuously since), else null. */
  memoryHighSince: number | null;
  /** Loaded models and their memory, when known. */
  models: { id: string; loaded: boolean; footprintBytes: number | null }[];
  lastHealthAt: number | null;
}

export interface ModelServing {
  /** The served id (name or name:version). */
  id: string;
  /** Ready agents serving it, not draining. */
  agents: number;
  /** Of those, agents whose breaker for it (or the agent's) is not open. */
  usableAgents: number;
  /** Epoch ms since the pool has served it with no usable agent, else null. */
  unservedSince: number | null;
}

export interface BreakerTelemetry {
  agentId: string;
  model: string | null;
  state: "closed" | "half_open" | "open";
  openedAt: number | null;
}

/**
 * What one pool's hub reports for the report, the alerts and the health score (RPC monitoring()).
 * Plain interfaces, not zod: the RPC is between the Worker and its own Durable Objects, never seen
 * by a caller, and nothing parses it (the sketches in it are read defensively instead).
 */
export interface PoolMonitoring {
  pool: string;
  at: number;
  agents: AgentTelemetry[];
  models: ModelServing[];
  breakers: BreakerTelemetry[];
  queueDepth: number;
  windows: Record<
    ReportWindow,
    { byModel: Record<string, WindowAggregate>; byAgent: Record<string, WindowAggregate> }
  >;
  /** The last two minutes, for the error-rate rule: each 10 s bucket oldest first. */
  recent: { t: number; requests: number; errors: number }[];
  /** Minute points of the last hour, oldest first. */
  series: MinutePoint[];
}

// ---- health score ----

export const HEALTH_COMPONENTS = ["availability", "errors", "breakers", "latency", "memory"] as const;
export type HealthComponent = (typeof HEALTH_COMPONENTS)[number];

export const HealthScore = z.object({
  score: z.number().int().min(0).max(100).describe("0-100: the components' weighted mean × 100, rounded."),
  components: z.array(
    z.object({
      name: z.enum(HEALTH_COMPONENTS),
      value: z.number().min(0).max(1).describe("0-1, 1 healthy."),
      weight: z.number().describe("The component's weight in the mean."),
      detail: z
        .string()
        .describe('What lowers it, in words with the numbers ("2 of 3 models have an agent").'),
    }),
  ),
});
export type HealthScore = z.infer<typeof HealthScore>;

// ---- the performance report ----

export const Percentiles = z
  .object({ p50: z.number().nullable(), p95: z.number().nullable(), p99: z.number().nullable() })
  .describe("Milliseconds, from the pools' DDSketches merged; null where the window holds no observation.");
export type Percentiles = z.infer<typeof Percentiles>;

export const ReportRow = z.object({
  requests: z.number().int(),
  errors: z.number().int(),
  errorRate: z.number().min(0).max(1).nullable().describe("errors / requests, null without requests."),
  topErrors: z
    .array(z.object({ code: z.string(), count: z.number().int() }))
    .describe("The most frequent error codes, most frequent first."),
  latencyMs: Percentiles.describe(
    "Request latency in ms, from the hub taking the request to its end; null where the window holds none.",
  ),
  ttftMs: Percentiles.describe("Time to first token in ms; null where the window holds none."),
  tokensPerSecond: z
    .number()
    .nullable()
    .describe("Tokens generated per second of generation (first token to last); null without any."),
  promptTokens: z.number().int(),
  completionTokens: z.number().int(),
});
export type ReportRow = z.infer<typeof ReportRow>;

const WindowReport = z.object({
  overall: ReportRow.describe("The whole fleet, from the per-model rows (a retried request counts once)."),
  byModel: z.array(
    z.object({
      model: z.string(),
      version: z.string().nullable().describe("null for a model served without a registry version."),
      ...ReportRow.shape,
    }),
  ),
  byAgent: z.array(z.object({ agent: z.string(), pool: z.string(), ...ReportRow.shape })),
});

export const PerformanceReport = z.object({
  generatedAt: z.string().describe("ISO time the report was built."),
  windows: z.record(z.enum(REPORT_WINDOWS), WindowReport).describe("Every window (1m, 5m, 1h, 24h)."),
  resources: z
    .array(
      z.object({
        agent: z.string(),
        pool: z.string(),
        up: z.boolean(),
        memoryUsedPercent: z.number().nullable(),
        memoryPressure: z.string().nullable().describe("normal, warn or critical, as the host reports it."),
        cpuPercent: z.number().nullable(),
        gpuPercent: z.number().nullable(),
        tokensPerSecond: z.number().nullable(),
        inFlight: z.number().int(),
        capacity: z.number().int(),
      }),
    )
    .describe("Each agent's host and load, as its pool's hub last saw them."),
  health: HealthScore,
  unreachablePools: z
    .array(z.string())
    .describe("Pools whose hub did not answer: their numbers are missing from the report."),
  series: z
    .array(MinutePoint)
    .describe("The last hour per minute, all pools summed (latency sketches merged), oldest first."),
});
export type PerformanceReport = z.infer<typeof PerformanceReport>;

// ---- alerts ----

export const ALERT_RULES = [
  "HighErrorRate",
  "CircuitBreakerOpen",
  "HighLatencyP95",
  "HighMemoryUsage",
  "ServiceDown",
  "LowHealthScore",
] as const;
export type AlertRule = (typeof ALERT_RULES)[number];

export const Alert = z.object({
  rule: z.enum(ALERT_RULES),
  severity: z.enum(["warning", "critical"]),
  since: z.string().describe("ISO time the condition was first seen (continuously since)."),
  labels: z
    .record(z.string(), z.string())
    .describe("Where it fires, as the metrics label it: pool, and agent, model or version by rule."),
  value: z.number().describe("The number that fired it, in the threshold's unit."),
  threshold: z.number(),
  summary: z.string(),
});
export type Alert = z.infer<typeof Alert>;

/** Alert thresholds: ALERT_THRESHOLDS in wrangler.toml (JSON, any subset) overrides these. */
export const AlertThresholds = z
  .object({
    errorRate: z.number().min(0).max(1).default(0.1),
    errorRateWindowMs: z.number().int().positive().default(120_000),
    errorRateMinRequests: z
      .number()
      .int()
      .nonnegative()
      .default(10)
      .describe("The error-rate rule needs at least this many requests in its window."),
    latencyP95Ms: z.number().positive().default(10_000),
    memoryPercent: z.number().min(0).max(100).default(85),
    healthScore: z.number().min(0).max(100).default(70),
    latencyObjectiveMs: z
      .number()
      .positive()
      .default(10_000)
      .describe("The latency objective the health score's latency component compares p95 with."),
  })
  .strict();
export type AlertThresholds = z.infer<typeof AlertThresholds>;

export const ActiveAlerts = z.object({
  generatedAt: z.string().describe("ISO time the alerts were evaluated."),
  alerts: z.array(Alert),
  thresholds: AlertThresholds.describe("The thresholds in force (ALERT_THRESHOLDS over the defaults)."),
  unreachablePools: z
    .array(z.string())
    .describe("Pools whose hub did not answer (each also raises ServiceDown)."),
});
export type ActiveAlerts = z.infer<typeof ActiveAlerts>;
