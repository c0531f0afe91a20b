// What a PromQL expression refers to (metric names, the label names of its matchers and of its
// by/without/on/ignoring/group_* clauses, functions), and a check of those against the monitoring
// contract: every metric is in METRICS (histograms through _bucket/_sum/_count) or is Prometheus's
// own `up`, and every label is one the metric carries. A reader, not a parser: promtool checks syntax.
import { METRIC_LABELS, METRICS } from "../../schema/monitoring.ts";

export interface Selector {
  metric: string;
  /** Label names of its matchers. */
  labels: string[];
}

export interface PromqlRefs {
  selectors: Selector[];
  /** Label names in by/without/on/ignoring/group_left/group_right lists. */
  groupingLabels: string[];
  functions: string[];
}

const GROUPING = new Set(["by", "without", "on", "ignoring", "group_left", "group_right"]);
const KEYWORDS = new Set(["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"]);
export const FUNCTIONS = new Set([
  // aggregations
  "sum",
  "min",
  "max",
  "avg",
  "group",
  "stddev",
  "stdvar",
  "count",
  "count_values",
  "bottomk",
  "topk",
  "quantile",
  // functions
  "abs",
  "absent",
  "absent_over_time",
  "avg_over_time",
  "ceil",
  "changes",
  "clamp",
  "clamp_max",
  "clamp_min",
  "count_over_time",
  "delta",
  "deriv",
  "exp",
  "floor",
  "histogram_quantile",
  "idelta",
  "increase",
  "irate",
  "label_join",
  "label_replace",
  "last_over_time",
  "ln",
  "log2",
  "log10",
  "max_over_time",
  "min_over_time",
  "predict_linear",
  "present_over_time",
  "quantile_over_time",
  "rate",
  "resets",
  "round",
  "scalar",
  "sort",
  "sort_desc",
  "sqrt",
  "stddev_over_time",
  "sum_over_time",
  "time",
  "timestamp",
  "vector",
]);

/** Labels Prometheus attaches to `up` (the target's), besides any the metric itself has. */
export const TARGET_LABELS = ["job", "instance"] as const;

export function promqlRefs(expr: string): PromqlRefs {
  // String contents (label values, Grafana's "$pool") and range/subquery brackets carry no names.
  const text = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\[[^\]]*\]/g, "[]");
  const refs: PromqlRefs = { selectors: [], groupingLabels: [], functions: [] };
  let i = 0;
  const skipSpace = () => {
    while (i < text.length && /\s/.test(text.charAt(i))) i++;
  };
  const readBraces = (open: string, close: string): string => {
    const end = text.indexOf(close, i);
    if (text.charAt(i) !== open || end < 0) throw new Error(`unbalanced ${open} in ${expr}`);
    const inner = text.slice(i + 1, end);
    i = end + 1;
    return inner;
  };
  while (i < text.length) {
    const c = text.charAt(i);
    if (/[A-Za-z_:]/.test(c)) {
      const id = /^[A-Za-z_:][A-Za-z0-9_:]*/.exec(text.slice(i))?.[0] ?? "";
      i += id.length;
      skipSpace();
      if (GROUPING.has(id)) {
        if (text.charAt(i) === "(") refs.groupingLabels.push(...labelList(readBraces("(", ")")));
      } else if (text.charAt(i) === "(" || /^(by|without)\s*\(/.test(text.slice(i))) {
        // a function, or an aggregation with its grouping first: `sum by (pool) (...)`
        refs.functions.push(id);
      } else if (KEYWORDS.has(id.toLowerCase())) {
        // operator or number literal
      } else {
        const labels = text.charAt(i) === "{" ? matcherLabels(readBraces("{", "}"), expr) : [];
        refs.selectors.push({ metric: id, labels });
      }
    } else if (c === "{") {
      refs.selectors.push({ metric: "", labels: matcherLabels(readBraces("{", "}"), expr) });
    } else if (/[0-9.]/.test(c)) {
      // a number or a duration (5m), which may carry letters
      i += /^[0-9.]+(?:[eE][+-]?[0-9]+)?[a-zA-Z]*/.exec(text.slice(i))?.[0].length ?? 1;
    } else if (c === "$") {
      // a Grafana variable outside a string ($__range is inside [] and already gone)
      i += /^\$\{?[A-Za-z0-9_]+\}?/.exec(text.slice(i))?.[0].length ?? 1;
    } else {
      i++;
    }
  }
  return refs;
}

