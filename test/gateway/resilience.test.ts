// Resilience of the data path end to end inside workerd (real WebSocket upgrades, the real Worker
// and AgentHub): failover, breakers and their endpoints, deadlines, backpressure, slow callers and
// model fallbacks. Every wait is bounded: a request that hangs fails its test by timing out.
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { AgentHub } from "../../gateway/index.ts";
import type { BreakerStatusResponse } from "../../schema/api.ts";
import type { AgentSummary } from "../../schema/hub.ts";
import type { GenerateFrame } from "../../schema/protocol.ts";
import {
  bearer,
  gatewayFetch,
  postJson,
  readSse,
  SseReader,
  sleep,
  type TestAgent,
  trackedAgents,
  uniqueId,
  waitFor,
  waitForNoAgents,
} from "./helpers.ts";

const agents = trackedAgents();
const agentServing = agents.serving;

const hub = () => env.AGENT_HUB.getByName("default");

/** Runs the hub's alarm work as if the clock read now + `aheadMs` (timeouts without waiting). */
function advanceHubClock(aheadMs: number): Promise<void> {
  return runInDurableObject(hub(), (instance: AgentHub) => instance.runChecks(Date.now() + aheadMs));
}

const admin = () => bearer({ role: "admin" });

async function breakerStatus(): Promise<BreakerStatusResponse["breakers"]> {
  const response = await gatewayFetch("/circuit-breaker/status", { headers: await admin() });
  expect(response.status).toBe(200);
  return ((await response.json()) as BreakerStatusResponse).breakers;
}

