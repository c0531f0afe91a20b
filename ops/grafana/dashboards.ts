// Builds the Grafana dashboards in ops/grafana/dashboards/ from one description per view, so every
// panel shares the datasource variable, the pool/model variables and the alert thresholds of
// schema/monitoring.ts. Edit here, then `npx tsx ops/grafana/dashboards.ts` (test/ops checks that
// the committed JSON is this file's output).
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { AlertThresholds, BREAKER_STATE_VALUE, MEMORY_PRESSURE_VALUE } from "../../schema/monitoring.ts";

const THRESHOLDS = AlertThresholds.parse({});
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, resolved by Grafana.
const DATASOURCE = { type: "prometheus", uid: "${DS_PROMETHEUS}" } as const;
/** The job name prometheus.yml scrapes the gateway as (alerts.yml's ServiceDown matches it too). */
const GATEWAY_JOB = "orchard-gateway";

type PanelType = "timeseries" | "stat" | "state-timeline" | "table" | "heatmap" | "bargauge";

interface Target {
  expr: string;
  legend?: string;
  /** Tables: one value per series at the end of the range. */
  instant?: boolean;
}

interface PanelSpec {
  type: PanelType;
  title: string;
  description: string;
  targets: Target[];
  unit?: string;
  min?: number;
  max?: number;
  /** Width out of 24 (height follows the type). */
  w: number;
  h?: number;
  /** A red line (timeseries) or colour (stat) from this value up, or below it with `below`. */
  threshold?: { value: number; below?: boolean };
  /** Value to text and colour, for gauges that encode a state. */
  states?: Record<number, { text: string; color: string }>;
  stack?: boolean;
  /** Tables: column names per target and per-column units. */
  columns?: { name: string; unit?: string }[];
}

interface RowSpec {
  title: string;
  panels: PanelSpec[];
}

interface DashboardSpec {
  file: string;
  uid: string;
  title: string;
  description: string;
  variables: Variable[];
  rows: RowSpec[];
}

type Variable = { name: string; label: string; query: string };

const poolVar: Variable = { name: "pool", label: "Pool", query: "label_values(ml_inference_pool_up, pool)" };
const modelVar: Variable = {
  name: "model",
  label: "Model",
  query: 'label_values(ml_inference_requests_total{pool=~"$pool"}, model)',
};
const agentVar: Variable = {
  name: "agent",
  label: "Agent",
  query: 'label_values(ml_inference_agent_up{pool=~"$pool"}, agent)',
};
const rolloutVar: Variable = {
  name: "rollout",
  label: "Rollout",
  query: 'label_values(ml_inference_rollout_requests_total{pool=~"$pool", model=~"$model"}, rollout)',
};

const RATE = "$__rate_interval";
const PM = 'pool=~"$pool", model=~"$model"';
const PA = 'pool=~"$pool", agent=~"$agent"';
const PMR = 'pool=~"$pool", model=~"$model", rollout=~"$rollout"';

const quantile = (q: number, bucket: string, by: string, selector: string, range = RATE) =>
  `histogram_quantile(${q}, sum by (${by}) (rate(${bucket}{${selector}}[${range}])))`;

const breakerStates = {
  [BREAKER_STATE_VALUE.closed]: { text: "closed", color: "green" },
  [BREAKER_STATE_VALUE.half_open]: { text: "half-open", color: "yellow" },
  [BREAKER_STATE_VALUE.open]: { text: "open", color: "red" },
};
const pressureStates = {
  [MEMORY_PRESSURE_VALUE.normal]: { text: "normal", color: "green" },
  [MEMORY_PRESSURE_VALUE.warn]: { text: "warn", color: "yellow" },
  [MEMORY_PRESSURE_VALUE.critical]: { text: "critical", color: "red" },
};
const upStates = { 0: { text: "down", color: "red" }, 1: { text: "up", color: "green" } };

const latencyLimit = { value: THRESHOLDS.latencyP95Ms / 1000 };

/** Two sums of rates (or increases) over the same grouping, divided: error rates, means, shares. */
const ratio = (numerator: string, denominator: string, by?: string, range = RATE, fn = "rate") => {
  const sum = by ? `sum by (${by}) ` : "sum";
  return `${sum}(${fn}(${numerator}[${range}])) / ${sum}(${fn}(${denominator}[${range}]))`;
};

/** A count of the breakers in one state (0, not "no data", when there are none). */
const breakersIn = (
  state: keyof typeof BREAKER_STATE_VALUE,
  title: string,
  description: string,
): PanelSpec => ({
  type: "stat",
  title,
  description,
  w: 4,
  unit: "short",
  threshold: { value: 1 },
  targets: [
    {
      expr: `count(ml_inference_circuit_breaker_state{pool=~"$pool"} == ${BREAKER_STATE_VALUE[state]}) or vector(0)`,
    },
  ],
});

