// Defects a code review found in the AgentHub (issue: the hub hardened), each through real
// WebSocket upgrades: a failed restore, an agent that floods a request, agent detail leaking to
// callers, duplicates after a reconnect, protocol negotiation, and counters across an eviction.
import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { breakerKey } from "../../gateway/hub/circuit-breakers.ts";
import { AgentHub } from "../../gateway/index.ts";
import type { AgentSummary, DispatchRequest, HubMetrics } from "../../schema/hub.ts";
import { CloseCode } from "../../schema/protocol.ts";
import {
  bearer,
  gatewayFetch,
  helloFrame,
  postJson,
  readSse,
  sleep,
  TestAgent,
  trackedAgents,
  uniqueId,
  waitFor,
  waitForNoAgents,
} from "./helpers.ts";

const { adopt, serving } = trackedAgents();
const hub = () => env.AGENT_HUB.getByName("default");

async function agentsView(): Promise<{ agents: AgentSummary[]; metrics: HubMetrics }> {
  const response = await gatewayFetch("/agents", { headers: await bearer({ role: "admin" }) });
  const body = (await response.json()) as { agents: AgentSummary[] };
  const metrics = await runInDurableObject(hub(), (instance: AgentHub) => instance.snapshot().metrics);
  return { agents: body.agents, metrics };
}

const health = (agentId: string) => ({
  type: "health",
  inFlight: 0,
  queued: 0,
  tokensPerSecond: 0,
  host: helloFrame(agentId).host,
});

describe("a failed restore does not take the fleet down", () => {
  it("a hub whose storage read fails adopts its sockets, serves their frames, and restores on a later alarm", async () => {
    const model = uniqueId("restore-down");
    const agent = await serving(model);
    const stored = {
      agentId: agent.id,
      model: null,
      state: "open",
      buckets: [],
      openedAt: Date.now(),
      lastTransitionAt: Date.now(),
      round: 1,
    };
    const result = await runInDurableObject(hub(), async (_instance: AgentHub, state) => {
      await state.storage.put(breakerKey(agent.id, null), stored);
      const list = vi.spyOn(state.storage, "list").mockRejectedValue(new Error("storage unavailable"));
      let fresh: AgentHub;
      try {
        fresh = new AgentHub(state, env);
        // The constructor's restore runs inside blockConcurrencyWhile: this waits until it ended.
        await state.blockConcurrencyWhile(async () => {});
        const [ws] = state.getWebSockets(agent.id);
        if (ws === undefined) throw new Error("the agent's socket is gone");
        await fresh.webSocketMessage(ws, JSON.stringify(health(agent.id)));
      } finally {
        list.mockRestore();
      }
      const whileDown = {
        agents: fresh
          .snapshot()
          .agents.map((a) => ({ id: a.id, ready: a.ready, framesReceived: a.framesReceived })),
        breakers: fresh.breakerStatus().filter((b) => b.agentId === agent.id),
      };
      await sleep(1_050); // the first retry is due after 1 s
      await fresh.alarm();
      return { whileDown, breakersAfter: fresh.breakerStatus().filter((b) => b.agentId === agent.id) };
    });
    expect(result.whileDown).toEqual({
      agents: [{ id: agent.id, ready: true, framesReceived: 1 }],
      breakers: [],
    });
    expect(result.breakersAfter).toEqual([
      expect.objectContaining({ agentId: agent.id, model: null, state: "open" }),
    ]);
    // Frames on the adopted socket never closed it as superseded: it is the agent's only connection,
    // and the hub still answers on it.
    await agent.barrier();
    expect(await Promise.race([agent.closed, sleep(0).then(() => "still open")])).toBe("still open");
    await runInDurableObject(hub(), (_i: AgentHub, state) =>
      state.storage.delete(breakerKey(agent.id, null)),
    );
  });
});