async function resetBreakers(body: unknown, role = "admin"): Promise<Response> {
  return gatewayFetch("/circuit-breaker/reset", {
    method: "POST",
    headers: { "Content-Type": "application/json", ...(await bearer({ role })) },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

async function listAgents(): Promise<AgentSummary[]> {
  const response = await gatewayFetch("/agents", { headers: await admin() });
  return ((await response.json()) as { agents: AgentSummary[] }).agents;
}

/** Answers the next generate frame with a retryable engine error. */
async function failNext(agent: TestAgent, code = "ENGINE_ERROR"): Promise<GenerateFrame> {
  const frame = await agent.next("generate");
  agent.send({ type: "error", id: frame.id, code, message: "engine trouble", retryable: true });
  return frame;
}

/** Answers one generate frame with the given pieces and a done. */
async function answer(agent: TestAgent, pieces: string[] = ["ok"]): Promise<GenerateFrame> {
  const frame = await agent.next("generate");
  for (const piece of pieces) await agent.chunk(frame.id, piece);
  await agent.done(frame.id, { promptTokens: 4, completionTokens: pieces.length });
  return frame;
}

const chat = (model: string, extra: Record<string, unknown> = {}) => ({
  model,
  messages: [{ role: "user", content: "x" }],
  ...extra,
});

describe("failover before the first chunk", () => {
  it("tries up to DISPATCH_MAX_ATTEMPTS different agents, invisibly, then answers 502", async () => {
    const model = uniqueId("attempts");
    const agents = await Promise.all([1, 2, 3, 4].map(() => agentServing(model)));
    const pending = postJson("/generate", { prompt: "x", model });
    const tried = new Set<string>();
    for (let attempt = 0; attempt < 3; attempt++) {
      const agent = await waitFor(
        () => agents.find((a) => a.frames.some((f) => f.type === "generate")),
        3000,
        `attempt ${attempt + 1}`,
      );
      tried.add(agent.id);
      await failNext(agent);
    }
    const response = await pending;
    expect(response.status).toBe(502);
    expect(await response.json()).toMatchObject({
      error: { code: "UPSTREAM_ERROR", message: expect.stringContaining("after 3 attempts") },
    });
    expect(tried.size).toBe(3); // never the same agent twice while another was there
    const untouched = agents.filter((a) => !tried.has(a.id));
    expect(untouched).toHaveLength(1);
    expect(await untouched[0]?.unread("generate")).toEqual([]);
  });

  it("a caller never sees a failure that a retry absorbed (agent disconnect, then success)", async () => {
    const model = uniqueId("absorbed");
    const [a, b] = [await agentServing(model), await agentServing(model)];
    const pending = postJson("/v1/chat/completions", chat(model));
    const first = await waitFor(() => [a, b].find((x) => x.frames.some((f) => f.type === "generate")));
    first.close(1011);
    await answer(first === a ? b : a, ["saved"]);
    const response = await pending;
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ choices: [{ message: { content: "saved" } }] });
  });
});

describe("failures after the first chunk", () => {
  it("/generate streaming: an explicit `event: error` with the ErrorBody; no retry", async () => {
    const model = uniqueId("after-gen");
    const [a, b] = [await agentServing(model), await agentServing(model)];
    const pending = postJson("/generate", { prompt: "x", model, stream: true });
    const first = await waitFor(() => [a, b].find((x) => x.frames.some((f) => f.type === "generate")));
    const frame = await first.next("generate");
    await first.chunk(frame.id, "partial");
    first.send({ type: "error", id: frame.id, code: "ENGINE_ERROR", message: "died", retryable: true });
    const messages = await readSse(await pending);
    expect(messages.map((m) => m.event)).toEqual(["chunk", "error"]);
    // The agent's own text ("died") stays in the log and GET /agents: callers get a fixed message.
    expect(JSON.parse(messages[1]?.data ?? "")).toEqual({
      error: {
        code: "UPSTREAM_ERROR",
        message: "the model server failed while generating",
        requestId: frame.id,
      },
    });
    expect(await (first === a ? b : a).unread("generate")).toEqual([]);
  });

  it("/v1 streaming: a data line with the OpenAI error, then [DONE]", async () => {
    const model = uniqueId("after-v1");
    const agent = await agentServing(model);
    const pending = postJson("/v1/chat/completions", chat(model, { stream: true }));
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, "partial");
    agent.close(1011);
    const messages = await readSse(await pending);
    expect(messages.map((m) => m.data).at(-1)).toBe("[DONE]");
    expect(JSON.parse(messages.at(-2)?.data ?? "")).toEqual({
      error: { message: expect.any(String), type: "server_error", param: null, code: "UPSTREAM_ERROR" },
    });
  });

  it("non-streaming: 502 UPSTREAM_ERROR, since nothing was sent yet", async () => {
    const model = uniqueId("after-json");
    const [a, b] = [await agentServing(model), await agentServing(model)];
    const pending = postJson("/generate", { prompt: "x", model });
    const first = await waitFor(() => [a, b].find((x) => x.frames.some((f) => f.type === "generate")));
    const frame = await first.next("generate");
    await first.chunk(frame.id, "partial");
    first.close(1011);
    const response = await pending;
    expect(response.status).toBe(502);
    expect(await response.json()).toMatchObject({ error: { code: "UPSTREAM_ERROR" } });
    expect(await (first === a ? b : a).unread("generate")).toEqual([]);
  });
});

