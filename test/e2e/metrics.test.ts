// GET /metrics on the real stack: a real agent running llama.cpp, a known sequence of requests,
// the scrape checked by Prometheus's own promtool, and the same counts read back by a new Worker
// process after a restart (so they were counted in the hub's Durable Object storage, not in any
// isolate's memory).
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEMO_MODEL_NAME } from "../../node-agent/demo-model.ts";
import { type Stack, startStack } from "../helpers/stack.ts";

const PROMTOOL = "/usr/bin/promtool";
const hasPromtool = existsSync(PROMTOOL);
// CI installs Debian's prometheus package (.ci/run): there, a missing promtool is a failure.
if (!hasPromtool && process.env.CI)
  throw new Error(`${PROMTOOL} is missing: .ci/run installs the prometheus package`);

let stack: Stack;
let admin: string;
let user: string;
/** The first scrape, for promtool and the restart. */
let scraped = "";

beforeAll(async () => {
  stack = await startStack({ vars: { HEALTH_INTERVAL_MS: "500", METRICS_FLUSH_MS: "1000" } });
  [admin, user] = await Promise.all([stack.token("admin"), stack.token("user")]);
  await stack.startAgent({ id: "metrics-a" });
  await stack.waitForAgents((list) => list.length === 1);
});

afterAll(async () => {
  await stack?.stop();
});

async function scrape(): Promise<string> {
  const response = await fetch(`${stack.origin}/metrics`, { headers: { Authorization: `Bearer ${admin}` } });
  expect(response.status).toBe(200);
  return response.text();
}

/** The value of the one sample line `name{...labels...}` whose labels include all of `labels`. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`)))
      return Number(line.split(" ").at(-1));
  }
  return undefined;
}

async function generate(body: Record<string, unknown>): Promise<Response> {
  return fetch(`${stack.origin}/generate`, {
    method: "POST",
    headers: { Authorization: `Bearer ${user}`, "Content-Type": "application/json" },
    body: JSON.stringify({ prompt: "The orchard", max_tokens: 8, temperature: 0, ...body }),
  });
}

describe("GET /metrics with a real agent", () => {
  it("counts a known sequence exactly", async () => {
    for (let i = 0; i < 3; i++) expect((await generate({ model: DEMO_MODEL_NAME })).status).toBe(200);
    const streamed = await generate({ model: DEMO_MODEL_NAME, stream: true });
    expect(streamed.status).toBe(200);
    await streamed.text();
    expect((await generate({ model: "nobody-serves-this" })).status).toBe(404);
    const chat = await fetch(`${stack.origin}/v1/chat/completions`, {
      method: "POST",
      headers: { Authorization: `Bearer ${user}`, "Content-Type": "application/json" },
      body: JSON.stringify({
        model: DEMO_MODEL_NAME,
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 4,
      }),
    });
    expect(chat.status).toBe(200);
    const usage = ((await chat.json()) as { usage: { completion_tokens: number } }).usage;

    const text = await scrape();
    const model = { pool: "default", model: DEMO_MODEL_NAME };
    expect(
      sample(text, "ml_inference_requests_total", { ...model, route: "generate", status_class: "2xx" }),
    ).toBe(4);
    expect(
      sample(text, "ml_inference_requests_total", { ...model, route: "chat", status_class: "2xx" }),
    ).toBe(1);
    // A model nobody serves is labelled "(unknown)", never with the caller's text.
    expect(sample(text, "ml_inference_errors_total", { model: "(unknown)", code: "MODEL_NOT_FOUND" })).toBe(
      1,
    );
    expect(text).not.toContain("nobody-serves-this");
    expect(sample(text, "ml_inference_request_duration_seconds_count", { ...model, route: "generate" })).toBe(
      4,
    );
    expect(sample(text, "ml_inference_time_to_first_token_seconds_count", model)).toBe(5);
    const generated = sample(text, "ml_inference_generated_tokens_total", model) ?? 0;
    expect(generated).toBeGreaterThanOrEqual(usage.completion_tokens + 4);
    expect(generated).toBeLessThanOrEqual(4 * 8 + usage.completion_tokens);
    // Host facts from the agent's health frames (Linux here: /proc/meminfo).
    await expect
      .poll(async () => sample(await scrape(), "ml_inference_memory_usage_percent", { agent: "metrics-a" }), {
        timeout: 5_000,
      })
      .toBeGreaterThan(0);
    expect(sample(text, "ml_inference_agent_up", { agent: "metrics-a" })).toBe(1);

    scraped = text;
  });

  it.skipIf(!hasPromtool)(
    "passes promtool check metrics (skipped only where promtool is not installed: apt-get install prometheus)",
    () => {
      expect(scraped).toContain("ml_inference_requests_total");
      const check = spawnSync(PROMTOOL, ["check", "metrics"], { input: scraped, encoding: "utf8" });
      expect(check.stderr + check.stdout).toBe("");
      expect(check.status).toBe(0);
    },
  );

  it("keeps its counts across a gateway restart", async () => {
    const model = { pool: "default", model: DEMO_MODEL_NAME };
    const generated = sample(scraped, "ml_inference_generated_tokens_total", model);
    expect(generated).toBeGreaterThan(0);
    // Written within METRICS_FLUSH_MS (1 s here); then a new Worker process reads them back.
    await new Promise((r) => setTimeout(r, 2_500));
    await stack.restartGateway();
    const after = await scrape();
    expect(
      sample(after, "ml_inference_requests_total", { ...model, route: "generate", status_class: "2xx" }),
    ).toBe(4);
    expect(sample(after, "ml_inference_generated_tokens_total", model)).toBe(generated);
    expect(
      sample(after, "ml_inference_request_duration_seconds_bucket", {
        ...model,
        route: "generate",
        le: "+Inf",
      }),
    ).toBe(4);
  });
});
