// Agents connecting to the AgentHub over real WebSocket upgrades: hello/welcome, listing,
// refusal, protocol errors, supersession, hello and heartbeat deadlines.
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it } from "vitest";
import { AgentHub } from "../../gateway/index.ts";
import type { AgentSummary } from "../../schema/hub.ts";
import { CloseCode, PROTOCOL_VERSION } from "../../schema/protocol.ts";
import {
  bearer,
  gatewayFetch,
  helloFrame,
  sleep,
  TestAgent,
  uniqueId,
  waitFor,
  waitForNoAgents,
} from "./helpers.ts";

const open: TestAgent[] = [];
const track = (agent: TestAgent) => {
  open.push(agent);
  return agent;
};

afterEach(async () => {
  for (const agent of open.splice(0)) agent.close();
  await waitForNoAgents();
});

async function listAgents(): Promise<AgentSummary[]> {
  const response = await gatewayFetch("/agents", { headers: await bearer({ role: "admin" }) });
  expect(response.status).toBe(200);
  return ((await response.json()) as { agents: AgentSummary[] }).agents;
}

const hub = () => env.AGENT_HUB.getByName("default");

describe("agent connection", () => {
  it("hello -> welcome; the agent is listed, its models served, and /ready flips to 200", async () => {
    expect((await gatewayFetch("/ready")).status).toBe(503);

    const id = uniqueId("mini");
    const agent = track(await TestAgent.connect(id, { name: "lab-mini-1" }));
    agent.send(
      helloFrame(id, { capacity: 3, models: [{ name: "tiny-chat", engine: "llamacpp", loaded: true }] }),
    );
    const welcome = await agent.next("welcome");
    expect(welcome).toMatchObject({
      protocol: PROTOCOL_VERSION,
      agentId: id,
      pool: "default",
      heartbeatIntervalMs: 60000,
    });

    const [listed] = await listAgents();
    expect(listed).toMatchObject({
      id,
      name: "lab-mini-1",
      ready: true,
      models: [{ name: "tiny-chat", engine: "llamacpp", loaded: true }],
      engines: ["synthetic"],
      capacity: 3,
      inFlight: 0,
      cancelling: 0,
      draining: false,
      lastHealth: null,
    });

    const models = await gatewayFetch("/v1/models", { headers: await bearer() });
    expect(await models.json()).toEqual({
      object: "list",
      data: [{ id: "tiny-chat", object: "model", created: expect.any(Number), owned_by: "orchard" }],
    });

    const ready = await gatewayFetch("/ready");
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ ready: true, models: ["tiny-chat"] });
    const health = await gatewayFetch("/health");
    expect(await health.json()).toMatchObject({ status: "ok", d1: "ok", agentsConnected: 1 });

    // The upgrade registered the agent in D1 and hello stamped last_seen_at.
    const row = await waitFor(
      () => env.DB.prepare("SELECT name, pool, last_seen_at FROM agents WHERE id = ?").bind(id).first(),
      2000,
      "the agents row",
    );
    expect(row).toMatchObject({ name: "lab-mini-1", pool: "default" });
    await waitFor(async () => {
      const r = await env.DB.prepare("SELECT last_seen_at FROM agents WHERE id = ?").bind(id).first();
      return r?.last_seen_at != null;
    });
  });

  it("keeps the last health report and applies draining", async () => {
    const agent = track(await TestAgent.ready());
    await agent.deliver({
      type: "health",
      inFlight: 0,
      queued: 0,
      tokensPerSecond: 42,
      host: { platform: "darwin", arch: "arm64", cpus: 8, memoryTotalBytes: 16e9, memoryFreeBytes: 6e9 },
    });
    agent.send({ type: "draining", deadlineMs: 5000 });
    const [listed] = await waitFor(async () => {
      const agents = await listAgents();
      return agents[0]?.draining ? agents : null;
    });
    expect(listed?.lastHealth).toMatchObject({
      at: expect.any(String),
      frame: { inFlight: 0, tokensPerSecond: 42, host: { platform: "darwin" } },
    });
    // A draining agent serves nothing new.
    const models = (await (await gatewayFetch("/v1/models", { headers: await bearer() })).json()) as {
      data: unknown[];
    };
    expect(models.data).toEqual([]);
  });

  it("refuses a revoked agent with 403 AGENT_REVOKED", async () => {
    const id = uniqueId("revoked");
    await env.DB.prepare("INSERT INTO agents (id, name, revoked_at) VALUES (?, ?, ?)")
      .bind(id, id, Date.now())
      .run();
    const response = await TestAgent.upgrade(id);
    expect(response.status).toBe(403);
    expect(await response.json()).toMatchObject({ error: { code: "AGENT_REVOKED" } });
  });

  it("requires role agent and a WebSocket upgrade", async () => {
    const asUser = await TestAgent.upgrade(uniqueId("u"), undefined, "user");
    expect(asUser.status).toBe(403);
    const noUpgrade = await gatewayFetch("/agents/connect", { headers: await bearer({ role: "agent" }) });
    expect(noUpgrade.status).toBe(426);
    expect(await noUpgrade.json()).toMatchObject({ error: { code: "UPGRADE_REQUIRED" } });
  });

  it("closes only the offending socket with PROTOCOL_ERROR on a malformed frame", async () => {
    const good = track(await TestAgent.ready());
    const bad = track(await TestAgent.ready());
    bad.send("{not json");
    expect((await bad.closed).code).toBe(CloseCode.PROTOCOL_ERROR);

    const invalid = track(await TestAgent.ready());
    invalid.send({ type: "chunk", id: "x" }); // missing fields
    expect((await invalid.closed).code).toBe(CloseCode.PROTOCOL_ERROR);

    const agents = await listAgents();
    expect(agents.map((a) => a.id)).toEqual([good.id]);
  });

  it("closes with PROTOCOL_ERROR when the first frame is not hello, or hello names another agent", async () => {
    const first = track(await TestAgent.connect());
    first.send({ type: "draining", deadlineMs: 0 });
    expect(await first.closed).toMatchObject({ code: CloseCode.PROTOCOL_ERROR });

    const impostor = track(await TestAgent.connect());
    impostor.send(helloFrame("someone-else"));
    expect((await impostor.closed).code).toBe(CloseCode.PROTOCOL_ERROR);
  });

  it("closes with INCOMPATIBLE_VERSION on another protocol version", async () => {
    const id = uniqueId("old");
    const agent = track(await TestAgent.connect(id));
    agent.send(helloFrame(id, { protocol: PROTOCOL_VERSION + 1 }));
    expect((await agent.closed).code).toBe(CloseCode.INCOMPATIBLE_VERSION);
  });

  it("a newer connection with the same agent id supersedes the older", async () => {
    const id = uniqueId("dup");
    const older = track(await TestAgent.ready({}, id));
    const newer = track(await TestAgent.ready({}, id));
    expect((await older.closed).code).toBe(CloseCode.SUPERSEDED);
    const agents = await listAgents();
    expect(agents).toHaveLength(1);
    expect(newer.frames).toEqual([]);
  });

  it("closes with HELLO_TIMEOUT when no hello arrives (alarm)", async () => {
    const agent = track(await TestAgent.connect());
    const closed = await Promise.race([agent.closed, sleep(4000).then(() => null)]);
    expect(closed?.code).toBe(CloseCode.HELLO_TIMEOUT);
  });

  it("closes with HEARTBEAT_TIMEOUT when an agent falls silent for 3 intervals", async () => {
    const agent = track(await TestAgent.ready());
    await runInDurableObject(hub(), (instance) => instance.runChecks(Date.now() + 2 * 60_000));
    expect(await Promise.race([agent.closed, sleep(50).then(() => "open")])).toBe("open");
    await runInDurableObject(hub(), (instance) => instance.runChecks(Date.now() + 4 * 60_000));
    expect((await agent.closed).code).toBe(CloseCode.HEARTBEAT_TIMEOUT);
  });

  it("counts runtime-answered pings as liveness", async () => {
    const agent = track(await TestAgent.ready());
    const pong = new Promise((resolve) => agent.ws.addEventListener("message", (e) => resolve(e.data)));
    agent.ws.send("ping"); // answered by the runtime; never reaches the hub
    expect(await pong).toBe("pong");
    const stamp = await runInDurableObject(hub(), (_instance, state) =>
      state.getWebSocketAutoResponseTimestamp(state.getWebSockets()[0] as WebSocket)?.getTime(),
    );
    expect(stamp).toBeGreaterThan(0);
  });

  it("rebuilds the agent table from its sockets after a wake, capabilities over 16 KiB included", async () => {
    const many = Array.from({ length: 200 }, (_, i) => ({
      name: `model-${i}-${"x".repeat(100)}`,
      engine: "synthetic" as const,
      loaded: true,
    }));
    const small = track(await TestAgent.ready());
    const large = track(await TestAgent.ready({ models: many, capacity: 4 }));
    await large.deliver({ type: "draining", deadlineMs: 1000 });

    // A second instance over the same state is what the runtime builds after hibernation.
    const [restored, stored] = await runInDurableObject(hub(), async (_instance, state) => {
      const woken = new AgentHub(state, env);
      const stored = await state.storage.list({ prefix: "caps:" });
      return Promise.all([
        waitFor(() => {
          const snapshot = woken.snapshot();
          return snapshot.agents.length === 2 ? snapshot : null;
        }),
        stored.size,
      ]);
    });
    expect(stored).toBe(1); // only the large agent's capabilities overflowed its attachment
    const byId = new Map(restored.agents.map((a) => [a.id, a]));
    expect(byId.get(small.id)).toMatchObject({
      ready: true,
      models: [{ name: "tiny", engine: "synthetic", loaded: true }],
      capacity: 1,
      draining: false,
    });
    expect(byId.get(large.id)).toMatchObject({ ready: true, capacity: 4, draining: true });
    expect(byId.get(large.id)?.models).toHaveLength(200);
  });
});
