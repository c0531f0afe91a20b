// Faults: agents that stay connected but misbehave (RogueAgent test doubles speaking the real protocol
// with real agent tokens) next to a real agent. Callers must be served by the real agent or get a
// clean, bounded error; the rogue must be cancelled, closed or shut out by its circuit breaker. What
// the real agent answers is compared with the same engine's greedy answer computed in this process.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { demoModelSpec } from "../../../node-agent/demo-model.ts";
import { ReferenceEngine } from "../../helpers/expected-text.ts";
import {
  Admin,
  Caller,
  chatStreamError,
  chatStreamText,
  errorCode,
  generateStreamError,
  generateStreamText,
  MODEL,
  SseReader,
  within,
} from "../../helpers/faults.ts";
import { RogueAgent, type RogueBehaviour } from "../../helpers/rogue-agent.ts";
import { type AgentProcess, type Stack, startStack } from "../../helpers/stack.ts";

const FIRST_CHUNK_TIMEOUT_MS = 1_500;
const IDLE_CHUNK_TIMEOUT_MS = 1_000;
const REQUEST_TIMEOUT_MAX_MS = 4_000;
const BREAKER_MIN_CALLS = 3;

let stack: Stack;
let admin: Admin;
let caller: Caller;
let real: AgentProcess;
let reference: ReferenceEngine;
const rogues: RogueAgent[] = [];
const observed: Record<string, number> = {};

async function rogue(agentId: string, behaviour: RogueBehaviour, models = [MODEL]): Promise<RogueAgent> {
  const r = await RogueAgent.connect({
    origin: stack.origin,
    token: await stack.token("agent", agentId),
    agentId,
    models,
    behaviour,
  });
  rogues.push(r);
  return r;
}

beforeAll(async () => {
  stack = await startStack({
    vars: {
      HEALTH_INTERVAL_MS: "300",
      FIRST_CHUNK_TIMEOUT_MS: String(FIRST_CHUNK_TIMEOUT_MS),
      IDLE_CHUNK_TIMEOUT_MS: String(IDLE_CHUNK_TIMEOUT_MS),
      REQUEST_TIMEOUT_MAX_MS: String(REQUEST_TIMEOUT_MAX_MS),
      BREAKER_MIN_CALLS: String(BREAKER_MIN_CALLS),
      BREAKER_FAILURE_RATE: "0.5",
      // Long enough that an opened breaker stays open for the rest of the file.
      BREAKER_COOLDOWN_MS: "120000",
    },
  });
  admin = await Admin.for(stack);
  caller = new Caller(stack.origin, await stack.token("user", "rogue-caller"));
  reference = await ReferenceEngine.start((await demoModelSpec(stack.cacheDir)).path);
  real = await stack.startAgent({ id: "real-1", args: ["--capacity", "4"] });
});

afterEach(async () => {
  await Promise.all(rogues.splice(0).map((r) => r.close()));
  await stack.waitForAgents((list) => list.every((a) => a.id === "real-1"));
});

afterAll(async () => {
  if (Object.keys(observed).length > 0) console.info("misbehaving-agents observations (ms):", observed);
  await stack?.stop();
  await reference?.close();
});

const short = (i: number) => ({ prompt: `short request ${i}`, max_tokens: 12, temperature: 0 });

/** Each response is 200 with the real agent's whole answer to short(first + its index). */
async function expectAnswered(results: Response[], first: number): Promise<void> {
  const bodies = await Promise.all(
    results.map(
      async (r) => ({ status: r.status, ...((await r.json()) as object) }) as Record<string, unknown>,
    ),
  );
  const expected = await Promise.all(
    results.map((_, i) => reference.answer({ prompt: short(first + i).prompt, maxTokens: 12 })),
  );
  expect(bodies).toEqual(
    expected.map((e) =>
      expect.objectContaining({
        status: 200,
        text: e.text,
        tokens_generated: 12,
        prompt_tokens: e.promptTokens,
      }),
    ),
  );
}

/** The real agent's log says it started each of `ids`, once. */
function expectRanOnceOnReal(ids: string[]): void {
  const started = real.lines
    .filter((l) => l.includes('"msg":"generation started"'))
    .map((l) => (JSON.parse(l) as { id: string }).id);
  expect(ids.map((id) => started.filter((s) => s === id).length)).toEqual(ids.map(() => 1));
}

