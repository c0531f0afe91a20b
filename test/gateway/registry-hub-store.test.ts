// The hub's D1 interface (gateway/registry/hub-store.ts) against the real migrations: the routing
// table, agent-local registrations, live metric windows and load failures.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import {
  loadRoutingTable,
  recordLiveMetrics,
  recordLoadFailure,
  registerAgentLocalVersions,
} from "../../gateway/registry/hub-store.ts";
import { AGENT_LOCAL_VERSION } from "../../schema/registry.ts";
import { call, modelName, register, registerInstant } from "./registry-helpers.ts";

describe("loadRoutingTable", () => {
  it("holds every model with active, previous, aliases and versions, and the revision only grows", async () => {
    const name = modelName();
    await registerInstant(name, "1.0.0", { parameters: { contextLength: 2048 } });
    await registerInstant(name, "2.0.0");
    const before = await loadRoutingTable(env.DB);
    await call("POST", `/models/${name}:1.0.0/activate`);
    await call("POST", `/models/${name}:2.0.0/activate`);
    await call("PUT", `/models/${name}/aliases/stable`, { version: "1.0.0" });
    const table = await loadRoutingTable(env.DB, 1234);
    expect(table.revision).toBeGreaterThan(before.revision);
    expect(table.builtAt).toBe(1234);
    expect(table.models[name]).toMatchObject({
      name,
      active: "2.0.0",
      previous: "1.0.0",
      aliases: { stable: "1.0.0" },
    });
    expect(table.models[name]?.versions["1.0.0"]).toEqual({
      version: "1.0.0",
      status: "registered",
      servedAs: `${name}:1.0.0`,
      source: { kind: "path", path: `/models/${name}` },
      sha256: null,
      size: null,
      parameters: { contextLength: 2048 },
      placement: { replicas: 0 },
    });
    expect(table.models[name]?.versions["2.0.0"]?.status).toBe("active");
  });

  it("lists a version being prepared for activation under its servedAs id until the timeout", async () => {
    const name = modelName();
    await register(name, "1.0.0");
    const activation = call("POST", `/models/${name}:1.0.0/activate`, {
      timeout_ms: 800,
      placement: { replicas: 1, pools: ["default"] },
    });
    let preparing: Record<string, unknown> = {};
    for (let i = 0; i < 40 && preparing[`${name}:1.0.0`] === undefined; i++) {
      preparing = (await loadRoutingTable(env.DB)).preparing;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(preparing[`${name}:1.0.0`]).toEqual({ replicas: 1, pools: ["default"] });
    expect((await activation).status).toBe(503);
    expect((await loadRoutingTable(env.DB)).preparing[`${name}:1.0.0`]).toBeUndefined();
  });
});

describe("registerAgentLocalVersions", () => {
  it("registers announced models once, bare names as AGENT_LOCAL_VERSION served by their bare name", async () => {
    const bare = modelName("local");
    const versioned = modelName("local");
    const bareModel = { name: bare, version: null, servedAs: bare, agentId: "mini-1" };
    const announced = [
      bareModel,
      { name: versioned, version: "1.2.0", servedAs: `${versioned}:1.2.0`, agentId: "mini-1" },
    ];
    expect(await registerAgentLocalVersions(env.DB, announced)).toBe(true);
    expect(await registerAgentLocalVersions(env.DB, announced)).toBe(false);
    expect(await registerAgentLocalVersions(env.DB, [{ ...bareModel, agentId: "mini-2" }])).toBe(false);
    const table = await loadRoutingTable(env.DB);
    expect(table.models[bare]?.versions[AGENT_LOCAL_VERSION]).toMatchObject({
      servedAs: bare,
      source: { kind: "agent-local" },
      status: "registered",
    });
    expect(table.models[versioned]?.versions["1.2.0"]?.servedAs).toBe(`${versioned}:1.2.0`);
    const v = await call("GET", `/models/${bare}/${AGENT_LOCAL_VERSION}`);
    expect(v.body.events).toEqual([
      expect.objectContaining({
        kind: "registered",
        actor: "agent:mini-1",
        detail: expect.objectContaining({ source: "agent-local" }),
      }),
    ]);
    // An agent-local version activates without waiting for placement (replicas 0 by default).
    const activated = await call("POST", `/models/${bare}:${AGENT_LOCAL_VERSION}/activate`);
    expect(activated.body).toMatchObject({ model_id: `${bare}:${AGENT_LOCAL_VERSION}`, noop: false });
    expect(await registerAgentLocalVersions(env.DB, [])).toBe(false);
  });
});

describe("recordLiveMetrics and recordLoadFailure", () => {
  it("appends live windows to a version's history and records load failures as events", async () => {
    const name = modelName();
    await register(name, "1.0.0");
    const window = {
      modelId: `${name}:1.0.0`,
      pool: "default",
      windowStart: Date.parse("2026-12-01T10:00:00Z"),
      windowEnd: Date.parse("2026-12-01T10:01:00Z"),
      requests: 120,
      errors: 2,
      latencyP50Ms: 40,
      latencyP95Ms: 90,
      ttftP50Ms: 12,
      tokensPerSecond: 850,
    };
    await recordLiveMetrics(env.DB, [window, { ...window, modelId: "nobody:1.0.0" }]);
    await recordLoadFailure(env.DB, {
      modelId: `${name}:1.0.0`,
      agentId: "mini-3",
      code: "OUT_OF_MEMORY",
      message: "no room",
    });
    await recordLoadFailure(env.DB, { modelId: "nobody:1.0.0", agentId: "mini-3", code: "X", message: "y" });
    const v = await call("GET", `/models/${name}/1.0.0`);
    expect(v.body.live_metrics).toEqual([
      {
        source: "live",
        label: null,
        pool: "default",
        recorded_at: "2026-12-01T10:01:00.000Z",
        window_start: "2026-12-01T10:00:00.000Z",
        window_end: "2026-12-01T10:01:00.000Z",
        metrics: {
          requests: 120,
          errors: 2,
          latency_p50_ms: 40,
          latency_p95_ms: 90,
          ttft_p50_ms: 12,
          tokens_per_second: 850,
        },
      },
    ]);
    const failure = v.body.events.find((e: { kind: string }) => e.kind === "load_failed");
    expect(failure).toMatchObject({
      actor: "agent:mini-3",
      detail: { agentId: "mini-3", code: "OUT_OF_MEMORY", message: "no room" },
    });
    await expect(env.DB.prepare("DELETE FROM model_events").run()).rejects.toThrow(/append-only/);
    await expect(env.DB.prepare("UPDATE model_events SET actor = 'x'").run()).rejects.toThrow(/append-only/);
  });
});
