// The readers the ops tests rely on: the PromQL name check must catch each kind of mistake (or the
// contract tests would pass on anything), and the YAML reader must read what ops/ writes and refuse
// what it does not understand.
import { describe, expect, it } from "vitest";
import { contractProblems, promqlRefs, resultLabels } from "./promql.ts";
import { parseYaml } from "./yaml-subset.ts";

describe("the PromQL name check", () => {
  it("accepts the contract's metrics, histogram series, labels and up", () => {
    for (const expr of [
      'histogram_quantile(0.95, sum by (pool, model, le) (rate(ml_inference_request_duration_seconds_bucket{pool=~"$pool"}[$__rate_interval])))',
      "sum by (model, rollout, arm) (rate(ml_inference_rollout_requests_total[5m])) / ignoring (arm) group_left sum by (model, rollout) (rate(ml_inference_rollout_requests_total[5m]))",
      'count(ml_inference_circuit_breaker_state{model=""} == 2) or vector(0)',
      "ml_inference_memory_usage_percent > 85 unless on (pool, agent) ml_inference_agent_up == 0",
      'up{job="orchard-gateway", instance="x:443"} == 0',
      'ml_inference_requests_total{model="ml_inference_not_a_metric", route="by (host)"}',
    ])
      expect(contractProblems(expr), expr).toEqual([]);
  });

  it.each([
    [
      "a misspelt metric",
      "rate(ml_inference_request_total[5m])",
      "ml_inference_request_total is not a metric",
    ],
    ["a metric outside the contract", "node_memory_Active_bytes", "node_memory_Active_bytes is not a metric"],
    ["a histogram without its suffix", "ml_inference_request_duration_seconds", "is a histogram"],
    ["_bucket of a counter", "ml_inference_errors_total_bucket", "is a counter, not a histogram"],
    [
      "a matcher on a label the metric lacks",
      'ml_inference_agent_up{model="x"}',
      "ml_inference_agent_up has no label model",
    ],
    ["le on _sum", 'ml_inference_queue_wait_seconds_sum{le="1"}', "has no label le"],
    ["a pool matcher on up", 'up{pool="default"}', "up has no label pool"],
    [
      "grouping by an unknown label",
      "sum by (host) (ml_inference_agent_up)",
      "label host is not in METRIC_LABELS",
    ],
    [
      "grouping by a label no metric carries",
      "sum by (agent) (rate(ml_inference_requests_total[5m]))",
      "carries the label agent",
    ],
    [
      "a misspelt function",
      "histogram_quantil(0.9, ml_inference_errors_total)",
      "unknown function histogram_quantil",
    ],
    ["a selector without a name", '{__name__=~"ml_.*"}', "without a metric name"],
    ["an expression without a metric", "vector(1)", "no metric"],
  ])("reports %s", (_what, expr, problem) => {
    const problems = contractProblems(expr);
    expect(problems.join("\n")).toContain(problem);
  });

  it("reads selectors, grouping labels and functions", () => {
    expect(
      promqlRefs(
        'sum without (route) (rate(ml_inference_requests_total{pool!="", status_class=~"5.."}[5m] offset 1h))',
      ),
    ).toEqual({
      selectors: [{ metric: "ml_inference_requests_total", labels: ["pool", "status_class"] }],
      groupingLabels: ["route"],
      functions: ["sum", "rate"],
    });
  });

  it("knows which labels a query's result keeps", () => {
    expect(resultLabels("sum by (pool) (rate(ml_inference_requests_total[5m]))")).toEqual(new Set(["pool"]));
    expect(resultLabels("ml_inference_agent_up")).toEqual(new Set(["pool", "agent"]));
  });
});

describe("the YAML reader", () => {
  it("reads mappings, sequences, quoted and block scalars and flow lists", () => {
    const text = [
      "# comment",
      "a: plain value # trailing comment",
      "b: 'it''s {{ $value }}'",
      'c: "say \\"hi\\""',
      "d: []",
      'e: ["x:1", y]',
      "list:",
      "  - name: one",
      "    expr: |",
      "      sum(x)",
      "        / 2",
      "",
      "    for: 1m",
      "  - two",
      "same_indent:",
      "- 1",
      "folded: >-",
      "  one",
      "  two",
      "empty:",
    ].join("\n");
    expect(parseYaml(text)).toEqual({
      a: "plain value",
      b: "it's {{ $value }}",
      c: 'say "hi"',
      d: [],
      e: ["x:1", "y"],
      list: [{ name: "one", expr: "sum(x)\n  / 2\n", for: "1m" }, "two"],
      same_indent: ["1"],
      folded: "one two",
      empty: null,
    });
  });

  it.each([
    ["an anchor", "a: &x 1"],
    ["a flow mapping", "a: {b: 1}"],
    ["': ' in a plain scalar", "a: b: c"],
    ["a duplicate key", "a: 1\na: 2"],
    ["bad indentation", "a:\n    b: 1\n  c: 2"],
    ["an unterminated quote", "a: 'b"],
  ])("refuses %s", (_what, text) => {
    expect(() => parseYaml(text)).toThrow();
  });
});