describe("an agent that accepts work and never answers", () => {
  it("costs callers one first-chunk timeout, then its breaker opens and it gets no more work", async () => {
    const silent = await rogue("rogue-silent", { kind: "never-answers" });
    await stack.waitForAgents((list) => list.filter((a) => a.ready).length === 2);

    // Waves of concurrent requests: each wave puts work on both agents (least loaded first).
    const started = Date.now();
    for (let wave = 0; wave < 6; wave++) {
      const results = await within(
        Promise.all(
          Array.from({ length: 4 }, (_, i) => caller.generate(short(wave * 4 + i), { timeoutMs: 15_000 })),
        ),
        15_000,
        `wave ${wave}`,
      );
      await expectAnswered(results, wave * 4);
      if ((await admin.breaker("rogue-silent"))?.state === "open") break;
    }
    observed.silentAgentBreakerOpenAfter = Date.now() - started;
    const breaker = await admin.breaker("rogue-silent");
    expect(breaker).toMatchObject({ state: "open" });
    expect(breaker?.failures).toBeGreaterThanOrEqual(BREAKER_MIN_CALLS);
    expect(silent.generates.length).toBe(breaker?.failures);
    const healthy = await admin.breaker("real-1");
    expect(healthy?.state ?? "closed").toBe("closed");
    expect((await admin.agents()).agents.find((a) => a.id === "rogue-silent")?.breaker).toBe("open");

    // Every attempt it swallowed was cancelled when its first-chunk deadline passed.
    await silent.waitFor(
      () => silent.cancels.length === silent.generates.length,
      3_000,
      "a cancel per generate",
    );
    expect(silent.cancels.map((c) => c.reason)).toEqual(silent.generates.map(() => "deadline"));
    expect(silent.inFlight).toBe(0);

    // Open breaker: work goes straight to the real agent, without the first-chunk wait.
    const sent = silent.generates.length;
    const t0 = Date.now();
    const after = await Promise.all(
      Array.from({ length: 6 }, (_, i) => caller.generate(short(100 + i), { timeoutMs: 10_000 })),
    );
    expect(Date.now() - t0).toBeLessThan(FIRST_CHUNK_TIMEOUT_MS);
    await expectAnswered(after, 100);
    // Anything the hub had sent it before those answers has arrived by now.
    await silent.barrier();
    expect(silent.generates.length).toBe(sent);

    // An operator can close it again.
    const reset = await admin.resetBreakers({ agentId: "rogue-silent" });
    expect(reset.status).toBe(200);
    expect((await admin.breaker("rogue-silent"))?.state ?? "closed").toBe("closed");

    await silent.close();
    await admin.expectNothingInFlight(["real-1"], Date.now());
  });
});

describe("an agent that dies before its first chunk", () => {
  it("has its request retried on the real agent, invisibly", async () => {
    const dying = await rogue("rogue-dying", { kind: "dies-before-first-chunk" });
    await stack.waitForAgents((list) => list.filter((a) => a.ready).length === 2);
    const before = (await admin.agents()).summary.metrics.retries;
    const ids = Array.from({ length: 4 }, (_, i) => `retried-${i}`);
    const results = await Promise.all(
      ids.map((id, i) =>
        caller.generate(short(200 + i), { headers: { "X-Request-Id": id }, timeoutMs: 10_000 }),
      ),
    );
    await expectAnswered(results, 200);
    expect(dying.generates).toHaveLength(1);
    expect(ids).toContain(dying.generates[0]?.id);
    expect((await dying.closed).code).toBe(1006);
    expectRanOnceOnReal(ids);
    const view = await admin.expectNothingInFlight(["real-1"], Date.now());
    // At least its one request went elsewhere; more if the hub sent it work before noticing it was
    // gone, and never more than one retry per request (the real agent answered each).
    expect(view.summary.metrics.retries).toBeGreaterThanOrEqual(before + 1);
    expect(view.summary.metrics.retries).toBeLessThanOrEqual(before + ids.length);
  });

  it("gives up after DISPATCH_MAX_ATTEMPTS (3) agents died on the same request", async () => {
    const model = "dying-model";
    const dying = await Promise.all(
      [1, 2, 3, 4].map((n) => rogue(`rogue-dying-${n}`, { kind: "dies-before-first-chunk" }, [model])),
    );
    await stack.waitForAgents((list) => list.filter((a) => a.ready).length === 5);
    const t0 = Date.now();
    const res = await caller.post(
      "/generate",
      { model, prompt: "nobody will answer", max_tokens: 4 },
      { timeoutMs: 10_000 },
    );
    observed.threeDeathsToError = Date.now() - t0;
    expect(res.status).toBe(502);
    expect(await errorCode(res)).toBe("UPSTREAM_ERROR");
    expect(dying.map((d) => d.generates.length).sort()).toEqual([0, 1, 1, 1]);
  });
});

