// Agent pools (POOLS): an agent joins the pool its D1 row names, callers reach a pool by model,
// and /agents, /ready and /v1/models cover every configured pool. The suite's config (vitest.config.ts)
// has "lab-a" (wnam; lab-a-model, shared-model) and "default" (shared-model, and everything unlisted).
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { readConfig } from "../../gateway/config.ts";
import { poolOrder } from "../../gateway/inference/hub-client.ts";
import { AgentsResponse } from "../../schema/agents-api.ts";
import { HealthResponse, ReadyResponse } from "../../schema/api.ts";
import { bearer, gatewayFetch, postJson, TestAgent, trackedAgents, uniqueId } from "./helpers.ts";
import { fetchWith, recordingHubs } from "./instrumented-env.ts";

const agents = trackedAgents();

/** A ready agent in `pool` (its D1 row says so before it connects). */
async function agentInPool(pool: string, models: string[]): Promise<TestAgent> {
  const id = uniqueId(`in-${pool}`);
  await env.DB.prepare("INSERT INTO agents (id, name, pool) VALUES (?, ?, ?)").bind(id, id, pool).run();
  return agents.serving(models, 1, id);
}

async function listAgents() {
  const response = await gatewayFetch("/agents", { headers: await bearer({ role: "admin" }) });
  expect(response.status).toBe(200);
  return AgentsResponse.parse(await response.json());
}

/** Answers the agent's next generate frame with one chunk; the caller's response. */
async function serveOne(agent: TestAgent, pending: Promise<Response>): Promise<Response> {
  const frame = await agent.next("generate");
  await agent.chunk(frame.id, "hi");
  await agent.done(frame.id);
  return pending;
}

/** A request id whose pool order for `model` starts at `pool`. */
function requestIdStartingAt(pool: string, model: string): string {
  const pools = readConfig(env).pools;
  for (let i = 0; i < 1000; i++) {
    const id = `rid-${pool}-${i}`;
    if (poolOrder(pools, model, id)[0] === pool) return id;
  }
  throw new Error(`no request id puts ${pool} first for ${model}`);
}

describe("POOLS", () => {
  it("parses pools and their models; default always exists; bad input falls back", () => {
    const config = readConfig({
      POOLS: JSON.stringify({
        "lab-a": { locationHint: "wnam", models: ["llama3", "tiny"] },
        "lab-b": { locationHint: "moon", models: ["tiny"] },
      }),
    });
    expect([...config.pools.byName.values()]).toEqual([
      { name: "default", locationHint: undefined, models: [] },
      { name: "lab-a", locationHint: "wnam", models: ["llama3", "tiny"] },
      // An unknown hint is logged and ignored; the pool stays.
      { name: "lab-b", locationHint: undefined, models: ["tiny"] },
    ]);
    expect(poolOrder(config.pools, "llama3", "r")).toEqual(["lab-a"]);
    expect(poolOrder(config.pools, "unlisted", "r")).toEqual(["default"]);
    expect(poolOrder(config.pools, undefined, "r")).toEqual(["default"]);
    // A model two pools serve: both, in an order that depends on the request and spreads evenly.
    const firsts = new Map<string, number>();
    for (let i = 0; i < 1000; i++) {
      const order = poolOrder(config.pools, "tiny", `request-${i}`);
      expect([...order].sort()).toEqual(["lab-a", "lab-b"]);
      firsts.set(order[0] ?? "", (firsts.get(order[0] ?? "") ?? 0) + 1);
    }
    expect(firsts.get("lab-a")).toBeGreaterThan(400);
    expect(firsts.get("lab-b")).toBeGreaterThan(400);

    for (const bad of ["{nope", "[]", '{"lab-a": []}', '{"bad name!": {}}', '{"a": {"model": ["x"]}}']) {
      expect([...readConfig({ POOLS: bad }).pools.byName.keys()], bad).toEqual(["default"]);
    }
    expect([...readConfig({}).pools.byName.keys()]).toEqual(["default"]);
  });
});

