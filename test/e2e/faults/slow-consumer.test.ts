// Faults: a caller that stops reading its stream. The hub must stop buffering for it at
// STREAM_BUFFER_MAX_BYTES, cancel the generation on the agent (reason slow_consumer) and end the
// stream with a SLOW_CONSUMER error event; a caller that keeps reading is never cut off, however much
// it receives. The agent is a RogueAgent streaming 16 KiB chunks back to back (64 tokens each: the
// protocol allows at most 256 characters per token): a real agent on the demo model writes at most
// ~4 KB per generation (1,024 tokens of context; ~16 KB with the 4,096-token copy), which cannot fill
// any sensible buffer bound, so only a fast synthetic stream exercises it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  Admin,
  Caller,
  generateStreamError,
  generateStreamText,
  SseReader,
  waitUntil,
} from "../../helpers/faults.ts";
import { RogueAgent } from "../../helpers/rogue-agent.ts";
import { type Stack, startStack } from "../../helpers/stack.ts";

const BUFFER_MAX_BYTES = 256 * 1024;
const CHUNK = "x".repeat(16 * 1024);
/** The most a request may ask for (schema/api.ts Limits.maxTokens), and so the most output it may get. */
const MAX_TOKENS = 4096;
const TOKENS_PER_CHUNK = CHUNK.length / 256;

let stack: Stack;
let admin: Admin;
let caller: Caller;
const observed: Record<string, number> = {};

beforeAll(async () => {
  stack = await startStack({
    vars: { HEALTH_INTERVAL_MS: "300", STREAM_BUFFER_MAX_BYTES: String(BUFFER_MAX_BYTES) },
  });
  admin = await Admin.for(stack);
  caller = new Caller(stack.origin, await stack.token("user", "slow-consumer"));
});

afterAll(async () => {
  if (Object.keys(observed).length > 0) console.info("slow-consumer observations:", observed);
  await stack?.stop();
});

async function firehose(
  agentId: string,
  model: string,
  chunks?: number,
  intervalMs = 1,
): Promise<RogueAgent> {
  return RogueAgent.connect({
    origin: stack.origin,
    token: await stack.token("agent", agentId),
    agentId,
    models: [model],
    behaviour: {
      kind: "slow",
      firstChunkAfterMs: 0,
      intervalMs,
      text: CHUNK,
      ...(chunks ? { chunks } : {}),
    },
  });
}

describe("a caller that stops reading", () => {
  it("is cut off at the buffer bound: the agent is cancelled and the stream ends with SLOW_CONSUMER", async () => {
    const agent = await firehose("firehose-1", "firehose-model");
    const before = (await admin.agents()).summary.metrics.requests.slow_consumer ?? 0;
    const t0 = Date.now();
    const res = await caller.post(
      "/generate",
      { model: "firehose-model", prompt: "x", max_tokens: MAX_TOKENS, stream: true },
      { headers: { "X-Request-Id": "never-reads" }, timeoutMs: 60_000 },
    );
    expect(res.status).toBe(200);
    // The caller reads nothing. The hub must give up on it by itself.
    await agent.waitFor(
      () => agent.cancels.length > 0 || agent.closeInfo !== undefined,
      20_000,
      "a cancel for the unread stream",
    );
    observed.msToCancel = Date.now() - t0;
    expect(
      agent.closeInfo,
      "the hub closed the rogue's socket instead of cancelling the stream",
    ).toBeUndefined();
    expect(agent.cancels).toEqual([{ type: "cancel", id: "never-reads", reason: "slow_consumer" }]);
    const stream = agent.streams.get("never-reads");
    observed.bytesAgentSentBeforeCancel = stream?.bytesSent ?? 0;
    // What the agent produced before being stopped: the hub's bound plus what the runtime and the
    // kernel buffer between the hub and this caller; nowhere near unbounded.
    expect(stream?.bytesSent).toBeGreaterThan(BUFFER_MAX_BYTES);
    expect(stream?.bytesSent).toBeLessThan(64 * 1024 * 1024);
    // The rogue stopped because of that cancel (not a closed socket), so it sends nothing more.
    expect(stream?.ended).toBe("cancelled");

    // Reading again, the caller finds its stream ended with an explicit error, not cut silently.
    const reader = new SseReader(res);
    const events = await reader.rest(20_000);
    observed.bytesCallerReceived = events.reduce((n, e) => n + e.data.length, 0);
    expect(reader.ended).toBe("eof");
    // Whole chunks as the rogue sent them, no more than it sent, then the error.
    const received = events.filter((e) => e.event === "chunk").length;
    expect(generateStreamText(events)).toBe(CHUNK.repeat(received));
    expect(received).toBeLessThanOrEqual(stream?.chunksSent ?? 0);
    expect(events.at(-1)?.event).toBe("error");
    expect(generateStreamError(events)).toMatchObject({ code: "SLOW_CONSUMER", requestId: "never-reads" });
    expect(events.some((e) => e.event === "done")).toBe(false);

    const view = await waitUntil(
      async () => {
        const v = await admin.agents();
        return v.agents.find((a) => a.id === "firehose-1")?.inFlight === 0 ? v : undefined;
      },
      3_000,
      "the hub releasing the cancelled request's slot",
    );
    expect(view.summary.metrics.requests.slow_consumer).toBe(before + 1);
    expect(agent.inFlight).toBe(0);
    await agent.close();
  });

  it("a caller that keeps reading receives far more than the bound, to the end", async () => {
    // ~1.6 MB/s for 0.64 s: 1 MiB, 4 times the bound and all the output max_tokens 4096 allows
    // (64 chunks of 64 tokens). Far faster than tokens ever come, yet a caller that reads keeps up.
    // (The protocol has no flow control towards the agent: a caller that reads slower than its
    // agent writes is a slow consumer, however fast it reads.)
    const chunks = MAX_TOKENS / TOKENS_PER_CHUNK;
    const agent = await firehose("firehose-2", "firehose-model-2", chunks, 10);
    const res = await caller.post(
      "/generate",
      { model: "firehose-model-2", prompt: "x", max_tokens: MAX_TOKENS, stream: true },
      { timeoutMs: 60_000 },
    );
    const events = await new SseReader(res).rest(30_000);
    expect(generateStreamError(events)).toBeUndefined();
    expect(events.at(-1)?.event).toBe("done");
    expect(generateStreamText(events)).toBe(CHUNK.repeat(chunks));
    expect(chunks * CHUNK.length).toBeGreaterThanOrEqual(4 * BUFFER_MAX_BYTES);
    expect(JSON.parse(events.at(-1)?.data ?? "{}")).toMatchObject({
      tokens_generated: MAX_TOKENS,
      finish_reason: "stop",
    });
    expect(agent.cancels).toEqual([]);
    await agent.close();
  });
});
