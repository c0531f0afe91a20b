// GET /metrics in workerd: a known sequence of requests through the real Worker and hub, read back
// exactly from the exposition (counts, histogram buckets, errors by code, tokens, gauges), with
// the scrape's authentication and format negotiation.
import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { AgentHub } from "../../gateway/hub/agent-hub.ts";
import { DURATION_BUCKETS } from "../../schema/monitoring.ts";
import { bearer, gatewayFetch, postJson, TestAgent, trackedAgents, uniqueId, waitFor } from "./helpers.ts";

const agents = trackedAgents();
const SCRAPE_TOKEN = "test-scrape-token-0123456789abcdef";

interface Series {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A strict reader of the text format: every sample line must parse. */
function parseExposition(text: string): { series: Series[]; types: Map<string, string> } {
  const series: Series[] = [];
  const types = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line === "" || line === "# EOF") continue;
    if (line.startsWith("# TYPE ")) {
      const [, , name, type] = line.split(" ");
      types.set(name as string, type as string);
      continue;
    }
    if (line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/);
    if (!match) throw new Error(`unparseable sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const m of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[m[1] as string] = (m[2] as string)
        .replace(/\\"/g, '"')
        .replace(/\\n/g, "\n")
        .replace(/\\\\/g, "\\");
    }
    series.push({ name: match[1] as string, labels, value: Number(match[3]) });
  }
  return { series, types };
}

async function scrape(headers?: Record<string, string>) {
  const response = await gatewayFetch("/metrics", {
    headers: headers ?? { Authorization: `Bearer ${SCRAPE_TOKEN}` },
  });
  expect(response.status).toBe(200);
  return { response, ...parseExposition(await response.text()) };
}

function value(series: Series[], name: string, labels: Record<string, string>): number | undefined {
  return series.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    ?.value;
}

/** Runs one /generate on `agent`, answering with `completion` tokens and 4 prompt tokens. */
async function served(agent: TestAgent, model: string, completion: number): Promise<void> {
  const pending = postJson("/generate", { prompt: "hi", model, max_tokens: 16 });
  const frame = await agent.next("generate");
  for (let i = 0; i < completion; i++) await agent.chunk(frame.id, "x");
  await agent.done(frame.id, { promptTokens: 4, completionTokens: completion });
  expect((await pending).status).toBe(200);
}

describe("GET /metrics", () => {
  it("needs the scrape token or an admin token", async () => {
    expect((await gatewayFetch("/metrics")).status).toBe(401);
    expect((await gatewayFetch("/metrics", { headers: await bearer({ role: "user" }) })).status).toBe(403);
    expect(
      (await gatewayFetch("/metrics", { headers: { Authorization: "Bearer wrong-token" } })).status,
    ).toBe(401);
    expect((await gatewayFetch("/metrics", { headers: await bearer({ role: "admin" }) })).status).toBe(200);
    const { response } = await scrape();
    expect(response.headers.get("Content-Type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(response.headers.get("Cache-Control")).toBe("no-store");
  });

  it("reads back a known sequence of requests exactly", async () => {
    const model = uniqueId("metrics-model");
    const agent = await agents.serving(model, 1);
    const before = await scrape();
    const labels = { pool: "default", model, version: "", route: "generate" };
    expect(value(before.series, "ml_inference_requests_total", labels)).toBeUndefined();

    await served(agent, model, 2);
    await served(agent, model, 3);
    await served(agent, model, 1);
    // One the agent fails before any output (no other agent: it is not retried elsewhere).
    const failing = postJson("/generate", { prompt: "hi", model, max_tokens: 16 });
    const frame = await agent.next("generate");
    agent.send({ type: "error", id: frame.id, code: "ENGINE_ERROR", message: "boom", retryable: false });
    expect((await failing).status).toBe(502);
    // One for a model nobody serves: refused before dispatch.
    const unknown = uniqueId("metrics-nobody");
    expect((await postJson("/generate", { prompt: "hi", model: unknown, max_tokens: 4 })).status).toBe(404);

    const { series, types } = await scrape();
    expect(value(series, "ml_inference_requests_total", { ...labels, status_class: "2xx" })).toBe(3);
    expect(value(series, "ml_inference_requests_total", { ...labels, status_class: "5xx" })).toBe(1);
    const upstream = { pool: "default", model, code: "UPSTREAM_ERROR", status_class: "5xx" };
    expect(value(series, "ml_inference_errors_total", upstream)).toBe(1);
    // A name nobody serves is the caller's text: one label value for all of them, never the name.
    const unknownLabels = {
      pool: "default",
      model: "(unknown)",
      code: "MODEL_NOT_FOUND",
      status_class: "4xx",
    };
    const unknownBefore = value(before.series, "ml_inference_errors_total", unknownLabels) ?? 0;
    expect(value(series, "ml_inference_errors_total", unknownLabels)).toBe(unknownBefore + 1);
    expect(series.some((x) => x.labels.model === unknown)).toBe(false);
    expect(value(series, "ml_inference_generated_tokens_total", { pool: "default", model })).toBe(6);
    expect(value(series, "ml_inference_prompt_tokens_total", { pool: "default", model })).toBe(12);
    expect(
      value(series, "ml_inference_agent_generated_tokens_total", { pool: "default", agent: agent.id }),
    ).toBe(6);
    expect(value(series, "ml_inference_agent_requests_total", { agent: agent.id, status_class: "2xx" })).toBe(
      3,
    );

    // The latency histogram: 4 requests (the refused one has no agent and counts as its own model),
    // cumulative buckets that never decrease, +Inf equal to the count.
    const buckets = series.filter(
      (s) => s.name === "ml_inference_request_duration_seconds_bucket" && s.labels.model === model,
    );
    expect(buckets.map((b) => b.labels.le)).toEqual([...DURATION_BUCKETS.map(String), "+Inf"]);
    for (let i = 1; i < buckets.length; i++) {
      expect(buckets[i]?.value).toBeGreaterThanOrEqual(buckets[i - 1]?.value as number);
    }
    expect(buckets.at(-1)?.value).toBe(4);
    expect(value(series, "ml_inference_request_duration_seconds_count", labels)).toBe(4);
    expect(value(series, "ml_inference_time_to_first_token_seconds_count", { pool: "default", model })).toBe(
      3,
    );
    expect(value(series, "ml_inference_queue_wait_seconds_count", { pool: "default", model })).toBe(4);
    expect(types.get("ml_inference_request_duration_seconds")).toBe("histogram");
    expect(types.get("ml_inference_requests_total")).toBe("counter");

    // Gauges from the live pool.
    expect(value(series, "ml_inference_agent_up", { pool: "default", agent: agent.id })).toBe(1);
    expect(value(series, "ml_inference_agent_capacity", { pool: "default", agent: agent.id })).toBe(1);
    expect(value(series, "ml_inference_model_agents", { pool: "default", model })).toBe(1);
    expect(value(series, "ml_inference_pool_up", { pool: "default" })).toBe(1);
    expect(value(series, "ml_inference_pool_up", { pool: "lab-a" })).toBe(1);
    const score = value(series, "ml_inference_health_score", {});
    expect(series.find((s) => s.name === "ml_inference_health_score")?.labels).toEqual({});
    expect(value(series, "ml_inference_pool_health_score", { pool: "lab-a" })).toBeGreaterThanOrEqual(0);
    expect(score).toBeGreaterThanOrEqual(0);
    expect(score).toBeLessThanOrEqual(100);
  });

  it("reports a lost agent as down and the model it served as without agents", async () => {
    const model = uniqueId("metrics-lost");
    const agent = await TestAgent.ready({
      capacity: 2,
      models: [{ name: model, engine: "synthetic", loaded: true }],
    });
    agents.adopt(agent);
    expect(value((await scrape()).series, "ml_inference_agent_up", { agent: agent.id })).toBe(1);
    agent.close();
    await waitFor(
      async () => value((await scrape()).series, "ml_inference_agent_up", { agent: agent.id }) === 0 || null,
      3000,
      "the agent reported down",
    );
    const { series } = await scrape();
    expect(value(series, "ml_inference_model_agents", { pool: "default", model })).toBe(0);
  });

  it("writes OpenMetrics when the scraper asks for it", async () => {
    const response = await gatewayFetch("/metrics", {
      headers: {
        Authorization: `Bearer ${SCRAPE_TOKEN}`,
        Accept: "application/openmetrics-text; version=1.0.0; charset=utf-8,text/plain;version=0.0.4;q=0.5",
      },
    });
    expect(response.headers.get("Content-Type")).toBe(
      "application/openmetrics-text; version=1.0.0; charset=utf-8",
    );
    const text = new TextDecoder().decode(await response.arrayBuffer());
    expect(text.endsWith("# EOF\n")).toBe(true);
    // A counter family is named without _total; its samples keep it.
    expect(text).toContain("# TYPE ml_inference_requests counter\n");
    expect(text).not.toContain("# TYPE ml_inference_requests_total");
  });

  it("keeps its counts across a restore from storage", async () => {
    const model = uniqueId("metrics-restore");
    const agent = await agents.serving(model, 1);
    await served(agent, model, 2);
    const stub = env.AGENT_HUB.get(env.AGENT_HUB.idFromName("default"));
    // Flush as the alarm would, then read what storage holds into a fresh telemetry.
    const stored = await runInDurableObject(stub, async (hub: AgentHub, state) => {
      hub.runChecks(Date.now() + 60_000);
      await waitFor(
        async () => ((await state.storage.get("telemetry")) === undefined ? null : true),
        3000,
        "a flush",
      );
      return state.storage.get("telemetry");
    });
    const { PoolTelemetry } = await import("../../gateway/metrics/pool-telemetry.ts");
    const restored = new PoolTelemetry();
    expect(restored.restore(stored)).toBe(true);
    expect(restored.count("ml_inference_requests_total", [model, "", "generate", "2xx"])).toBe(1);
    expect(restored.count("ml_inference_generated_tokens_total", [model, ""])).toBe(2);
  });
});