describe("pools on the request path", () => {
  it("an agent whose row names lab-a joins lab-a and gets that pool's model's traffic", async () => {
    const agent = await agentInPool("lab-a", ["lab-a-model"]);
    const listed = (await listAgents()).agents.find((a) => a.id === agent.id);
    expect(listed?.pool).toBe("lab-a");

    const generate = await serveOne(agent, postJson("/generate", { prompt: "x", model: "lab-a-model" }));
    expect(generate.status).toBe(200);
    expect(await generate.json()).toMatchObject({ text: "hi", model_name: "lab-a-model" });

    const chat = await serveOne(
      agent,
      postJson("/v1/chat/completions", { model: "lab-a-model", messages: [{ role: "user", content: "x" }] }),
    );
    expect(chat.status).toBe(200);

    const models = await gatewayFetch("/v1/models", { headers: await bearer() });
    expect(((await models.json()) as { data: { id: string }[] }).data.map((m) => m.id)).toEqual([
      "lab-a-model",
    ]);
  });

  it("a model two pools serve is spread over both, and goes to the other when one has no agent", async () => {
    const inLabA = await agentInPool("lab-a", ["shared-model"]);
    const inDefault = await agentInPool("default", ["shared-model"]);
    const body = { prompt: "x", model: "shared-model" };
    const viaLabA = requestIdStartingAt("lab-a", "shared-model");
    const viaDefault = requestIdStartingAt("default", "shared-model");

    const first = await serveOne(
      inLabA,
      postJson("/generate", body, { headers: { "X-Request-Id": viaLabA } }),
    );
    expect(first.status).toBe(200);
    const second = await serveOne(
      inDefault,
      postJson("/generate", body, { headers: { "X-Request-Id": viaDefault } }),
    );
    expect(second.status).toBe(200);

    // lab-a's only agent leaves: lab-a knows the model but cannot serve it, so default does.
    inLabA.close();
    await expect
      .poll(async () => (await listAgents()).agents.some((a) => a.id === inLabA.id), { timeout: 3000 })
      .toBe(false);
    const failedOver = await serveOne(
      inDefault,
      postJson("/generate", body, { headers: { "X-Request-Id": `${viaLabA}-again` } }),
    );
    expect(failedOver.status).toBe(200);
  });

  it("a model no pool can serve is 503 when some pool knows it, 404 when none does", async () => {
    const gone = await agentInPool("lab-a", ["shared-model"]);
    gone.close();
    await expect.poll(async () => (await listAgents()).agents.length, { timeout: 3000 }).toBe(0);
    for (const id of [
      requestIdStartingAt("lab-a", "shared-model"),
      requestIdStartingAt("default", "shared-model"),
    ]) {
      const response = await postJson(
        "/generate",
        { prompt: "x", model: "shared-model" },
        {
          headers: { "X-Request-Id": id },
        },
      );
      expect(response.status, id).toBe(503);
      expect(await response.json()).toMatchObject({ error: { code: "NO_AGENT_AVAILABLE" } });
    }
    const unknown = await postJson("/generate", { prompt: "x", model: uniqueId("never-served") });
    expect(unknown.status).toBe(404);
  });

  it("refuses an agent whose row names a pool that is not configured", async () => {
    const id = uniqueId("lost");
    await env.DB.prepare("INSERT INTO agents (id, name, pool) VALUES (?, ?, ?)").bind(id, id, "lab-z").run();
    const response = await TestAgent.upgrade(id);
    expect(response.status).toBe(403);
    expect(response.headers.get("X-Error-Code")).toBe("POOL_NOT_CONFIGURED");
    expect(await response.json()).toMatchObject({ error: { code: "POOL_NOT_CONFIGURED" } });
  });

  it("creates each pool's Durable Object with its configured location hint", async () => {
    const hubs = recordingHubs();
    const response = await fetchWith({ ...env, AGENT_HUB: hubs.namespace }, "/agents", {
      headers: await bearer({ role: "admin" }),
    });
    expect(response.status).toBe(200);
    const created = hubs.calls.filter((c) => c.method === "getByName");
    expect(created.map((c) => [c.pool, c.options])).toEqual([
      ["default", undefined],
      ["lab-a", { locationHint: "wnam" }],
    ]);
  });
});