describe("circuit breakers", () => {
  it("model failures open the agent+model breaker: 502 after the retries, then 503; other models still served", async () => {
    const model = uniqueId("brk");
    const other = uniqueId("brk-other");
    const agent = await agentServing([model, other]);

    // Alone in the pool, the agent gets all three attempts of the first request.
    const first = postJson("/generate", { prompt: "1", model });
    for (let i = 0; i < 3; i++) await failNext(agent);
    expect((await first).status).toBe(502);
    // The second request's second failure is the fifth: the breaker opens and no one is left.
    const second = postJson("/generate", { prompt: "2", model });
    for (let i = 0; i < 2; i++) await failNext(agent);
    expect((await second).status).toBe(502);

    const rows = (await breakerStatus()).filter((r) => r.agentId === agent.id);
    expect(rows).toEqual([
      expect.objectContaining({ model: null, state: "closed", calls: 0 }),
      expect.objectContaining({ model, state: "open", failures: 5, calls: 5, failureRate: 1 }),
    ]);
    const third = await postJson("/v1/chat/completions", chat(model));
    expect(third.status).toBe(503);
    expect(await third.json()).toMatchObject({ error: { code: "NO_AGENT_AVAILABLE" } });
    expect((await listAgents()).find((a) => a.id === agent.id)?.breaker).toBe("closed");

    const fine = postJson("/generate", { prompt: "other", model: other });
    await answer(agent, ["fine"]);
    expect(await (await fine).json()).toMatchObject({ text: "fine", model_name: other });
  });

  it("open -> half-open after the cool-down: one probe goes through and its success closes it", async () => {
    const model = uniqueId("probe");
    const agent = await agentServing(model, 4);
    for (let i = 0; i < 2; i++) {
      const failing = postJson("/generate", { prompt: "x", model });
      for (let attempt = 0; attempt < 3 && (i === 0 || attempt < 2); attempt++) await failNext(agent);
      expect((await failing).status).toBe(502);
    }
    const opened = (await breakerStatus()).find((r) => r.agentId === agent.id && r.model === model);
    expect(opened).toMatchObject({ state: "open", openedAt: expect.any(Number) });
    expect(opened?.nextAttemptAt).toBe((opened?.openedAt ?? 0) + 2000);

    await sleep(Math.max(0, (opened?.nextAttemptAt ?? 0) - Date.now()) + 50);
    expect((await breakerStatus()).find((r) => r.agentId === agent.id && r.model === model)?.state).toBe(
      "half_open",
    );
    const probe = postJson("/generate", { prompt: "probe", model });
    const frame = await agent.next("generate");
    // The probe holds the only half-open slot: a second request waits instead of going through.
    const waiting = postJson("/generate", { prompt: "waits", model });
    expect(await agent.unread("generate")).toEqual([]);
    await agent.chunk(frame.id, "alive");
    await agent.done(frame.id);
    expect((await probe).status).toBe(200);
    expect((await breakerStatus()).find((r) => r.agentId === agent.id && r.model === model)?.state).toBe(
      "closed",
    );
    await answer(agent);
    expect((await waiting).status).toBe(200);
  });

  it("disconnects count toward the agent's own breaker; a caller's cancel does not count", async () => {
    const model = uniqueId("cancel-neutral");
    const agent = await agentServing(model, 4);
    for (let i = 0; i < 6; i++) {
      const controller = new AbortController();
      const pending = postJson("/generate", { prompt: "x", model }, { signal: controller.signal }).catch(
        (e) => e,
      );
      const frame = await agent.next("generate");
      controller.abort();
      await pending;
      await agent.next("cancel");
      await agent.done(frame.id, { promptTokens: 1, completionTokens: 0 }, "cancelled");
    }
    const rows = (await breakerStatus()).filter((r) => r.agentId === agent.id);
    expect(rows.every((r) => r.state === "closed" && r.failures === 0)).toBe(true);

    const id = agent.id;
    const pending = postJson("/generate", { prompt: "x", model });
    await agent.next("generate");
    agent.close(1011);
    expect((await pending).status).toBe(502);
    await waitForNoAgents();
    const replacement = await agentServing(model, 1, id);
    const agentRow = (await breakerStatus()).find((r) => r.agentId === replacement.id && r.model === null);
    expect(agentRow).toMatchObject({ failures: 1, calls: 1, state: "closed" });
  });
});

