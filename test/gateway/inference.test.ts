// The inference path end to end inside workerd: HTTP caller -> Worker -> AgentHub -> scripted
// agent on a real WebSocket, and back as JSON or SSE.
import { describe, expect, it } from "vitest";
import type { GenerateFrame } from "../../schema/protocol.ts";
import {
  bearer,
  gatewayFetch,
  postJson,
  readSse,
  SseReader,
  sleep,
  TestAgent,
  trackedAgents,
  uniqueId,
  waitFor,
  waitForNoAgents,
} from "./helpers.ts";

const agents = trackedAgents();
const agentServing = (model: string, capacity = 1) => agents.serving(model, capacity);

async function hubSummary() {
  const response = await gatewayFetch("/agents", { headers: await bearer({ role: "admin" }) });
  return (await response.json()) as {
    agents: { id: string; inFlight: number; cancelling: number }[];
    summary: { queue: { total: number }; metrics: { requests: Record<string, number>; retries: number } };
  };
}

/** Which of two agents received a generate frame (without consuming it), and the other one. */
function whoGotIt(a: TestAgent, b: TestAgent): Promise<readonly [TestAgent, TestAgent]> {
  const got = (agent: TestAgent) => agent.frames.some((f) => f.type === "generate");
  return waitFor(
    () => (got(a) ? ([a, b] as const) : got(b) ? ([b, a] as const) : null),
    2000,
    "a generate frame",
  );
}

/** Answers one generate frame with the given pieces and a done. */
async function answer(agent: TestAgent, pieces: string[]): Promise<GenerateFrame> {
  const frame = await agent.next("generate");
  for (const piece of pieces) await agent.chunk(frame.id, piece);
  await agent.done(frame.id, { promptTokens: 4, completionTokens: pieces.length });
  return frame;
}