describe("an agent that sends malformed frames", () => {
  it("is closed with 4000 PROTOCOL_ERROR right after its welcome; the real agent is untouched", async () => {
    const before = (await admin.agents()).agents.find((a) => a.id === "real-1");
    const garbage = await rogue("rogue-garbage", { kind: "malformed" });
    const closed = await within(garbage.closed, 5_000, "the garbage agent's close");
    expect(closed.code).toBe(4000);
    const after = (await admin.agents()).agents;
    expect(after.map((a) => a.id)).toEqual(["real-1"]);
    expect(after[0]?.sessionId).toBe(before?.sessionId);
    await expectAnswered([await caller.generate(short(300))], 300);
    expect(real.lines.some((l) => l.includes('"msg":"disconnected"'))).toBe(false);
  });

  it("answering a generate with garbage closes it, and its caller is served by the real agent", async () => {
    const garbage = await rogue("rogue-garbage-2", { kind: "malformed", when: "on-generate" });
    await stack.waitForAgents((list) => list.filter((a) => a.ready).length === 2);
    const before = (await admin.agents()).summary.metrics.retries;
    const ids = Array.from({ length: 4 }, (_, i) => `garbage-answered-${i}`);
    const results = await Promise.all(
      ids.map((id, i) =>
        caller.generate(short(400 + i), { headers: { "X-Request-Id": id }, timeoutMs: 10_000 }),
      ),
    );
    await expectAnswered(results, 400);
    expect((await within(garbage.closed, 5_000, "close")).code).toBe(4000);
    // It answered its first generate with garbage (and any sent before the hub closed it, which
    // arrived before the close): each of those requests was retried once, on the real agent.
    expect(garbage.generates.length).toBeGreaterThanOrEqual(1);
    expect(garbage.generates.every((g) => ids.includes(g.id))).toBe(true);
    expectRanOnceOnReal(ids);
    const view = await admin.expectNothingInFlight(["real-1"], Date.now());
    expect(view.summary.metrics.retries).toBe(before + garbage.generates.length);
  });
});