describe("circuit breaker endpoints", () => {
  async function openModelBreaker(): Promise<{ agent: TestAgent; model: string }> {
    const model = uniqueId("ep");
    const agent = await agentServing(model);
    for (let i = 0; i < 2; i++) {
      const pending = postJson("/generate", { prompt: "x", model });
      for (let attempt = 0; attempt < (i === 0 ? 3 : 2); attempt++)
        await failNext(agent, "MODEL_LOAD_FAILED");
      await pending;
    }
    return { agent, model };
  }

  it("GET /circuit-breaker/status: every breaker with its counts and times", async () => {
    const { agent, model } = await openModelBreaker();
    const row = (await breakerStatus()).find((r) => r.agentId === agent.id && r.model === model);
    expect(row).toEqual({
      pool: "default",
      agentId: agent.id,
      model,
      state: "open",
      failures: 5,
      successes: 0,
      calls: 5,
      failureRate: 1,
      openedAt: expect.any(Number),
      lastTransitionAt: row?.openedAt,
      nextAttemptAt: (row?.openedAt ?? 0) + 2000, // BREAKER_COOLDOWN_MS in the test config
    });
  });

  it("POST /circuit-breaker/reset: one agent+model, one agent, or all", async () => {
    const { agent, model } = await openModelBreaker();
    const one = await resetBreakers({ agentId: agent.id, model });
    expect(one.status).toBe(200);
    expect(await one.json()).toEqual({ reset: 1 });
    const row = (await breakerStatus()).find((r) => r.agentId === agent.id && r.model === model);
    expect(row).toMatchObject({ state: "closed", calls: 0, openedAt: null, nextAttemptAt: null });
    // Serving again at once.
    const pending = postJson("/generate", { prompt: "x", model });
    await answer(agent);
    expect((await pending).status).toBe(200);

    expect(await (await resetBreakers({ agentId: agent.id })).json()).toEqual({ reset: 2 });
    const all = (await (await resetBreakers({})).json()) as { reset: number };
    expect(all.reset).toBe((await breakerStatus()).length);
  });

  it("400 for a bad body, 403 for role user, 404 BREAKER_NOT_FOUND for an unknown breaker", async () => {
    for (const body of [{ model: "m" }, { agentId: 5 }, { agentId: "a", extra: true }, "{nope", "[]"]) {
      const response = await resetBreakers(body);
      expect(response.status, JSON.stringify(body)).toBe(400);
    }
    expect((await resetBreakers({}, "user")).status).toBe(403);
    const forbidden = await gatewayFetch("/circuit-breaker/status", { headers: await bearer() });
    expect(forbidden.status).toBe(403);
    const unknown = await resetBreakers({ agentId: "no-such-agent" });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { code: "BREAKER_NOT_FOUND" } });
    const { agent } = await openModelBreaker();
    const unknownModel = await resetBreakers({ agentId: agent.id, model: "no-such-model" });
    expect(unknownModel.status).toBe(404);
  });
});