describe("POST /generate", () => {
  it("dispatches a generate frame and returns the whole completion", async () => {
    const model = uniqueId("gen");
    const agent = await agentServing(model);
    const pending = postJson(
      "/generate",
      { prompt: "Hello", model, max_tokens: 16, temperature: 0.5, top_p: 0.9, seed: 7, stop: "\n" },
      { headers: { "X-Request-Id": "req-generate-1" } },
    );
    const frame = await answer(agent, ["Hi", " there"]);
    expect(frame).toEqual({
      type: "generate",
      id: "req-generate-1",
      model,
      prompt: "Hello",
      params: { maxTokens: 16, temperature: 0.5, topP: 0.9, seed: 7, stop: ["\n"] },
      deadline: expect.any(Number),
      timeoutMs: expect.any(Number),
    });
    const response = await pending;
    expect(response.status).toBe(200);
    expect(response.headers.get("X-Request-Id")).toBe("req-generate-1");
    expect(await response.json()).toEqual({
      text: "Hi there",
      tokens_generated: 2,
      prompt_tokens: 4,
      finish_reason: "stop",
      latency_ms: expect.any(Number),
      model_name: model,
      request_id: "req-generate-1",
    });
  });

  it("uses the first served model when the body names none", async () => {
    const model = uniqueId("default");
    const agent = await agentServing(model);
    const pending = postJson("/generate", { prompt: "x" });
    const frame = await answer(agent, ["ok"]);
    expect(frame.model).toBe(model);
    expect(frame.params).toEqual({ maxTokens: 128 });
    expect(await (await pending).json()).toMatchObject({ model_name: model, text: "ok" });
  });

  it("streams chunks as SSE as they arrive, then done with the usage", async () => {
    const model = uniqueId("sse");
    const agent = await agentServing(model);
    const pending = postJson("/generate", { prompt: "Hi", model, stream: true });
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, "one");
    const response = await pending;
    expect(response.headers.get("Content-Type")).toMatch(/^text\/event-stream/);
    const sse = new SseReader(response.body as ReadableStream<Uint8Array>);
    // The first chunk reaches the caller while the agent is still generating: nothing is buffered.
    expect(await sse.next()).toEqual({ event: "chunk", data: JSON.stringify({ text: "one" }) });
    await agent.chunk(frame.id, " two");
    expect(await sse.next()).toEqual({ event: "chunk", data: JSON.stringify({ text: " two" }) });
    await agent.done(frame.id, { promptTokens: 2, completionTokens: 2 });
    const done = await sse.next();
    expect(done?.event).toBe("done");
    expect(JSON.parse(done?.data ?? "")).toMatchObject({
      tokens_generated: 2,
      prompt_tokens: 2,
      finish_reason: "stop",
      model_name: model,
      request_id: frame.id,
    });
    expect(await sse.next()).toBeNull();
  });

  it("ends the stream with an explicit error event when the agent disconnects mid-stream", async () => {
    const model = uniqueId("midstream");
    const agent = await agentServing(model);
    const pending = postJson("/generate", { prompt: "Hi", model, stream: true });
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, "partial");
    const response = await pending;
    const sse = new SseReader(response.body as ReadableStream<Uint8Array>);
    expect((await sse.next())?.event).toBe("chunk");
    agent.close(1001);
    const error = await sse.next();
    expect(error?.event).toBe("error");
    expect(JSON.parse(error?.data ?? "")).toMatchObject({
      error: { code: "UPSTREAM_ERROR", requestId: frame.id },
    });
    expect(await sse.next()).toBeNull();
  });
  it("answers a non-streamed request that fails after its first chunk with an error status, not partial text", async () => {
    const model = uniqueId("gen-partial");
    const agent = await agentServing(model);
    const pending = postJson(
      "/generate",
      { prompt: "Hi", model },
      { headers: { "X-Request-Id": "req-partial" } },
    );
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, "half an ans");
    agent.close(1001);
    const response = await pending;
    expect(response.status).toBe(502);
    expect(await response.json()).toEqual({
      error: {
        code: "UPSTREAM_ERROR",
        message: expect.stringContaining("mid-stream"),
        requestId: "req-partial",
      },
    });
  });

  it("renders chunk text with quotes, newlines and non-ASCII exactly, streamed or not", async () => {
    const model = uniqueId("escape");
    const agent = await agentServing(model, 2);
    const pieces = ['say "hi"\n', "caf\u00e9 \u{1F34E}", "\\end</s>"];
    const whole = postJson("/generate", { prompt: "x", model });
    await answer(agent, pieces);
    expect(((await (await whole).json()) as { text: string }).text).toBe(pieces.join(""));
    const streamed = postJson("/v1/chat/completions", {
      model,
      messages: [{ role: "user", content: "x" }],
      stream: true,
    });
    await answer(agent, pieces);
    const messages = await readSse(await streamed);
    const deltas = messages.slice(1, -2).map((m) => JSON.parse(m.data).choices[0].delta.content);
    expect(deltas).toEqual(pieces);
  });
});