describe("an agent that answers slowly", () => {
  it("a stream idle for IDLE_CHUNK_TIMEOUT_MS ends with a GATEWAY_TIMEOUT event, and the agent is cancelled", async () => {
    const slow = await rogue("rogue-stalls", { kind: "slow", firstChunkAfterMs: 0, intervalMs: 60_000 }, [
      "stall-model",
    ]);
    const t0 = Date.now();
    const res = await caller.post(
      "/generate",
      { model: "stall-model", prompt: "x", max_tokens: 100, stream: true },
      { headers: { "X-Request-Id": "idle-stream" }, timeoutMs: 15_000 },
    );
    expect(res.status).toBe(200);
    const stream = new SseReader(res);
    await stream.until((e) => e.event === "chunk", 3_000, "first chunk");
    const firstChunkAt = Date.now();
    const events = await stream.rest(IDLE_CHUNK_TIMEOUT_MS + 3_000);
    observed.idleStreamEndedAfterFirstChunk = Date.now() - firstChunkAt;
    // The one chunk it sent, then the timeout.
    expect(events.map((e) => e.event)).toEqual(["chunk", "error"]);
    expect(generateStreamText(events)).toBe("slow ");
    expect(slow.streams.get("idle-stream")?.chunksSent).toBe(1);
    expect(generateStreamError(events)).toMatchObject({ code: "GATEWAY_TIMEOUT", requestId: "idle-stream" });
    expect(observed.idleStreamEndedAfterFirstChunk).toBeGreaterThanOrEqual(IDLE_CHUNK_TIMEOUT_MS - 100);
    expect(observed.idleStreamEndedAfterFirstChunk).toBeLessThan(IDLE_CHUNK_TIMEOUT_MS + 2_000);
    await slow.waitFor(() => slow.cancels.length === 1, 2_000, "cancel");
    expect(slow.cancels[0]).toMatchObject({ id: "idle-stream", reason: "deadline" });

    // Without streaming the caller gets a 504 once the stream has gone idle.
    const plain = await caller.post(
      "/generate",
      { model: "stall-model", prompt: "x", max_tokens: 100 },
      { timeoutMs: 15_000 },
    );
    expect(plain.status).toBe(504);
    expect(await errorCode(plain)).toBe("GATEWAY_TIMEOUT");
    await slow.waitFor(() => slow.cancels.length === 2, 2_000, "second cancel");
    expect(slow.inFlight).toBe(0);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it("X-Orchard-Timeout-Ms bounds a stream that keeps trickling: 504 or an error event at the deadline", async () => {
    const trickle = await rogue("rogue-trickle", { kind: "slow", firstChunkAfterMs: 0, intervalMs: 200 }, [
      "trickle-model",
    ]);
    const deadlineMs = 1_200;
    const body = { model: "trickle-model", prompt: "x", max_tokens: 100 };
    const headers = { "X-Orchard-Timeout-Ms": String(deadlineMs) };

    let t0 = Date.now();
    const stream = new SseReader(
      await caller.post(
        "/generate",
        { ...body, stream: true },
        { headers: { ...headers, "X-Request-Id": "trickle-stream" }, timeoutMs: 15_000 },
      ),
    );
    const events = await stream.rest(deadlineMs + 3_000);
    observed.trickleStreamDeadline = Date.now() - t0;
    // Every chunk the caller got is one the rogue sent, in order and whole.
    const chunks = events.filter((e) => e.event === "chunk").length;
    expect(chunks).toBeGreaterThan(2);
    expect(generateStreamText(events)).toBe("slow ".repeat(chunks));
    expect(trickle.streams.get("trickle-stream")?.chunksSent).toBeGreaterThanOrEqual(chunks);
    expect(events.at(-1)?.event).toBe("error");
    expect(generateStreamError(events)?.code).toBe("GATEWAY_TIMEOUT");
    expect(observed.trickleStreamDeadline).toBeGreaterThanOrEqual(deadlineMs - 100);
    expect(observed.trickleStreamDeadline).toBeLessThan(deadlineMs + 2_000);

    t0 = Date.now();
    const chatRes = await caller.post(
      "/v1/chat/completions",
      { model: "trickle-model", messages: [{ role: "user", content: "x" }], max_tokens: 100, stream: true },
      { headers: { ...headers, "X-Request-Id": "trickle-chat" }, timeoutMs: 15_000 },
    );
    expect(chatRes.status).toBe(200);
    const chat = new SseReader(chatRes);
    const chatEvents = await chat.rest(deadlineMs + 3_000);
    const chatChunks = chatEvents.filter((e) => e.data.includes('"content":"slow')).length;
    expect(chatChunks).toBeGreaterThan(2);
    expect(chatStreamText(chatEvents)).toBe("slow ".repeat(chatChunks));
    expect(trickle.streams.get("trickle-chat")?.chunksSent).toBeGreaterThanOrEqual(chatChunks);
    expect(chatStreamError(chatEvents), JSON.stringify(chatEvents.slice(-3))).toMatchObject({
      code: "GATEWAY_TIMEOUT",
    });
    expect(chatEvents.at(-1)?.data).toBe("[DONE]");
    expect(Date.now() - t0).toBeLessThan(deadlineMs + 2_000);

    t0 = Date.now();
    const plain = await caller.post("/generate", body, { headers, timeoutMs: 15_000 });
    observed.trickleNonStreamingDeadline = Date.now() - t0;
    expect(plain.status, `${await plain.clone().text()} ${JSON.stringify(await admin.breakers())}`).toBe(504);
    expect(await errorCode(plain)).toBe("GATEWAY_TIMEOUT");
    expect(observed.trickleNonStreamingDeadline).toBeLessThan(deadlineMs + 2_000);

    // A header above REQUEST_TIMEOUT_MAX_MS is capped to it.
    t0 = Date.now();
    const capped = await caller.post("/generate", body, {
      headers: { "X-Orchard-Timeout-Ms": "600000" },
      timeoutMs: 20_000,
    });
    observed.cappedDeadline = Date.now() - t0;
    expect(capped.status).toBe(504);
    expect(observed.cappedDeadline).toBeGreaterThanOrEqual(REQUEST_TIMEOUT_MAX_MS - 100);
    expect(observed.cappedDeadline).toBeLessThan(REQUEST_TIMEOUT_MAX_MS + 2_000);

    await trickle.waitFor(() => trickle.cancels.length === 4, 2_000, "a cancel per request");
    expect(trickle.cancels.map((c) => c.reason)).toEqual(["deadline", "deadline", "deadline", "deadline"]);
    expect(trickle.inFlight).toBe(0);
    await admin.expectNothingInFlight(["real-1"], Date.now(), 3_000);
  });
});