describe("deadlines", () => {
  it("first-chunk timeout: the agent gets cancel `deadline` and another agent answers", async () => {
    const model = uniqueId("ttfc");
    const [a, b] = [await agentServing(model), await agentServing(model)];
    const pending = postJson("/generate", { prompt: "x", model, stream: true });
    const slow = await waitFor(() => [a, b].find((x) => x.frames.some((f) => f.type === "generate")));
    const frame = await slow.next("generate");
    await advanceHubClock(5_001); // FIRST_CHUNK_TIMEOUT_MS in the test config is 5000
    expect(await slow.next("cancel")).toEqual({ type: "cancel", id: frame.id, reason: "deadline" });
    await answer(slow === a ? b : a, ["rescued"]);
    const messages = await readSse(await pending);
    expect(messages.map((m) => m.event)).toEqual(["chunk", "done"]);
    const row = (await breakerStatus()).find((r) => r.agentId === slow.id && r.model === null);
    expect(row).toMatchObject({ failures: 1 });
  });

  it("idle timeout mid-stream: an error event GATEWAY_TIMEOUT for the caller, cancel for the agent", async () => {
    const model = uniqueId("idle");
    const agent = await agentServing(model);
    const pending = postJson("/v1/chat/completions", chat(model, { stream: true }));
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, "and then silence");
    const sse = new SseReader((await pending).body as ReadableStream<Uint8Array>);
    await sse.next(); // role
    expect(JSON.parse((await sse.next())?.data ?? "").choices[0].delta).toEqual({
      content: "and then silence",
    });
    await advanceHubClock(5_001); // IDLE_CHUNK_TIMEOUT_MS in the test config is 5000
    expect(JSON.parse((await sse.next())?.data ?? "")).toMatchObject({
      error: { code: "GATEWAY_TIMEOUT", type: "server_error" },
    });
    expect((await sse.next())?.data).toBe("[DONE]");
    expect(await sse.next()).toBeNull();
    expect(await agent.next("cancel")).toEqual({ type: "cancel", id: frame.id, reason: "deadline" });
  });

  it("X-Orchard-Timeout-Ms: the deadline reaches the agent, and expiry is a 504 plus cancel (real alarm)", async () => {
    const model = uniqueId("deadline");
    const agent = await agentServing(model);
    const started = Date.now();
    const pending = postJson(
      "/generate",
      { prompt: "x", model },
      { headers: { "X-Orchard-Timeout-Ms": "400" } },
    );
    const frame = await agent.next("generate");
    expect(frame.deadline).toBeGreaterThanOrEqual(started + 400);
    expect(frame.deadline).toBeLessThanOrEqual(Date.now() + 400);
    const response = await pending;
    expect(Date.now() - started).toBeGreaterThanOrEqual(390);
    expect(response.status).toBe(504);
    expect(await response.json()).toMatchObject({ error: { code: "GATEWAY_TIMEOUT" } });
    expect(await agent.next("cancel")).toEqual({ type: "cancel", id: frame.id, reason: "deadline" });
    // The request's own deadline says nothing about the agent's health.
    const rows = (await breakerStatus()).filter((r) => r.agentId === agent.id);
    expect(rows.every((r) => r.failures === 0)).toBe(true);
  });

  it("the request deadline covers the queue wait too", async () => {
    const model = uniqueId("deadline-queued");
    const agent = await agentServing(model);
    const running = postJson("/generate", { prompt: "running", model });
    const runningFrame = await agent.next("generate");
    const queued = await postJson("/v1/chat/completions", chat(model), {
      headers: { "X-Orchard-Timeout-Ms": "300" },
    });
    expect(queued.status).toBe(504);
    expect(await queued.json()).toMatchObject({ error: { code: "GATEWAY_TIMEOUT", type: "server_error" } });
    await agent.done(runningFrame.id);
    expect((await running).status).toBe(200);
  });

  it("X-Orchard-Timeout-Ms must be a positive integer (400), and is capped at REQUEST_TIMEOUT_MAX_MS", async () => {
    for (const value of ["abc", "0", "-5", "1.5", "1e3", " "]) {
      const own = await postJson(
        "/generate",
        { prompt: "x" },
        { headers: { "X-Orchard-Timeout-Ms": value } },
      );
      expect(own.status, value).toBe(400);
      expect(await own.json()).toMatchObject({ error: { code: "INVALID_REQUEST" } });
    }
    const openai = await postJson("/v1/chat/completions", chat("m"), {
      headers: { "X-Orchard-Timeout-Ms": "soon" },
    });
    expect(await openai.json()).toMatchObject({
      error: { code: "INVALID_REQUEST", param: "X-Orchard-Timeout-Ms" },
    });

    const model = uniqueId("cap");
    const agent = await agentServing(model);
    const pending = postJson(
      "/generate",
      { prompt: "x", model },
      { headers: { "X-Orchard-Timeout-Ms": "99999999" } },
    );
    const frame = await agent.next("generate");
    expect(frame.deadline).toBeLessThanOrEqual(Date.now() + 600_000);
    expect(frame.deadline).toBeGreaterThan(Date.now() + 590_000);
    await agent.done(frame.id);
    expect((await pending).status).toBe(200);
  });
});