describe("POST /v1/chat/completions", () => {
  it("maps the OpenAI request and returns a chat.completion with usage", async () => {
    const model = uniqueId("chat");
    const agent = await agentServing(model);
    const pending = postJson(
      "/v1/chat/completions",
      {
        model,
        messages: [
          { role: "developer", content: "Be brief." },
          { role: "user", content: [{ type: "text", text: "Hi" }] },
        ],
        max_completion_tokens: 20,
        max_tokens: 99,
        temperature: 0,
        top_p: 1,
        stop: ["END", "STOP"],
        seed: 3,
        user: "someone",
        logit_bias: null,
      },
      { headers: { "X-Request-Id": "req-chat-1" } },
    );
    const frame = await answer(agent, ["Hello", "!"]);
    expect(frame).toEqual({
      type: "generate",
      id: "req-chat-1",
      model,
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Hi" },
      ],
      params: { maxTokens: 20, temperature: 0, topP: 1, seed: 3, stop: ["END", "STOP"] },
      deadline: expect.any(Number),
      timeoutMs: expect.any(Number),
    });
    const response = await pending;
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      id: "chatcmpl-req-chat-1",
      object: "chat.completion",
      created: expect.any(Number),
      model,
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: "Hello!", refusal: null },
          logprobs: null,
          finish_reason: "stop",
        },
      ],
      usage: { prompt_tokens: 4, completion_tokens: 2, total_tokens: 6 },
      system_fingerprint: null,
    });
  });

  it("streams chat.completion.chunk objects: role, content, finish, usage, [DONE]", async () => {
    const model = uniqueId("chatsse");
    const agent = await agentServing(model);
    const pending = postJson("/v1/chat/completions", {
      model,
      messages: [{ role: "user", content: "Hi" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const frame = await agent.next("generate");
    expect(frame.params.maxTokens).toBe(512);
    await agent.chunk(frame.id, "Hel");
    await agent.chunk(frame.id, "lo");
    await agent.done(frame.id, { promptTokens: 5, completionTokens: 2 }, "length");
    const messages = await readSse(await pending);
    expect(messages.at(-1)).toEqual({ event: undefined, data: "[DONE]" });
    const chunks = messages.slice(0, -1).map((m) => JSON.parse(m.data));
    for (const chunk of chunks) {
      expect(chunk).toMatchObject({ id: `chatcmpl-${frame.id}`, object: "chat.completion.chunk", model });
    }
    expect(chunks.map((c) => c.choices[0]?.delta ?? null)).toEqual([
      { role: "assistant", content: "" },
      { content: "Hel" },
      { content: "lo" },
      {},
      null,
    ]);
    expect(chunks[3].choices[0].finish_reason).toBe("length");
    expect(chunks[2].usage).toBeNull();
    expect(chunks[4]).toMatchObject({
      choices: [],
      usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 },
    });
  });

  it("ends an OpenAI stream with an error data line, then [DONE], when the agent fails after the first chunk", async () => {
    const model = uniqueId("chatfail");
    const agent = await agentServing(model);
    const pending = postJson("/v1/chat/completions", {
      model,
      messages: [{ role: "user", content: "x" }],
      stream: true,
    });
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, "a");
    await agent.deliver({
      type: "error",
      id: frame.id,
      code: "ENGINE_ERROR",
      message: "boom",
      retryable: true,
    });
    const messages = await readSse(await pending);
    expect(messages.at(-1)).toEqual({ event: undefined, data: "[DONE]" });
    expect(JSON.parse(messages.at(-2)?.data ?? "")).toEqual({
      error: {
        message: "the model server failed while generating",
        type: "server_error",
        param: null,
        code: "UPSTREAM_ERROR",
      },
    });
  });
});