function labelList(inner: string): string[] {
  return inner
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

function matcherLabels(inner: string, expr: string): string[] {
  return labelList(inner).map((m) => {
    const name = /^([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*""$/.exec(m)?.[1];
    if (!name) throw new Error(`cannot read the matcher "${m}" in ${expr}`);
    return name;
  });
}

type Resolved = { family: string; labels: readonly string[] };

/** The family a series name belongs to and the labels its series carry, or why it is not in the contract. */
export function resolveMetric(name: string): Resolved | { error: string } {
  if (name === "up") return { family: "up", labels: TARGET_LABELS };
  const spec = (METRICS as Record<string, (typeof METRICS)[keyof typeof METRICS]>)[name];
  if (spec) {
    if (spec.type === "histogram")
      return { error: `${name} is a histogram: use ${name}_bucket, _sum or _count` };
    return { family: name, labels: spec.labels };
  }
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  const base = m?.[1] ? (METRICS as Record<string, (typeof METRICS)[keyof typeof METRICS]>)[m[1]] : undefined;
  if (m?.[1] && base) {
    if (base.type !== "histogram") return { error: `${name}: ${m[1]} is a ${base.type}, not a histogram` };
    return { family: m[1], labels: m[2] === "bucket" ? [...base.labels, "le"] : base.labels };
  }
  return { error: `${name} is not a metric of METRICS in schema/monitoring.ts` };
}

/** Everything wrong with an expression's names; empty when it only uses the contract's metrics and labels. */
export function contractProblems(expr: string): string[] {
  const problems: string[] = [];
  let refs: PromqlRefs;
  try {
    refs = promqlRefs(expr);
  } catch (error) {
    return [(error as Error).message];
  }
  if (refs.selectors.length === 0) problems.push(`no metric in ${expr}`);
  const carried = new Set<string>();
  for (const s of refs.selectors) {
    if (s.metric === "") {
      problems.push(`a selector without a metric name in ${expr}`);
      continue;
    }
    const resolved = resolveMetric(s.metric);
    if ("error" in resolved) {
      problems.push(resolved.error);
      continue;
    }
    for (const l of resolved.labels) carried.add(l);
    for (const l of s.labels) {
      if (!resolved.labels.includes(l)) problems.push(`${s.metric} has no label ${l}`);
    }
  }
  for (const l of refs.groupingLabels) {
    const known =
      (METRIC_LABELS as readonly string[]).includes(l) || (TARGET_LABELS as readonly string[]).includes(l);
    if (!known) problems.push(`label ${l} is not in METRIC_LABELS`);
    else if (!carried.has(l)) problems.push(`no metric in ${expr} carries the label ${l} it groups by`);
  }
  for (const f of refs.functions) if (!FUNCTIONS.has(f)) problems.push(`unknown function ${f}`);
  return problems;
}

/** Labels a result of the expression can carry: those of its metrics, narrowed by its `by` lists. */
export function resultLabels(expr: string): Set<string> {
  const refs = promqlRefs(expr);
  const carried = new Set<string>();
  for (const s of refs.selectors) {
    const r = resolveMetric(s.metric);
    if (!("error" in r)) for (const l of r.labels) carried.add(l);
  }
  if (/\bby\s*\(/.test(expr.replace(/"(?:[^"\\]|\\.)*"/g, '""'))) {
    const grouped = new Set(refs.groupingLabels);
    return new Set([...carried].filter((l) => grouped.has(l)));
  }
  return carried;
}