describe("an agent cannot grow the pool's memory", () => {
  it("a non-streamed answer with more tokens than max_tokens fails at once; the agent is closed with LIMIT_EXCEEDED", async () => {
    const model = uniqueId("flood-tokens");
    const agent = await serving(model);
    const started = Date.now();
    const pending = postJson("/generate", { prompt: "x", model, max_tokens: 8 });
    const frame = await agent.next("generate");
    const megabyte = "z".repeat(1024 * 1024 - 100);
    for (let i = 0; i < 3; i++) agent.send({ type: "chunk", id: frame.id, text: megabyte, tokens: 50_000 });
    const response = await pending;
    expect(response.status).toBe(502);
    expect(await response.json()).toMatchObject({
      error: { code: "UPSTREAM_ERROR", message: "the agent sent more output than the request allows" },
    });
    expect(Date.now() - started).toBeLessThan(5_000); // not the 30 s first-chunk/idle timeout
    expect((await agent.closed).code).toBe(CloseCode.LIMIT_EXCEEDED);
  });

  it("text beyond what max_tokens can carry fails the stream, whatever tokens the agent claims", async () => {
    const model = uniqueId("flood-text");
    const agent = await serving(model);
    const pending = postJson("/generate", { prompt: "x", model, max_tokens: 2, stream: true });
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, "ok", 1);
    agent.send({ type: "chunk", id: frame.id, text: "w".repeat(2 * 256), tokens: 0 });
    const messages = await readSse(await pending);
    expect(messages.map((m) => m.event)).toEqual(["chunk", "error"]);
    expect(JSON.parse(messages[1]?.data ?? "")).toMatchObject({ error: { code: "UPSTREAM_ERROR" } });
    expect((await agent.closed).code).toBe(CloseCode.LIMIT_EXCEEDED);
  });

  it("a done frame reporting more completion tokens than max_tokens is refused", async () => {
    const model = uniqueId("flood-done");
    const agent = await serving(model);
    const pending = postJson("/generate", { prompt: "x", model, max_tokens: 4 });
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, "abc", 3);
    agent.send({
      type: "done",
      id: frame.id,
      finishReason: "length",
      usage: { promptTokens: 1, completionTokens: 400 },
      timings: { firstTokenMs: 1, totalMs: 2 },
    });
    expect((await pending).status).toBe(502);
    expect((await agent.closed).code).toBe(CloseCode.LIMIT_EXCEEDED);
  });
});

describe("callers never see agent detail", () => {
  it("an agent's error text and id stay in GET /agents; the caller gets the code and a fixed message", async () => {
    const model = uniqueId("leaky");
    const agent = await serving(model);
    const pending = postJson("/generate", { prompt: "x", model });
    const frame = await agent.next("generate");
    const detail = "failed to load /Users/lab/models/llama.gguf: out of memory";
    agent.send({ type: "error", id: frame.id, code: "ENGINE_ERROR", message: detail, retryable: false });
    const response = await pending;
    expect(response.status).toBe(502);
    const text = await response.text();
    expect(JSON.parse(text)).toEqual({
      error: {
        code: "UPSTREAM_ERROR",
        message: "the model server failed while generating",
        requestId: frame.id,
      },
    });
    expect(text).not.toContain("/Users");
    expect(text).not.toContain(agent.id);
    const listed = (await agentsView()).agents.find((a) => a.id === agent.id);
    expect(listed?.lastError).toMatchObject({ requestId: frame.id, code: "ENGINE_ERROR", message: detail });
  });

  it("an agent lost before answering is named nowhere in the caller's error", async () => {
    const model = uniqueId("lost");
    const agent = await serving(model);
    const pending = postJson("/generate", { prompt: "x", model });
    await agent.next("generate");
    agent.close(1011);
    const response = await pending;
    expect(response.status).toBe(502);
    const text = await response.text();
    expect(JSON.parse(text)).toMatchObject({
      error: {
        code: "UPSTREAM_ERROR",
        message: "the agent serving this request disconnected before answering",
      },
    });
    expect(text).not.toContain(agent.id);
  });
});