describe("dispatch decisions", () => {
  it("404 MODEL_NOT_FOUND for a model never seen, 503 NO_AGENT_AVAILABLE once its agents left", async () => {
    const unknown = await postJson("/v1/chat/completions", {
      model: "never-seen",
      messages: [{ role: "user", content: "x" }],
    });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({
      error: { code: "MODEL_NOT_FOUND", type: "not_found_error" },
    });

    const model = uniqueId("gone");
    const agent = await agentServing(model);
    agent.close();
    await waitForNoAgents();
    const gone = await postJson("/generate", { prompt: "x", model });
    expect(gone.status).toBe(503);
    expect(await gone.json()).toMatchObject({ error: { code: "NO_AGENT_AVAILABLE" } });
  });

  it("queues a request while the agent is at capacity and serves it when a slot frees", async () => {
    const model = uniqueId("cap");
    const agent = await agentServing(model, 1);
    const first = postJson("/generate", { prompt: "1", model });
    const firstFrame = await agent.next("generate");
    const second = postJson("/generate", { prompt: "2", model });
    await waitFor(async () => (await hubSummary()).summary.queue.total === 1, 2000, "the request to queue");
    expect(await agent.unread("generate")).toEqual([]);

    await agent.chunk(firstFrame.id, "one");
    await agent.done(firstFrame.id);
    expect(await (await first).json()).toMatchObject({ text: "one" });
    const secondFrame = await answer(agent, ["two"]);
    expect(secondFrame.prompt).toBe("2");
    expect(await (await second).json()).toMatchObject({ text: "two" });
  });

  it("answers 429 QUEUE_FULL with Retry-After when the bounded queue is full", async () => {
    const model = uniqueId("full");
    const agent = await agentServing(model, 1);
    const running = postJson("/generate", { prompt: "running", model });
    const runningFrame = await agent.next("generate");
    const queued = [
      postJson("/generate", { prompt: "q1", model }),
      postJson("/generate", { prompt: "q2", model }),
    ];
    await waitFor(async () => (await hubSummary()).summary.queue.total === 2, 2000, "two queued requests");

    const rejected = await postJson("/v1/chat/completions", {
      model,
      messages: [{ role: "user", content: "x" }],
    });
    expect(rejected.status).toBe(429);
    expect(Number(rejected.headers.get("Retry-After"))).toBeGreaterThanOrEqual(1);
    expect(await rejected.json()).toMatchObject({ error: { code: "QUEUE_FULL", type: "rate_limit_error" } });

    await agent.done(runningFrame.id);
    await running;
    for (const _ of queued) await answer(agent, ["x"]);
    for (const q of queued) expect((await q).status).toBe(200);
  });

  it("answers 504 QUEUE_TIMEOUT when no slot frees before the queue deadline", async () => {
    const model = uniqueId("timeout");
    const agent = await agentServing(model, 1);
    const running = postJson("/generate", { prompt: "running", model });
    const runningFrame = await agent.next("generate");
    const started = Date.now();
    const waiting = await postJson("/generate", { prompt: "waits", model });
    expect(waiting.status).toBe(504);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
    expect(await waiting.json()).toMatchObject({ error: { code: "QUEUE_TIMEOUT" } });
    await agent.done(runningFrame.id);
    expect((await running).status).toBe(200);
  });

  it("retries a retryable failure before the first chunk on another agent", async () => {
    const model = uniqueId("retry");
    const a = await agentServing(model);
    const b = await agentServing(model);
    const pending = postJson("/generate", { prompt: "x", model });
    const [first, other] = await whoGotIt(a, b);
    const frame = await first.next("generate");
    first.send({ type: "error", id: frame.id, code: "AGENT_BUSY", message: "busy", retryable: true });
    const retried = await answer(other, ["from the other agent"]);
    expect(retried.id).toBe(frame.id);
    expect(await (await pending).json()).toMatchObject({ text: "from the other agent" });
    expect((await hubSummary()).summary.metrics.retries).toBe(1);
  });

  it("fails over when the agent disconnects before the first chunk", async () => {
    const model = uniqueId("failover");
    const a = await agentServing(model);
    const b = await agentServing(model);
    const pending = postJson("/generate", { prompt: "x", model });
    const [victim, survivor] = await whoGotIt(a, b);
    victim.close(1001);
    await answer(survivor, ["saved"]);
    expect(await (await pending).json()).toMatchObject({ text: "saved" });
  });

  it("a superseded connection's unanswered request moves to the newer session of that agent", async () => {
    const model = uniqueId("supersede");
    const older = await agentServing(model);
    const pending = postJson("/generate", { prompt: "x", model });
    await older.next("generate");
    const newer = await TestAgent.ready(
      { models: [{ name: model, engine: "synthetic", loaded: true }] },
      older.id,
    );
    agents.adopt(newer);
    expect((await older.closed).code).toBe(4004);
    // The newer session has not said hello when the older is closed; the request waits for it.
    await answer(newer, ["resumed"]);
    expect(await (await pending).json()).toMatchObject({ text: "resumed" });
  });

  it("maps a non-retryable agent error before the first chunk to an HTTP error", async () => {
    const model = uniqueId("overflow");
    const agent = await agentServing(model);
    const pending = postJson("/v1/chat/completions", { model, messages: [{ role: "user", content: "x" }] });
    const frame = await agent.next("generate");
    agent.send({
      type: "error",
      id: frame.id,
      code: "CONTEXT_OVERFLOW",
      message: "too long",
      retryable: false,
    });
    const response = await pending;
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({
      error: { code: "CONTEXT_OVERFLOW", type: "invalid_request_error" },
    });
  });

  it("gives concurrent requests with the same X-Request-Id distinct frame ids", async () => {
    const model = uniqueId("dupid");
    const agent = await agentServing(model, 2);
    const init = { headers: { "X-Request-Id": "same-id" } };
    const responses = [
      postJson("/generate", { prompt: "a", model }, init),
      postJson("/generate", { prompt: "b", model }, init),
    ];
    const frames = [await agent.next("generate"), await agent.next("generate")];
    expect(new Set(frames.map((f) => f.id))).toEqual(new Set(["same-id", "same-id.2"]));
    for (const f of frames) await agent.done(f.id);
    for (const r of responses) expect((await r).status).toBe(200);
  });
});

