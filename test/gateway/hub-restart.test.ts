// The AgentHub after a restart. vitest-pool-workers 0.15.1 has no evictDurableObject helper; its
// abortAllDurableObjects() resets every Durable Object instance but keeps storage, which is what an
// eviction or a redeploy does (the agents' sockets drop and the agents reconnect). A wake from
// hibernation keeps the sockets: that is a new AgentHub constructed over the same state.
import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it } from "vitest";
import { AgentHub } from "../../gateway/index.ts";
import type { BreakerStatusResponse } from "../../schema/api.ts";
import type { AgentSummary } from "../../schema/hub.ts";
import { bearer, gatewayFetch, postJson, sleep, TestAgent, uniqueId } from "./helpers.ts";

const open: TestAgent[] = [];
afterEach(() => {
  for (const agent of open.splice(0)) agent.close();
});

const hub = () => env.AGENT_HUB.getByName("default");

async function breakerStatus(): Promise<BreakerStatusResponse["breakers"]> {
  const response = await gatewayFetch("/circuit-breaker/status", {
    headers: await bearer({ role: "admin" }),
  });
  return ((await response.json()) as BreakerStatusResponse).breakers;
}

async function listAgents(): Promise<AgentSummary[]> {
  const response = await gatewayFetch("/agents", { headers: await bearer({ role: "admin" }) });
  return ((await response.json()) as { agents: AgentSummary[] }).agents;
}

async function agentServing(model: string, id?: string): Promise<TestAgent> {
  const agent = await TestAgent.ready({ models: [{ name: model, engine: "synthetic", loaded: true }] }, id);
  open.push(agent);
  return agent;
}

describe("hub restart", () => {
  it("breaker state survives an eviction; the reconnecting agent is listed with it and stays skipped", async () => {
    const model = uniqueId("evicted");
    const agent = await agentServing(model);
    // Five first-chunk timeouts (the agent never answers): 3 attempts, then 2; the agent breaker opens.
    for (const attempts of [3, 2]) {
      const pending = postJson("/generate", { prompt: "x", model });
      for (let i = 0; i < attempts; i++) {
        const frame = await agent.next("generate");
        await runInDurableObject(hub(), (instance: AgentHub) => instance.runChecks(Date.now() + 5_001));
        await agent.next("cancel");
        // As the node agent does: it answers a cancel, which frees its slot for the next attempt.
        await agent.done(frame.id, { promptTokens: 1, completionTokens: 0 }, "cancelled");
      }
      expect((await pending).status).toBe(504);
    }
    const before = (await breakerStatus()).find((r) => r.agentId === agent.id && r.model === null);
    expect(before).toMatchObject({ state: "open", failures: 5 });

    await abortAllDurableObjects();
    expect((await agent.closed).code).toBe(1006); // an eviction drops the sockets
    const after = (await breakerStatus()).find((r) => r.agentId === agent.id && r.model === null);
    expect(after).toEqual(before);
    const back = await agentServing(model, agent.id);
    expect((await listAgents()).find((a) => a.id === back.id)).toMatchObject({
      ready: true,
      breaker: "open",
    });
    const refused = await postJson("/generate", { prompt: "x", model });
    expect(refused.status).toBe(503);

    // The restored breaker still turns half-open on time, and a successful probe closes it.
    await sleep(Math.max(0, (after?.nextAttemptAt ?? 0) - Date.now()) + 50);
    const probe = postJson("/generate", { prompt: "probe", model });
    const frame = await back.next("generate");
    await back.chunk(frame.id, "ok");
    await back.done(frame.id);
    expect((await probe).status).toBe(200);
    expect((await listAgents()).find((a) => a.id === back.id)?.breaker).toBe("closed");
  });

  it("a hub woken from hibernation rebuilds its agents from the sockets and its breakers from storage", async () => {
    const model = uniqueId("hibernated");
    const agent = await agentServing(model);
    for (const attempts of [3, 2]) {
      const pending = postJson("/generate", { prompt: "x", model });
      for (let i = 0; i < attempts; i++) {
        const frame = await agent.next("generate");
        agent.send({ type: "error", id: frame.id, code: "MODEL_LOAD_FAILED", message: "x", retryable: true });
      }
      expect((await pending).status).toBe(502);
    }
    const woken = await runInDurableObject(hub(), async (_instance: AgentHub, state) => {
      const fresh = new AgentHub(state, env);
      // Its constructor restores inside blockConcurrencyWhile; poll (bounded) until it is done.
      for (let i = 0; i < 100 && fresh.snapshot().agents.length === 0; i++) await sleep(10);
      return { agents: fresh.snapshot().agents, breakers: fresh.breakerStatus() };
    });
    expect(woken.agents).toEqual([
      expect.objectContaining({
        id: agent.id,
        ready: true,
        models: [expect.objectContaining({ name: model })],
      }),
    ]);
    expect(woken.breakers).toContainEqual(
      expect.objectContaining({ agentId: agent.id, model, state: "open", failures: 5 }),
    );
    // The agent never noticed: its socket is the same one, and the hub still answers on it.
    await agent.barrier();
    expect(await Promise.race([agent.closed, sleep(0).then(() => "still open")])).toBe("still open");
  });

  it("an alarm that could not be set (storage failing, or the object being reset) is set by the next scheduling, and the failure is no unhandled rejection", async () => {
    await agentServing(uniqueId("alarm")); // a connected agent: its heartbeat deadline is always due
    const alarm = await runInDurableObject(hub(), async (instance: AgentHub, state) => {
      const storage = state.storage as { setAlarm: DurableObjectStorage["setAlarm"] };
      const setAlarm = storage.setAlarm;
      let refused = 0;
      storage.setAlarm = () => {
        refused++;
        return Promise.reject(new Error("storage unavailable"));
      };
      try {
        await instance.alarm(); // schedules afresh: every setAlarm fails
        await sleep(0);
      } finally {
        storage.setAlarm = setAlarm;
      }
      expect(refused).toBeGreaterThan(0);
      await state.storage.deleteAlarm();
      instance.runChecks(Date.now());
      await sleep(0);
      return state.storage.getAlarm();
    });
    expect(alarm).toEqual(expect.any(Number));
  });
});