describe("a duplicate after a reconnect is answered, not waited out", () => {
  it("DUPLICATE_REQUEST goes to another agent at once", async () => {
    const model = uniqueId("dup");
    const [a, b] = [await serving(model), await serving(model)];
    const started = Date.now();
    const pending = postJson("/generate", { prompt: "x", model });
    const first = await waitFor(() => [a, b].find((x) => x.frames.some((f) => f.type === "generate")));
    const other = first === a ? b : a;
    const frame = await first.next("generate");
    first.send({
      type: "error",
      id: frame.id,
      code: "DUPLICATE_REQUEST",
      message: "in flight",
      retryable: true,
    });
    const retried = await other.next("generate", 1_000);
    expect(retried.id).toBe(frame.id);
    await other.chunk(retried.id, "fine");
    await other.done(retried.id);
    expect((await pending).status).toBe(200);
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it("with one agent, the request goes back to it once its older generation had a moment to wind down", async () => {
    const model = uniqueId("dup-alone");
    const agent = await serving(model);
    const pending = postJson("/generate", { prompt: "x", model });
    const frame = await agent.next("generate");
    const refusedAt = Date.now();
    agent.send({
      type: "error",
      id: frame.id,
      code: "DUPLICATE_REQUEST",
      message: "in flight",
      retryable: true,
    });
    const again = await agent.next("generate", 3_000);
    expect(again.id).toBe(frame.id);
    expect(Date.now() - refusedAt).toBeGreaterThanOrEqual(900); // DUPLICATE_BACKOFF_MS, not at once
    await agent.chunk(again.id, "fine");
    await agent.done(again.id);
    expect((await pending).status).toBe(200);
  });
});

describe("protocol versions N-1..N and capabilities", () => {
  it("a v1 agent (no range, no capabilities) is welcomed with protocol 1 and gets traffic", async () => {
    const model = uniqueId("v1");
    const id = uniqueId("old-agent");
    const agent = adopt(await TestAgent.connect(id));
    agent.send(helloFrame(id, { protocol: 1, models: [{ name: model, engine: "synthetic", loaded: true }] }));
    expect(await agent.next("welcome")).toMatchObject({ protocol: 1, capabilities: [] });
    const pending = postJson("/generate", { prompt: "x", model });
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, "old but fine");
    await agent.done(frame.id);
    expect(await (await pending).json()).toMatchObject({ text: "old but fine" });
    expect((await agentsView()).agents.find((a) => a.id === id)).toMatchObject({
      protocol: 1,
      capabilities: [],
    });
  });

  it("a newer agent speaking 2..3 is welcomed with 2 and only the capabilities the hub knows", async () => {
    const id = uniqueId("new-agent");
    const agent = adopt(await TestAgent.connect(id));
    agent.send(helloFrame(id, { protocol: 3, minProtocol: 2, capabilities: ["load", "teleport"] }));
    expect(await agent.next("welcome")).toMatchObject({
      protocol: 2,
      capabilities: ["duplicate_answer", "load"],
    });
  });

  it.each([
    ["too old", { protocol: 0 }],
    ["too new", { protocol: 5, minProtocol: 4 }],
  ])("an agent %s is refused with INCOMPATIBLE_VERSION", async (_, versions) => {
    const id = uniqueId("incompatible");
    const agent = adopt(await TestAgent.connect(id));
    agent.send(helloFrame(id, versions));
    const closed = await agent.closed;
    expect(closed.code).toBe(CloseCode.INCOMPATIBLE_VERSION);
    expect(closed.reason).toMatch(/hub speaks 1\.\.2/);
  });
});

describe("state kept across an eviction", () => {
  it("a model first seen just before a restart is still known after it: 503, not 404", async () => {
    const model = uniqueId("just-seen");
    const agent = await serving(model);
    agent.close();
    await waitForNoAgents();
    // A hub woken over the same storage, with no flush cycle since the model was first announced.
    const status = await runInDurableObject(hub(), async (_instance: AgentHub, state) => {
      const fresh = new AgentHub(state, env);
      await state.blockConcurrencyWhile(async () => {});
      const request: DispatchRequest = {
        requestId: uniqueId("after-restart"),
        model,
        prompt: "x",
        params: { maxTokens: 1 },
        response: { api: "generate", stream: false, includeUsage: false, requestId: "r", receivedAt: 0 },
        subject: "end-user",
        caller: "test-user",
      };
      const response = await fresh.fetch(
        new Request("https://hub/dispatch", { method: "POST", body: JSON.stringify(request) }),
      );
      return { status: response.status, body: await response.json() };
    });
    expect(status).toEqual({
      status: 503,
      body: { code: "NO_AGENT_AVAILABLE", message: `no connected agent can serve "${model}"` },
    });
  });

  it("request counters per model survive; the model list is stored per model, not as one list", async () => {
    const model = uniqueId("counted");
    const agent = await serving(model);
    for (let i = 0; i < 3; i++) {
      const pending = postJson("/generate", { prompt: "x", model });
      const frame = await agent.next("generate");
      await agent.chunk(frame.id, "t");
      await agent.done(frame.id, { promptTokens: 5, completionTokens: 1 });
      expect((await pending).status).toBe(200);
    }
    const before = (await agentsView()).metrics;
    expect(before.byModel[model]).toEqual({
      requests: expect.objectContaining({ ok: 3, upstream_error: 0 }),
      tokens: { prompt: 15, completion: 3 },
    });
    // The flush cycle, as its alarm would run it.
    const keys = await runInDurableObject(hub(), async (instance: AgentHub, state) => {
      instance.runChecks(Date.now() + 10_001);
      await sleep(50);
      return [...(await state.storage.list()).keys()];
    });
    expect(keys).toContain(`model:${model}`);
    expect(keys).not.toContain("knownModels");
    expect(keys).toContain("metrics");

    await abortAllDurableObjects();
    // The reset hub holds no agent (the runtime dropped the socket; its close event does not always
    // reach the test's end, so that end is closed here too).
    const afterAbort = await agentsView();
    expect(afterAbort.agents.map((a) => a.id)).not.toContain(agent.id);
    agent.close();
    const after = afterAbort.metrics;
    expect(after.byModel[model]).toEqual(before.byModel[model]);
    expect(after.requests.ok).toBe(before.requests.ok);
    // A model this pool knows, with no agent now: 503, not 404.
    expect((await postJson("/generate", { prompt: "x", model })).status).toBe(503);
  });
});