describe("caller disconnects", () => {
  it("cancelling a stream sends cancel to the agent and frees the slot", async () => {
    const model = uniqueId("abort-stream");
    const agent = await agentServing(model);
    const pending = postJson("/generate", { prompt: "x", model, stream: true });
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, "first");
    const sse = new SseReader((await pending).body as ReadableStream<Uint8Array>);
    expect((await sse.next())?.event).toBe("chunk");
    await sse.cancel();
    expect(await agent.next("cancel")).toEqual({
      type: "cancel",
      id: frame.id,
      reason: "client_disconnected",
    });
    // The agent still counts the generation it is stopping: the slot frees when it answers.
    expect((await hubSummary()).agents[0]).toMatchObject({ inFlight: 0, cancelling: 1 });
    await agent.chunk(frame.id, "late"); // late frames for a cancelled request are ignored
    await agent.done(frame.id, { promptTokens: 1, completionTokens: 2 }, "cancelled");
    await waitFor(async () => (await hubSummary()).agents[0]?.cancelling === 0, 2000, "the slot to free");
    await sleep(20);
    expect((await hubSummary()).agents).toHaveLength(1);
  });

  it.each([
    ["before the first chunk", false],
    ["after its first chunk (not streamed: the body is not sent yet)", true],
  ])("aborting %s sends cancel to the agent", async (_, afterChunk) => {
    const model = uniqueId("abort-early");
    const agent = await agentServing(model);
    const controller = new AbortController();
    const pending = postJson("/generate", { prompt: "x", model }, { signal: controller.signal }).catch(
      (e) => e,
    );
    const frame = await agent.next("generate");
    if (afterChunk) {
      await agent.chunk(frame.id, "some");
      await sleep(20);
    }
    controller.abort();
    await pending;
    expect(await agent.next("cancel")).toMatchObject({ id: frame.id, reason: "client_disconnected" });
  });

  it("aborting while queued leaves the queue without reaching an agent", async () => {
    const model = uniqueId("abort-queued");
    const agent = await agentServing(model, 1);
    const cancelledBefore = (await hubSummary()).summary.metrics.requests.cancelled ?? Number.NaN;
    const running = postJson("/generate", { prompt: "running", model });
    const runningFrame = await agent.next("generate");
    const controller = new AbortController();
    const queued = postJson("/generate", { prompt: "queued", model }, { signal: controller.signal }).catch(
      (e) => e,
    );
    await waitFor(async () => (await hubSummary()).summary.queue.total === 1, 2000, "the request to queue");
    controller.abort();
    await queued;
    await waitFor(async () => (await hubSummary()).summary.queue.total === 0, 2000, "the queue to empty");
    await agent.done(runningFrame.id);
    await running;
    expect(await agent.unread("generate")).toEqual([]);
    expect((await hubSummary()).summary.metrics.requests.cancelled).toBe(cancelledBefore + 1);
  });
});
