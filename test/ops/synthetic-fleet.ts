// A synthetic fleet for promtool: one series per combination of a few label values for every metric
// of METRICS (histograms as all their buckets, _sum and _count), sampled every 30 s for 70 minutes,
// so each dashboard query can be evaluated and must return data. It tests the queries' label joins
// and aggregations, not any behaviour of the gateway.
import { METRICS, type MetricLabel, type MetricName } from "../../schema/monitoring.ts";

export const SAMPLE_INTERVAL = "30s";
const STEPS = 140;

const VALUES: Record<Exclude<MetricLabel, "le">, string[]> = {
  pool: ["default"],
  model: ["llama-3.2-1b"],
  version: ["1.0.0"],
  agent: ["mac-mini-1"],
  route: ["chat"],
  status_class: ["2xx", "5xx"],
  code: ["ENGINE_ERROR"],
  rollout: ["ab-1"],
  kind: ["deployment", "ab_test"],
  arm: ["a", "b"],
  component: ["availability"],
  reason: ["rpm", "tpm"],
  rule: ["instruction_override"],
  mode: ["flag", "block"],
  outcome: ["valid", "invalid"],
};
/** Series where "" is a real value (the label is then absent, as Prometheus stores it). */
const OVERRIDES: Partial<Record<MetricName, Partial<Record<MetricLabel, string[]>>>> = {
  ml_inference_health_score: { pool: ["", "default"] },
  ml_inference_circuit_breaker_state: { model: ["", "llama-3.2-1b"] },
};
const GAUGE_VALUE: Partial<Record<MetricName, number>> = {
  ml_inference_circuit_breaker_state: 2,
  ml_inference_memory_usage_percent: 62,
  ml_inference_health_score: 88,
  ml_inference_health_score_component: 0.9,
  ml_inference_agent_tokens_per_second: 48,
  ml_inference_agent_capacity: 4,
  ml_inference_agent_in_flight_requests: 2,
  ml_inference_cpu_usage_percent: 35,
  ml_inference_gpu_usage_percent: 70,
  ml_inference_memory_pressure: 1,
  ml_inference_model_memory_bytes: 1_300_000_000,
  ml_inference_agents_connected: 1,
  ml_inference_model_agents: 1,
  ml_inference_queue_depth: 1,
  ml_inference_in_flight_requests: 2,
  ml_inference_agent_up: 1,
  ml_inference_pool_up: 1,
};

export interface InputSeries {
  series: string;
  values: string;
}

function combinations(name: MetricName, labels: readonly MetricLabel[]): Record<string, string>[] {
  let out: Record<string, string>[] = [{}];
  for (const label of labels) {
    if (label === "le") continue;
    const values = OVERRIDES[name]?.[label] ?? VALUES[label];
    out = out.flatMap((combo) => values.map((v) => (v === "" ? combo : { ...combo, [label]: v })));
  }
  return out;
}

function seriesName(metric: string, labels: Record<string, string>): string {
  const body = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(", ");
  return body === "" ? metric : `${metric}{${body}}`;
}

const counter = (perStep: number) => `0+${perStep}x${STEPS}`;
const gauge = (value: number) => `${value}x${STEPS}`;

export function syntheticFleet(): InputSeries[] {
  const out: InputSeries[] = [
    { series: 'up{job="orchard-gateway", instance="orchard.example.com:443"}', values: gauge(1) },
  ];
  for (const [name, spec] of Object.entries(METRICS) as [MetricName, (typeof METRICS)[MetricName]][]) {
    for (const labels of combinations(name, spec.labels)) {
      const perStep = labels.status_class === "5xx" ? 1 : 6;
      if (spec.type === "counter") out.push({ series: seriesName(name, labels), values: counter(perStep) });
      else if (spec.type === "gauge")
        out.push({ series: seriesName(name, labels), values: gauge(GAUGE_VALUE[name] ?? 1) });
      else {
        const buckets = "buckets" in spec ? spec.buckets : [];
        // Cumulative: bucket i gains i+1 observations a step, +Inf (and _count) one more than the last.
        buckets.forEach((le, i) => {
          out.push({
            series: seriesName(`${name}_bucket`, { ...labels, le: String(le) }),
            values: counter(i + 1),
          });
        });
        const total = buckets.length + 1;
        out.push({ series: seriesName(`${name}_bucket`, { ...labels, le: "+Inf" }), values: counter(total) });
        out.push({ series: seriesName(`${name}_count`, labels), values: counter(total) });
        out.push({ series: seriesName(`${name}_sum`, labels), values: counter(total * 3) });
      }
    }
  }
  return out;
}

/** A dashboard query as Prometheus would receive it with every variable on "All". */
export function withVariablesResolved(expr: string): string {
  return expr
    .replaceAll("$__rate_interval", "2m")
    .replaceAll("$__interval", "1m")
    .replaceAll("$__range", "1h")
    .replace(/\$\{?[A-Za-z0-9_]+\}?/g, ".*");
}