describe("backpressure", () => {
  async function queueTotal(model: string): Promise<number> {
    const response = await gatewayFetch("/agents", { headers: await admin() });
    const body = (await response.json()) as { summary: { queue: { byModel: Record<string, number> } } };
    return body.summary.queue.byModel[model] ?? 0;
  }

  it("bounds the queue per model: one full model does not turn away another", async () => {
    const [m1, m2] = [uniqueId("qa"), uniqueId("qb")];
    const agent = await agentServing([m1, m2], 1);
    const running = postJson("/generate", { prompt: "running", model: m1 });
    const runningFrame = await agent.next("generate");
    const queued = [1, 2].map((n) => postJson("/generate", { prompt: `a${n}`, model: m1 }));
    await waitFor(async () => (await queueTotal(m1)) === 2, 2000, "m1 queue full");
    const rejected = await postJson("/generate", { prompt: "a3", model: m1 });
    expect(rejected.status).toBe(429);
    const other = [1, 2].map((n) => postJson("/generate", { prompt: `b${n}`, model: m2 }));
    await waitFor(async () => (await queueTotal(m2)) === 2, 2000, "m2 queue accepts its own");
    await agent.done(runningFrame.id);
    await running;
    for (let i = 0; i < 4; i++) await answer(agent);
    for (const r of [...queued, ...other]) expect((await r).status).toBe(200);
  });

  it("Retry-After on 429 grows with the queue's recent service time", async () => {
    const model = uniqueId("retry-after");
    const agent = await agentServing(model, 1);
    // One request that takes ~1.2 s: the model's service time.
    const slow = postJson("/generate", { prompt: "slow", model });
    const slowFrame = await agent.next("generate");
    await sleep(1200);
    await agent.done(slowFrame.id);
    await slow;

    const running = postJson("/generate", { prompt: "running", model });
    const runningFrame = await agent.next("generate");
    const queued = [1, 2].map((n) => postJson("/generate", { prompt: `q${n}`, model }));
    await waitFor(async () => (await queueTotal(model)) === 2, 2000, "a full queue");
    const rejected = await postJson("/generate", { prompt: "rejected", model });
    expect(rejected.status).toBe(429);
    // 2 queued ahead / (1 slot per ~1.2 s, a little more on a loaded machine) = ~2.4 s -> 3.
    const retryAfter = Number(rejected.headers.get("Retry-After"));
    expect(retryAfter).toBeGreaterThanOrEqual(3);
    expect(retryAfter).toBeLessThanOrEqual(5);
    expect(await rejected.json()).toMatchObject({ error: { code: "QUEUE_FULL" } });
    await agent.done(runningFrame.id);
    await running;
    for (let i = 0; i < 2; i++) await answer(agent);
    for (const q of queued) expect((await q).status).toBe(200);
  });

  it("a burst never puts more on an agent than its capacity", async () => {
    const model = uniqueId("burst");
    const agent = await agentServing(model, 2);
    const burst = Array.from({ length: 8 }, (_, i) => postJson("/generate", { prompt: `b${i}`, model }));
    const statuses: number[] = [];
    let outstanding = 0;
    let served = 0;
    // 2 run, 2 queue (QUEUE_MAX 2), the rest are turned away at once.
    const settled = Promise.all(burst.map(async (r) => statuses.push((await r).status)));
    await waitFor(() => statuses.filter((s) => s === 429).length === 4, 3000, "four rejections");
    while (served < 4) {
      const frame = await agent.next("generate");
      outstanding += 1;
      const pending = agent.frames.filter((f) => f.type === "generate").length;
      expect(outstanding + pending).toBeLessThanOrEqual(2);
      await agent.done(frame.id);
      outstanding -= 1;
      served += 1;
    }
    await settled;
    expect(statuses.sort()).toEqual([200, 200, 200, 200, 429, 429, 429, 429]);
  });

  it("a caller that does not read: the hub stops at STREAM_BUFFER_MAX_BYTES, cancels, and ends with SLOW_CONSUMER", async () => {
    const model = uniqueId("slow-reader");
    const agent = await agentServing(model);
    const pending = postJson("/generate", { prompt: "x", model, stream: true, max_tokens: 4096 });
    const frame = await agent.next("generate");
    // 64 tokens per 16 KiB chunk keeps within what max_tokens allows (256 characters a token), so
    // only the unread bytes stop the stream.
    const piece = "y".repeat(16 * 1024);
    await agent.chunk(frame.id, piece, 64);
    const response = await pending; // headers only: the body is left unread for now
    let sent = 1;
    // STREAM_BUFFER_MAX_BYTES is 64 KiB in the test config; whatever the runtime's pipes hold on top
    // of that, the hub must give up long before 4 MiB.
    while (!agent.frames.some((f) => f.type === "cancel") && sent < 256) {
      agent.send({ type: "chunk", id: frame.id, text: piece, tokens: 64 });
      sent += 1;
      if (sent % 8 === 0) await sleep(10);
    }
    expect(await agent.next("cancel")).toEqual({ type: "cancel", id: frame.id, reason: "slow_consumer" });
    expect(sent).toBeLessThan(64); // < 1 MiB sent in all (8 in practice: 128 KiB)
    const messages = await readSse(response);
    expect(messages.at(-1)?.event).toBe("error");
    expect(JSON.parse(messages.at(-1)?.data ?? "")).toMatchObject({ error: { code: "SLOW_CONSUMER" } });
    expect(messages.slice(0, -1).every((m) => m.event === "chunk")).toBe(true);
  });
});