describe("/agents, /health and /ready over every pool", () => {
  it("list and count agents of both pools, each labelled with its pool", async () => {
    const a = await agentInPool("lab-a", ["lab-a-model"]);
    const d = await agentInPool("default", ["tiny-default"]);
    const body = await listAgents();
    expect(body.agents.map((x) => [x.id, x.pool]).sort()).toEqual(
      [
        [a.id, "lab-a"],
        [d.id, "default"],
      ].sort(),
    );
    expect(body.summary).toMatchObject({ connected: 2, ready: 2, models: ["lab-a-model", "tiny-default"] });
    expect(body.pools.map((p) => [p.pool, p.locationHint, p.reachable, p.connected, p.models])).toEqual([
      ["default", null, true, 1, ["tiny-default"]],
      ["lab-a", "wnam", true, 1, ["lab-a-model"]],
    ]);

    // The summary's counters are the pools' added up, per model too.
    const served = await serveOne(a, postJson("/generate", { prompt: "x", model: "lab-a-model" }));
    expect(served.status).toBe(200);
    const after = await listAgents();
    const sum = (f: (p: (typeof after.pools)[number]) => number) => after.pools.reduce((n, p) => n + f(p), 0);
    expect(after.summary.metrics.requests.ok).toBe(sum((p) => p.metrics.requests.ok));
    expect(after.summary.metrics.tokens.completion).toBe(sum((p) => p.metrics.tokens.completion));
    expect(after.summary.metrics.byModel["lab-a-model"]).toEqual(
      after.pools.find((p) => p.pool === "lab-a")?.metrics.byModel["lab-a-model"],
    );
    expect(after.summary.metrics.byModel["lab-a-model"]?.requests.ok).toBeGreaterThanOrEqual(1);

    const health = HealthResponse.parse(await (await gatewayFetch("/health")).json());
    expect(health).toMatchObject({ status: "ok", agentsConnected: 2 });
  });

  it("/ready is ready when any pool serves a model, and says what each pool serves", async () => {
    const before = await gatewayFetch("/ready");
    expect(before.status).toBe(503);
    expect(ReadyResponse.parse(await before.json())).toMatchObject({
      ready: false,
      reason: "no connected agent serves a model",
    });

    await agentInPool("lab-a", ["lab-a-model"]);
    const response = await gatewayFetch("/ready");
    expect(response.status).toBe(200);
    expect(ReadyResponse.parse(await response.json())).toEqual({
      ready: true,
      d1: "ok",
      models: ["lab-a-model"],
      pools: [
        { pool: "default", reachable: true, models: [] },
        { pool: "lab-a", reachable: true, models: ["lab-a-model"] },
      ],
    });
  });

  it("shows and resets the breakers of every pool, not only the default one", async () => {
    const agent = await agentInPool("lab-a", ["lab-a-model"]);
    const pending = postJson("/generate", { prompt: "x", model: "lab-a-model" });
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, "hi");
    await agent.done(frame.id);
    expect((await pending).status).toBe(200);
    const admin = await bearer({ role: "admin" });
    const status = await gatewayFetch("/circuit-breaker/status", { headers: admin });
    const { breakers } = (await status.json()) as { breakers: { pool: string; agentId: string }[] };
    expect(breakers.filter((b) => b.agentId === agent.id).map((b) => b.pool)).toEqual(["lab-a", "lab-a"]);
    const reset = await postJson("/circuit-breaker/reset", { agentId: agent.id }, { headers: admin });
    expect(await reset.json()).toEqual({ reset: 2 });
    const none = await postJson("/circuit-breaker/reset", { agentId: "nobody-anywhere" }, { headers: admin });
    expect(none.status).toBe(404);
  });
});