export const SPECS: DashboardSpec[] = [
  {
    file: "orchard-requests.json",
    uid: "orchard-requests",
    title: "Orchard / Requests and latency",
    description: "Request rates and latency percentiles through the gateway, per pool and model.",
    variables: [poolVar, modelVar],
    rows: [
      {
        title: "Traffic",
        panels: [
          {
            type: "stat",
            title: "Requests/s",
            description: "Inference requests answered per second, every status class.",
            w: 6,
            unit: "reqps",
            targets: [{ expr: `sum(rate(ml_inference_requests_total{${PM}}[${RATE}]))` }],
          },
          {
            type: "stat",
            title: "p95 latency",
            description: "95th percentile of request duration (streams: to the last token).",
            w: 6,
            unit: "s",
            threshold: latencyLimit,
            targets: [{ expr: quantile(0.95, "ml_inference_request_duration_seconds_bucket", "le", PM) }],
          },
          {
            type: "stat",
            title: "In flight",
            description: "Requests dispatched to an agent and not finished.",
            w: 6,
            unit: "short",
            targets: [{ expr: 'sum(ml_inference_in_flight_requests{pool=~"$pool"})' }],
          },
          {
            type: "stat",
            title: "Queued",
            description: "Requests waiting for a free agent.",
            w: 6,
            unit: "short",
            targets: [{ expr: `sum(ml_inference_queue_depth{${PM}})` }],
          },
          {
            type: "timeseries",
            title: "Requests/s by status class",
            description: "2xx served, 4xx refused (auth, validation, rate limit, queue full), 5xx failed.",
            w: 12,
            unit: "reqps",
            stack: true,
            targets: [
              {
                expr: `sum by (status_class) (rate(ml_inference_requests_total{${PM}}[${RATE}]))`,
                legend: "{{status_class}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Requests/s by model",
            description: "Answered requests per pool and model.",
            w: 12,
            unit: "reqps",
            targets: [
              {
                expr: `sum by (pool, model) (rate(ml_inference_requests_total{${PM}}[${RATE}]))`,
                legend: "{{pool}} / {{model}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Requests/s by route",
            description: "generate: /generate; chat: /v1/chat/completions; structured: JSON-schema output.",
            w: 12,
            unit: "reqps",
            targets: [
              {
                expr: `sum by (route) (rate(ml_inference_requests_total{${PM}}[${RATE}]))`,
                legend: "{{route}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Tokens/s",
            description: "Prompt and generated tokens of answered requests, as the engines counted them.",
            w: 12,
            unit: "short",
            targets: [
              {
                expr: `sum(rate(ml_inference_generated_tokens_total{${PM}}[${RATE}]))`,
                legend: "generated",
              },
              { expr: `sum(rate(ml_inference_prompt_tokens_total{${PM}}[${RATE}]))`, legend: "prompt" },
            ],
          },
        ],
      },
      {
        title: "Latency",
        panels: [
          {
            type: "timeseries",
            title: "Request duration percentiles",
            description: "p50, p95 and p99 of the time from the hub receiving a request to its last byte.",
            w: 12,
            unit: "s",
            threshold: latencyLimit,
            targets: [0.5, 0.95, 0.99].map((q) => ({
              expr: quantile(q, "ml_inference_request_duration_seconds_bucket", "le", PM),
              legend: `p${q * 100}`,
            })),
          },
          {
            type: "timeseries",
            title: "p95 request duration by model",
            description:
              "The HighLatencyP95 alert fires above the red line for 5 minutes (over 5-minute windows).",
            w: 12,
            unit: "s",
            threshold: latencyLimit,
            targets: [
              {
                expr: quantile(0.95, "ml_inference_request_duration_seconds_bucket", "pool, model, le", PM),
                legend: "{{pool}} / {{model}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Mean request duration by model",
            description: "Total time over requests: moves with long streams that percentiles hide.",
            w: 12,
            unit: "s",
            targets: [
              {
                expr: ratio(
                  `ml_inference_request_duration_seconds_sum{${PM}}`,
                  `ml_inference_request_duration_seconds_count{${PM}}`,
                  "pool, model",
                ),
                legend: "{{pool}} / {{model}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Time to first token",
            description:
              "p50 and p95 of the time to the first generated token, for requests that produced one.",
            w: 12,
            unit: "s",
            targets: [0.5, 0.95].map((q) => ({
              expr: quantile(q, "ml_inference_time_to_first_token_seconds_bucket", "le", PM),
              legend: `p${q * 100}`,
            })),
          },
          {
            type: "heatmap",
            title: "Request duration distribution",
            description: "Requests per duration bucket (DURATION_BUCKETS), per interval.",
            w: 24,
            unit: "s",
            targets: [
              {
                expr: `sum by (le) (increase(ml_inference_request_duration_seconds_bucket{${PM}}[${RATE}]))`,
                legend: "{{le}}",
              },
            ],
          },
        ],
      },
      {
        title: "Queue",
        panels: [
          {
            type: "timeseries",
            title: "Queue depth by model",
            description: "Requests waiting for an agent; a full queue answers 429 with Retry-After.",
            w: 12,
            unit: "short",
            targets: [
              {
                expr: `sum by (pool, model) (ml_inference_queue_depth{${PM}})`,
                legend: "{{pool}} / {{model}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Queue wait p95 by model",
            description: "How long requests waited for an agent (0 when one was free at once).",
            w: 12,
            unit: "s",
            targets: [
              {
                expr: quantile(0.95, "ml_inference_queue_wait_seconds_bucket", "pool, model, le", PM),
                legend: "{{pool}} / {{model}}",
              },
            ],
          },
        ],
      },
      {
        title: "Structured outputs",
        panels: [
          {
            type: "timeseries",
            title: "Schema-valid rate by model version",
            description:
              "Structured-output requests that ended with an output valid against their schema, over all that ended (the rest were 422 STRUCTURED_OUTPUT_INVALID). docs/structured-outputs.md.",
            w: 12,
            unit: "percentunit",
            targets: [
              {
                expr: `sum by (model, version) (rate(ml_inference_structured_outputs_total{outcome="valid", ${PM}}[${RATE}])) / sum by (model, version) (rate(ml_inference_structured_outputs_total{${PM}}[${RATE}]))`,
                legend: "{{model}} {{version}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Attempts per structured request by model version",
            description:
              "Mean generations a structured-output request took (1: valid the first time); each retry fed the validation errors back to the model.",
            w: 12,
            unit: "short",
            targets: [
              {
                expr: `sum by (model, version) (rate(ml_inference_structured_output_attempts_sum{${PM}}[${RATE}])) / sum by (model, version) (rate(ml_inference_structured_output_attempts_count{${PM}}[${RATE}]))`,
                legend: "{{model}} {{version}}",
              },
            ],
          },
        ],
      },
    ],
  },
  {
    file: "orchard-errors.json",
    uid: "orchard-errors",
    title: "Orchard / Errors and circuit breakers",
    description: "Error rates by model and code, circuit breakers per agent, and what is up.",
    variables: [poolVar, modelVar],
    rows: [
      {
        title: "Now",
        panels: [
          {
            type: "stat",
            title: "Error rate",
            description:
              "Errors over requests answered. HighErrorRate fires above the threshold over 2 minutes.",
            w: 4,
            unit: "percentunit",
            threshold: { value: THRESHOLDS.errorRate },
            targets: [
              {
                expr: ratio(`ml_inference_errors_total{${PM}}`, `ml_inference_requests_total{${PM}}`),
              },
            ],
          },
          breakersIn(
            "open",
            "Open breakers",
            "Breakers (per agent, or per agent and model) that are open now.",
          ),
          breakersIn(
            "half_open",
            "Half-open breakers",
            "Breakers past their cool-down, letting a probe request through.",
          ),
          {
            type: "stat",
            title: "Fleet health score",
            description: "0-100; LowHealthScore fires below the threshold for 5 minutes.",
            w: 4,
            unit: "none",
            min: 0,
            max: 100,
            threshold: { value: THRESHOLDS.healthScore, below: true },
            targets: [{ expr: "ml_inference_health_score" }],
          },
          {
            type: "stat",
            title: "Pools not answering",
            description:
              "Pools whose hub did not answer the gateway's last scrape (their series are missing).",
            w: 4,
            unit: "short",
            threshold: { value: 1 },
            targets: [{ expr: 'count(ml_inference_pool_up{pool=~"$pool"} == 0) or vector(0)' }],
          },
          {
            type: "stat",
            title: "Gateway scrape",
            description: `Prometheus's own up for job ${GATEWAY_JOB}: 0 when /metrics cannot be scraped.`,
            w: 4,
            unit: "none",
            states: upStates,
            targets: [{ expr: `min(up{job="${GATEWAY_JOB}"})` }],
          },
        ],
      },
      {
        title: "Errors",
        panels: [
          {
            type: "timeseries",
            title: "Error rate by model",
            description: "Per pool and model, as HighErrorRate computes it.",
            w: 12,
            unit: "percentunit",
            min: 0,
            threshold: { value: THRESHOLDS.errorRate },
            targets: [
              {
                expr: ratio(
                  `ml_inference_errors_total{${PM}}`,
                  `ml_inference_requests_total{${PM}}`,
                  "pool, model",
                ),
                legend: "{{pool}} / {{model}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Errors/s by code",
            description: "The stable error codes callers receive (schema/api.ts ErrorCode).",
            w: 12,
            unit: "short",
            stack: true,
            targets: [
              {
                expr: `sum by (code) (rate(ml_inference_errors_total{${PM}}[${RATE}]))`,
                legend: "{{code}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Failed attempts per agent",
            description: "Attempts an agent failed (5xx), including those retried on another agent.",
            w: 12,
            unit: "short",
            targets: [
              {
                expr: `sum by (pool, agent) (rate(ml_inference_agent_requests_total{pool=~"$pool", status_class="5xx"}[${RATE}]))`,
                legend: "{{pool}} / {{agent}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Retries and fallbacks",
            description:
              "Failovers to another agent before the first token, and MODEL_FALLBACKS substitutes.",
            w: 12,
            unit: "short",
            targets: [
              {
                expr: `sum by (pool, model) (rate(ml_inference_retries_total{${PM}}[${RATE}]))`,
                legend: "retry {{pool}} / {{model}}",
              },
              {
                expr: `sum by (pool, model) (rate(ml_inference_fallbacks_total{${PM}}[${RATE}]))`,
                legend: "fallback {{pool}} / {{model}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Rate-limited requests/s by limit",
            description:
              "Requests refused 429 RATE_LIMITED, by the limit that refused them (rpm, tpm, concurrency, model_*) and route; pool is the pool the request was for (docs/rate-limits.md).",
            w: 24,
            unit: "short",
            stack: true,
            targets: [
              {
                expr: `sum by (reason, route) (rate(ml_inference_rate_limited_total{pool=~"$pool"}[${RATE}]))`,
                legend: "{{reason}} / {{route}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Prompt-injection detections/s by rule",
            description:
              "Prompts the injection rules flagged (served) or blocked (400 PROMPT_INJECTION), by the rule that scored most and the mode (README: Security). Fleet-wide: the Worker counts them, no pool label.",
            w: 24,
            unit: "short",
            stack: true,
            targets: [
              {
                expr: `sum by (rule, mode) (rate(ml_inference_injection_detections_total[${RATE}]))`,
                legend: "{{rule}} / {{mode}}",
              },
            ],
          },
        ],
      },
      {
        title: "Circuit breakers",
        panels: [
          {
            type: "state-timeline",
            title: "Breaker state per agent and model",
            description:
              "One row per breaker: an agent's own (no model) and one per agent and model. Open: the hub routes around it.",
            w: 24,
            h: 10,
            states: breakerStates,
            targets: [
              {
                expr: 'max by (pool, agent, model) (ml_inference_circuit_breaker_state{pool=~"$pool"})',
                legend: "{{pool}} / {{agent}} {{model}}",
              },
            ],
          },
        ],
      },
      {
        title: "Availability and health",
        panels: [
          {
            type: "state-timeline",
            title: "Agents",
            description: "Connected and ready (up), or lost in the last 15 minutes (down).",
            w: 12,
            states: upStates,
            targets: [{ expr: 'ml_inference_agent_up{pool=~"$pool"}', legend: "{{pool}} / {{agent}}" }],
          },
          {
            type: "timeseries",
            title: "Ready agents per model",
            description: "0 for a model the pool serves: its requests get 503 (ServiceDown).",
            w: 12,
            unit: "short",
            min: 0,
            threshold: { value: 1, below: true },
            targets: [
              {
                expr: `ml_inference_model_agents{${PM}}`,
                legend: "{{pool}} / {{model}} {{version}}",
              },
            ],
          },
          {
            type: "state-timeline",
            title: "Pools and gateway",
            description: "Each pool's hub answering the gateway, and Prometheus reaching the gateway.",
            w: 12,
            states: upStates,
            targets: [
              { expr: 'ml_inference_pool_up{pool=~"$pool"}', legend: "pool {{pool}}" },
              { expr: `up{job="${GATEWAY_JOB}"}`, legend: "gateway {{instance}}" },
            ],
          },
          {
            type: "timeseries",
            title: "Health score",
            description: "The fleet's score and each pool's, 0-100.",
            w: 12,
            unit: "none",
            min: 0,
            max: 100,
            threshold: { value: THRESHOLDS.healthScore, below: true },
            targets: [
              { expr: "ml_inference_health_score", legend: "fleet" },
              { expr: 'ml_inference_pool_health_score{pool=~"$pool"}', legend: "{{pool}}" },
            ],
          },
          {
            type: "timeseries",
            title: "Health score components",
            description: "Each component of the fleet's score, 1 healthy (the README gives the formula).",
            w: 24,
            unit: "percentunit",
            min: 0,
            max: 1,
            targets: [{ expr: "ml_inference_health_score_component", legend: "{{component}}" }],
          },
        ],
      },
    ],
  },
  {
    file: "orchard-resources.json",
    uid: "orchard-resources",
    title: "Orchard / Resources per Mac",
    description:
      "What each agent's host reports: memory, pressure, CPU, GPU, tokens/s, load and model memory.",
    variables: [poolVar, agentVar],
    rows: [
      {
        title: "Fleet",
        panels: [
          {
            type: "stat",
            title: "Agents connected",
            description: "Agents connected and ready.",
            w: 6,
            unit: "short",
            targets: [{ expr: 'sum(ml_inference_agents_connected{pool=~"$pool"})' }],
          },
          {
            type: "stat",
            title: "Load",
            description: "Requests in flight over the capacity of the selected agents.",
            w: 6,
            unit: "percentunit",
            threshold: { value: 0.9 },
            targets: [
              {
                expr: `sum(ml_inference_agent_in_flight_requests{${PA}}) / sum(ml_inference_agent_capacity{${PA}})`,
              },
            ],
          },
          {
            type: "stat",
            title: "Highest memory use",
            description: "The fullest host; HighMemoryUsage fires above the threshold for 5 minutes.",
            w: 6,
            unit: "percent",
            threshold: { value: THRESHOLDS.memoryPercent },
            targets: [{ expr: `max(ml_inference_memory_usage_percent{${PA}})` }],
          },
          {
            type: "stat",
            title: "Tokens/s",
            description: "Tokens the selected agents generate per second.",
            w: 6,
            unit: "short",
            targets: [{ expr: `sum(rate(ml_inference_agent_generated_tokens_total{${PA}}[${RATE}]))` }],
          },
        ],
      },
      {
        title: "Memory",
        panels: [
          {
            type: "timeseries",
            title: "Memory in use",
            description: "Percent of physical memory (macOS: wired + active + compressed).",
            w: 12,
            unit: "percent",
            min: 0,
            max: 100,
            threshold: { value: THRESHOLDS.memoryPercent },
            targets: [{ expr: `ml_inference_memory_usage_percent{${PA}}`, legend: "{{pool}} / {{agent}}" }],
          },
          {
            type: "state-timeline",
            title: "Memory pressure",
            description: "macOS's memory pressure level (Linux: PSI mapped onto the same levels).",
            w: 12,
            states: pressureStates,
            targets: [{ expr: `ml_inference_memory_pressure{${PA}}`, legend: "{{pool}} / {{agent}}" }],
          },
          {
            type: "timeseries",
            title: "Model memory",
            description: "Memory each loaded model takes (weights and context), when the engine knows it.",
            w: 24,
            unit: "bytes",
            stack: true,
            targets: [
              {
                expr: `sum by (pool, agent, model) (ml_inference_model_memory_bytes{${PA}})`,
                legend: "{{agent}} / {{model}}",
              },
            ],
          },
        ],
      },
      {
        title: "Compute",
        panels: [
          {
            type: "timeseries",
            title: "CPU",
            description: "CPU in use, percent of all cores.",
            w: 12,
            unit: "percent",
            min: 0,
            max: 100,
            targets: [{ expr: `ml_inference_cpu_usage_percent{${PA}}`, legend: "{{pool}} / {{agent}}" }],
          },
          {
            type: "timeseries",
            title: "GPU",
            description: "GPU utilization where the OS reports it without root (macOS: IOAccelerator).",
            w: 12,
            unit: "percent",
            min: 0,
            max: 100,
            targets: [{ expr: `ml_inference_gpu_usage_percent{${PA}}`, legend: "{{pool}} / {{agent}}" }],
          },
          {
            type: "timeseries",
            title: "Generation speed",
            description: "Tokens/s each agent last reported over its recent requests.",
            w: 12,
            unit: "short",
            targets: [
              { expr: `ml_inference_agent_tokens_per_second{${PA}}`, legend: "{{pool}} / {{agent}}" },
            ],
          },
          {
            type: "timeseries",
            title: "Generated tokens/s",
            description: "Throughput: tokens each agent generated per second, all requests together.",
            w: 12,
            unit: "short",
            targets: [
              {
                expr: `sum by (pool, agent) (rate(ml_inference_agent_generated_tokens_total{${PA}}[${RATE}]))`,
                legend: "{{pool}} / {{agent}}",
              },
            ],
          },
        ],
      },
      {
        title: "Load",
        panels: [
          {
            type: "timeseries",
            title: "In flight vs capacity",
            description: "Requests each agent works on now, and how many it accepts at once.",
            w: 12,
            unit: "short",
            min: 0,
            targets: [
              { expr: `ml_inference_agent_in_flight_requests{${PA}}`, legend: "{{agent}} in flight" },
              { expr: `ml_inference_agent_capacity{${PA}}`, legend: "{{agent}} capacity" },
            ],
          },
          {
            type: "bargauge",
            title: "Utilization",
            description: "In flight over capacity, per agent.",
            w: 12,
            unit: "percentunit",
            min: 0,
            max: 1,
            threshold: { value: 0.9 },
            targets: [
              {
                expr: `ml_inference_agent_in_flight_requests{${PA}} / ml_inference_agent_capacity{${PA}}`,
                legend: "{{pool}} / {{agent}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Attempts/s by status class",
            description: "Requests sent to each agent (every attempt, retries included).",
            w: 12,
            unit: "reqps",
            targets: [
              {
                expr: `sum by (agent, status_class) (rate(ml_inference_agent_requests_total{${PA}}[${RATE}]))`,
                legend: "{{agent}} {{status_class}}",
              },
            ],
          },
          {
            type: "state-timeline",
            title: "Agent up",
            description: "Connected and ready, or lost in the last 15 minutes.",
            w: 12,
            states: upStates,
            targets: [{ expr: `ml_inference_agent_up{${PA}}`, legend: "{{pool}} / {{agent}}" }],
          },
        ],
      },
    ],
  },
  {
    file: "orchard-models.json",
    uid: "orchard-models",
    title: "Orchard / Models and A/B tests",
    description:
      "Latency, time to first token and tokens/s per model version, and running deployments and A/B tests by arm.",
    variables: [poolVar, modelVar, rolloutVar],
    rows: [
      {
        title: "Per model version",
        panels: [
          {
            type: "timeseries",
            title: "p95 request duration by version",
            description: "95th percentile of request duration per model version.",
            w: 12,
            unit: "s",
            threshold: latencyLimit,
            targets: [
              {
                expr: quantile(
                  0.95,
                  "ml_inference_request_duration_seconds_bucket",
                  "model, version, le",
                  PM,
                ),
                legend: "{{model}}:{{version}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "p50 request duration by version",
            description: "Median request duration per model version.",
            w: 12,
            unit: "s",
            targets: [
              {
                expr: quantile(0.5, "ml_inference_request_duration_seconds_bucket", "model, version, le", PM),
                legend: "{{model}}:{{version}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Time to first token p95 by version",
            description: "95th percentile of the time to the first token per model version.",
            w: 12,
            unit: "s",
            targets: [
              {
                expr: quantile(
                  0.95,
                  "ml_inference_time_to_first_token_seconds_bucket",
                  "model, version, le",
                  PM,
                ),
                legend: "{{model}}:{{version}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Time to first token p50 by version",
            description: "Median time to the first token per model version.",
            w: 12,
            unit: "s",
            targets: [
              {
                expr: quantile(
                  0.5,
                  "ml_inference_time_to_first_token_seconds_bucket",
                  "model, version, le",
                  PM,
                ),
                legend: "{{model}}:{{version}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Generated tokens/s by version",
            description:
              "Throughput per model version (per-agent generation speed is on the resources dashboard).",
            w: 12,
            unit: "short",
            targets: [
              {
                expr: `sum by (model, version) (rate(ml_inference_generated_tokens_total{${PM}}[${RATE}]))`,
                legend: "{{model}}:{{version}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Generated tokens per request",
            description: "Mean completion length of successful requests per model version.",
            w: 12,
            unit: "short",
            targets: [
              {
                expr: ratio(
                  `ml_inference_generated_tokens_total{${PM}}`,
                  `ml_inference_requests_total{${PM}, status_class="2xx"}`,
                  "model, version",
                ),
                legend: "{{model}}:{{version}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Requests/s by version",
            description: "Answered requests per model version and status class.",
            w: 12,
            unit: "reqps",
            targets: [
              {
                expr: `sum by (model, version, status_class) (rate(ml_inference_requests_total{${PM}}[${RATE}]))`,
                legend: "{{model}}:{{version}} {{status_class}}",
              },
            ],
          },
          {
            type: "table",
            title: "Ready agents per version",
            description: "Agents serving each model version now, per pool.",
            w: 12,
            targets: [{ expr: `ml_inference_model_agents{${PM}}`, instant: true }],
            columns: [{ name: "Agents" }],
          },
        ],
      },
      {
        title: "Deployments and A/B tests by arm (a: current, b: candidate)",
        panels: [
          {
            type: "timeseries",
            title: "Requests/s by arm",
            description: "Requests each running deployment or A/B test assigned to each arm.",
            w: 12,
            unit: "reqps",
            targets: [
              {
                expr: `sum by (model, kind, rollout, arm) (rate(ml_inference_rollout_requests_total{${PMR}}[${RATE}]))`,
                legend: "{{model}} {{kind}} {{rollout}} arm {{arm}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Share of traffic by arm",
            description:
              "Each arm's share of its rollout's requests: a canary's weight, an A/B test's split.",
            w: 12,
            unit: "percentunit",
            min: 0,
            max: 1,
            targets: [
              {
                expr:
                  `sum by (model, rollout, arm) (rate(ml_inference_rollout_requests_total{${PMR}}[${RATE}]))` +
                  ` / ignoring (arm) group_left sum by (model, rollout) (rate(ml_inference_rollout_requests_total{${PMR}}[${RATE}]))`,
                legend: "{{model}} {{rollout}} arm {{arm}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Failure rate by arm",
            description: "Share of each arm's requests that failed (5xx).",
            w: 12,
            unit: "percentunit",
            min: 0,
            threshold: { value: THRESHOLDS.errorRate },
            targets: [
              {
                expr: ratio(
                  `ml_inference_rollout_requests_total{${PMR}, status_class="5xx"}`,
                  `ml_inference_rollout_requests_total{${PMR}}`,
                  "model, rollout, arm",
                ),
                legend: "{{model}} {{rollout}} arm {{arm}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "p95 request duration by arm",
            description: "95th percentile of request duration per arm.",
            w: 12,
            unit: "s",
            threshold: latencyLimit,
            targets: [
              {
                expr: quantile(
                  0.95,
                  "ml_inference_rollout_request_duration_seconds_bucket",
                  "model, rollout, arm, le",
                  PMR,
                ),
                legend: "{{model}} {{rollout}} arm {{arm}}",
              },
            ],
          },
          {
            type: "timeseries",
            title: "Mean request duration by arm",
            description: "Mean request duration per arm.",
            w: 12,
            unit: "s",
            targets: [
              {
                expr: ratio(
                  `ml_inference_rollout_request_duration_seconds_sum{${PMR}}`,
                  `ml_inference_rollout_request_duration_seconds_count{${PMR}}`,
                  "model, rollout, arm",
                ),
                legend: "{{model}} {{rollout}} arm {{arm}}",
              },
            ],
          },
          {
            type: "table",
            title: "A/B test arms over the time range",
            description:
              "Per A/B test and arm over the dashboard's range. The verdict, with its confidence sequences and sample-ratio check, is GET /ab-tests/{id}.",
            w: 12,
            targets: [
              {
                expr: `sum by (model, rollout, arm) (increase(ml_inference_rollout_requests_total{${PMR}, kind="ab_test"}[$__range]))`,
                instant: true,
              },
              {
                expr: ratio(
                  `ml_inference_rollout_requests_total{${PMR}, kind="ab_test", status_class="5xx"}`,
                  `ml_inference_rollout_requests_total{${PMR}, kind="ab_test"}`,
                  "model, rollout, arm",
                  "$__range",
                  "increase",
                ),
                instant: true,
              },
              {
                expr: quantile(
                  0.95,
                  "ml_inference_rollout_request_duration_seconds_bucket",
                  "model, rollout, arm, le",
                  `${PMR}, kind="ab_test"`,
                  "$__range",
                ),
                instant: true,
              },
            ],
            columns: [
              { name: "Requests", unit: "short" },
              { name: "Failed", unit: "percentunit" },
              { name: "p95 duration", unit: "s" },
            ],
          },
        ],
      },
    ],
  },
];

// ---- rendering ----

const HEIGHT: Record<PanelType, number> = {
  stat: 4,
  timeseries: 8,
  "state-timeline": 8,
  table: 8,
  heatmap: 9,
  bargauge: 8,
};

function thresholdSteps(spec: PanelSpec) {
  const t = spec.threshold;
  if (!t) return [{ color: "green", value: null }];
  return t.below
    ? [
        { color: "red", value: null },
        { color: "green", value: t.value },
      ]
    : [
        { color: "green", value: null },
        { color: "red", value: t.value },
      ];
}

function valueMappings(states: PanelSpec["states"]) {
  if (!states) return [];
  const options = Object.fromEntries(
    Object.entries(states).map(([value, s], index) => [value, { text: s.text, color: s.color, index }]),
  );
  return [{ type: "value", options }];
}

function panelOptions(spec: PanelSpec): Record<string, unknown> {
  const legend = { showLegend: true, displayMode: "table", placement: "bottom", calcs: ["mean", "max"] };
  switch (spec.type) {
    case "stat":
      return {
        reduceOptions: { calcs: ["lastNotNull"], fields: "", values: false },
        colorMode: "value",
        graphMode: spec.states ? "none" : "area",
        justifyMode: "auto",
        orientation: "auto",
        textMode: "auto",
      };
    case "timeseries":
      return { legend, tooltip: { mode: "multi", sort: "desc" } };
    case "state-timeline":
      return {
        mergeValues: true,
        showValue: "auto",
        alignValue: "left",
        rowHeight: 0.9,
        legend: { showLegend: true, displayMode: "list", placement: "bottom" },
        tooltip: { mode: "single", sort: "none" },
      };
    case "table":
      return { showHeader: true, cellHeight: "sm", footer: { show: false, reducer: ["sum"], fields: "" } };
    case "heatmap":
      return {
        calculate: false,
        yAxis: { unit: spec.unit, axisPlacement: "left" },
        cellGap: 1,
        color: { mode: "scheme", scheme: "Oranges", steps: 64, exponent: 0.5, fill: "dark-orange" },
        rowsFrame: { layout: "auto" },
        tooltip: { mode: "single", yHistogram: true },
        legend: { show: true },
      };
    case "bargauge":
      return {
        reduceOptions: { calcs: ["lastNotNull"], fields: "", values: false },
        orientation: "horizontal",
        displayMode: "gradient",
        showUnfilled: true,
      };
  }
}

function fieldDefaults(spec: PanelSpec): Record<string, unknown> {
  const defaults: Record<string, unknown> = {
    thresholds: { mode: "absolute", steps: thresholdSteps(spec) },
    mappings: valueMappings(spec.states),
  };
  if (spec.unit) defaults.unit = spec.unit;
  if (spec.min !== undefined) defaults.min = spec.min;
  if (spec.max !== undefined) defaults.max = spec.max;
  if (spec.states) defaults.color = { mode: "thresholds" };
  if (spec.type === "timeseries") {
    defaults.custom = {
      drawStyle: "line",
      lineWidth: 1,
      fillOpacity: spec.stack ? 30 : 10,
      showPoints: "never",
      spanNulls: false,
      stacking: { mode: spec.stack ? "normal" : "none", group: "A" },
      thresholdsStyle: { mode: spec.threshold ? "line" : "off" },
    };
    defaults.color = { mode: "palette-classic" };
  }
  if (spec.type === "state-timeline") defaults.custom = { fillOpacity: 80, lineWidth: 0 };
  return defaults;
}

function tableTransformations(spec: PanelSpec) {
  if (spec.type !== "table") return undefined;
  const columns = spec.columns ?? [];
  const renameByName = Object.fromEntries(
    columns.map((c, i) => [spec.targets.length > 1 ? `Value #${refId(i)}` : "Value", c.name]),
  );
  return [
    { id: "merge", options: {} },
    { id: "organize", options: { excludeByName: { Time: true, __name__: true }, renameByName } },
  ];
}

function tableOverrides(spec: PanelSpec) {
  return (spec.columns ?? [])
    .filter((c) => c.unit)
    .map((c) => ({
      matcher: { id: "byName", options: c.name },
      properties: [{ id: "unit", value: c.unit }],
    }));
}

const refId = (i: number) => String.fromCharCode(65 + i);

function renderPanel(spec: PanelSpec, id: number, gridPos: { x: number; y: number; w: number; h: number }) {
  const panel: Record<string, unknown> = {
    id,
    type: spec.type,
    title: spec.title,
    description: spec.description,
    datasource: DATASOURCE,
    gridPos,
    fieldConfig: { defaults: fieldDefaults(spec), overrides: tableOverrides(spec) },
    options: panelOptions(spec),
    targets: spec.targets.map((t, i) => ({
      refId: refId(i),
      datasource: DATASOURCE,
      editorMode: "code",
      expr: t.expr,
      legendFormat: t.legend ?? "__auto",
      range: !t.instant,
      instant: t.instant === true,
      ...(t.instant ? { format: "table" } : spec.type === "heatmap" ? { format: "heatmap" } : {}),
    })),
  };
  const transformations = tableTransformations(spec);
  if (transformations) panel.transformations = transformations;
  return panel;
}

function renderVariable(v: Variable) {
  return {
    name: v.name,
    label: v.label,
    type: "query",
    datasource: DATASOURCE,
    definition: v.query,
    query: v.query,
    refresh: 2,
    sort: 1,
    multi: true,
    includeAll: true,
    allValue: ".*",
    current: { selected: true, text: ["All"], value: ["$__all"] },
    options: [],
    regex: "",
    hide: 0,
  };
}

export function renderDashboard(spec: DashboardSpec) {
  const panels: Record<string, unknown>[] = [];
  let id = 1;
  let y = 0;
  for (const row of spec.rows) {
    panels.push({
      id: id++,
      type: "row",
      title: row.title,
      collapsed: false,
      gridPos: { x: 0, y: y++, w: 24, h: 1 },
      panels: [],
    });
    let x = 0;
    let lineHeight = 0;
    for (const p of row.panels) {
      const h = p.h ?? HEIGHT[p.type];
      if (x + p.w > 24) {
        y += lineHeight;
        x = 0;
        lineHeight = 0;
      }
      panels.push(renderPanel(p, id++, { x, y, w: p.w, h }));
      x += p.w;
      lineHeight = Math.max(lineHeight, h);
    }
    y += lineHeight;
  }
  return {
    uid: spec.uid,
    title: spec.title,
    description: spec.description,
    tags: ["orchard"],
    timezone: "browser",
    editable: true,
    graphTooltip: 1,
    schemaVersion: 39,
    version: 1,
    refresh: "30s",
    time: { from: "now-3h", to: "now" },
    links: [
      {
        type: "dashboards",
        title: "Orchard",
        tags: ["orchard"],
        asDropdown: true,
        includeVars: true,
        keepTime: true,
      },
    ],
    annotations: {
      list: [
        {
          builtIn: 1,
          datasource: { type: "grafana", uid: "-- Grafana --" },
          enable: true,
          hide: true,
          iconColor: "rgba(0, 211, 255, 1)",
          name: "Annotations & Alerts",
          type: "dashboard",
        },
      ],
    },
    templating: {
      list: [
        {
          name: "DS_PROMETHEUS",
          label: "Data source",
          type: "datasource",
          query: "prometheus",
          current: {},
          options: [],
          refresh: 1,
          regex: "",
          hide: 0,
        },
        ...spec.variables.map(renderVariable),
      ],
    },
    panels,
  };
}

export const DASHBOARDS_DIR = fileURLToPath(new URL("./dashboards/", import.meta.url));

export function renderAll(): Record<string, string> {
  return Object.fromEntries(
    SPECS.map((spec) => [spec.file, `${JSON.stringify(renderDashboard(spec), null, 2)}\n`]),
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const files = Object.entries(renderAll()).map(([file, text]) => {
    writeFileSync(`${DASHBOARDS_DIR}${file}`, text);
    return `${DASHBOARDS_DIR}${file}`;
  });
  // The repository's formatter owns JSON layout (`npm run lint` checks it).
  execFileSync("npx", ["biome", "format", "--write", ...files], { stdio: "inherit" });
}
