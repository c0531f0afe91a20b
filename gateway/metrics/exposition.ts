// Families in Prometheus's text exposition format (0.0.4) or OpenMetrics 1.0.0, chosen by the
// scraper's Accept header as Prometheus itself negotiates. Families of the same name from several
// pools are merged into one (their series differ by the pool label); every family of METRICS is
// written, with its HELP and TYPE, even before it has a series.
import {
  type HistogramSample,
  METRICS,
  type MetricFamily,
  type MetricName,
  type Sample,
} from "../../schema/monitoring.ts";

export type ExpositionFormat = "prometheus" | "openmetrics";

export const CONTENT_TYPES: Record<ExpositionFormat, string> = {
  prometheus: "text/plain; version=0.0.4; charset=utf-8",
  openmetrics: "application/openmetrics-text; version=1.0.0; charset=utf-8",
};

/** OpenMetrics when the Accept header asks for it (with any q above 0), else the text format. */
export function negotiateFormat(accept: string | undefined | null): ExpositionFormat {
  if (!accept) return "prometheus";
  for (const part of accept.split(",")) {
    const [type, ...params] = part.trim().split(";");
    if (type?.trim().toLowerCase() !== "application/openmetrics-text") continue;
    const q = params.map((p) => p.trim()).find((p) => p.startsWith("q="));
    if (q === undefined || Number(q.slice(2)) > 0) return "openmetrics";
  }
  return "prometheus";
}

/** All families of every list, merged by name, in METRICS order. */
export function mergeFamilies(lists: readonly (readonly MetricFamily[])[]): MetricFamily[] {
  const byName = new Map<MetricName, MetricFamily>();
  for (const list of lists) {
    for (const family of list) {
      if (!(family.name in METRICS)) continue;
      const existing = byName.get(family.name);
      if (existing === undefined)
        byName.set(family.name, { ...family, samples: [...family.samples] } as MetricFamily);
      else (existing.samples as (Sample | HistogramSample)[]).push(...family.samples);
    }
  }
  return (Object.keys(METRICS) as MetricName[]).map(
    (name) => byName.get(name) ?? ({ name, type: METRICS[name].type, samples: [] } as MetricFamily),
  );
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Number.POSITIVE_INFINITY) return "+Inf";
  if (value === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(value);
}

function labelText(
  names: readonly string[],
  labels: Record<string, string>,
  extra?: [string, string],
): string {
  const parts: string[] = [];
  for (const name of names) {
    if (name === "le") continue;
    parts.push(`${name}="${escapeLabel(labels[name] ?? "")}"`);
  }
  if (extra !== undefined) parts.push(`${extra[0]}="${extra[1]}"`);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

/** The le label of a bucket bound (Prometheus writes 0.5, 1, 2.5, +Inf; OpenMetrics 1.0 too). */
function leText(bound: number | undefined): string {
  return bound === undefined ? "+Inf" : formatValue(bound);
}

export function renderFamilies(families: readonly MetricFamily[], format: ExpositionFormat): string {
  const lines: string[] = [];
  for (const family of families) {
    const spec = METRICS[family.name];
    const labels = spec.labels;
    // OpenMetrics names a counter family without its _total suffix; its samples keep it.
    const familyName =
      format === "openmetrics" && spec.type === "counter" ? family.name.replace(/_total$/, "") : family.name;
    lines.push(`# HELP ${familyName} ${escapeHelp(spec.help)}`);
    lines.push(`# TYPE ${familyName} ${spec.type}`);
    if (family.type === "histogram") {
      const bounds = (spec as { buckets?: readonly number[] }).buckets ?? [];
      for (const sample of family.samples) {
        for (let i = 0; i <= bounds.length; i++) {
          const le = leText(bounds[i]);
          lines.push(
            `${family.name}_bucket${labelText(labels, sample.labels, ["le", le])} ${formatValue(sample.buckets[i] ?? sample.count)}`,
          );
        }
        lines.push(`${family.name}_sum${labelText(labels, sample.labels)} ${formatValue(sample.sum)}`);
        lines.push(`${family.name}_count${labelText(labels, sample.labels)} ${formatValue(sample.count)}`);
      }
    } else {
      for (const sample of family.samples) {
        lines.push(`${family.name}${labelText(labels, sample.labels)} ${formatValue(sample.value)}`);
      }
    }
  }
  if (format === "openmetrics") lines.push("# EOF");
  return `${lines.join("\n")}\n`;
}