describe("model fallbacks (MODEL_FALLBACKS in the test config: fb-primary -> fb-unknown, fb-secondary)", () => {
  it("serves the fallback when no agent can serve the requested model, and says so", async () => {
    const agent = await agentServing("fb-secondary");
    const pending = postJson("/generate", { prompt: "x", model: "fb-primary" });
    const frame = await answer(agent, ["from the fallback"]);
    expect(frame.model).toBe("fb-secondary");
    const response = await pending;
    expect(response.status).toBe(200);
    expect(response.headers.get("X-Orchard-Model")).toBe("fb-secondary");
    expect(response.headers.get("X-Orchard-Fallback")).toBe("fb-primary");
    expect(await response.json()).toMatchObject({ model_name: "fb-secondary", text: "from the fallback" });

    const streamed = postJson("/v1/chat/completions", chat("fb-primary", { stream: true }));
    await answer(agent, ["hi"]);
    const sse = await streamed;
    expect(sse.headers.get("X-Orchard-Fallback")).toBe("fb-primary");
    const chunks = (await readSse(sse)).filter((m) => m.data !== "[DONE]").map((m) => JSON.parse(m.data));
    expect(chunks.every((c) => c.model === "fb-secondary")).toBe(true);
  });

  it("does not fall back when the requested model is merely busy", async () => {
    const primary = await agentServing("fb-primary", 1);
    const secondary = await agentServing("fb-secondary", 1);
    const running = postJson("/generate", { prompt: "1", model: "fb-primary" });
    const runningFrame = await primary.next("generate");
    const queued = postJson("/v1/chat/completions", chat("fb-primary"));
    expect(await secondary.unread("generate")).toEqual([]);
    await primary.done(runningFrame.id);
    expect((await running).headers.get("X-Orchard-Fallback")).toBeNull();
    await answer(primary);
    const response = await queued;
    expect(response.headers.get("X-Orchard-Model")).toBe("fb-primary");
    expect(response.headers.get("X-Orchard-Fallback")).toBeNull();
    expect(await response.json()).toMatchObject({ model: "fb-primary" });
  });

  it("every inference response names its model in X-Orchard-Model", async () => {
    const model = uniqueId("named");
    const agent = await agentServing(model);
    const pending = postJson("/v1/chat/completions", chat(model));
    await answer(agent);
    expect((await pending).headers.get("X-Orchard-Model")).toBe(model);
  });
});
