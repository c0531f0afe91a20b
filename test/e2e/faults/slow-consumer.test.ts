// Faults: a caller that stops reading its stream. What the hub holds for it stays bounded (by the
// request's output limit on this path: see the first test), the stream ends with an explicit error
// event, and a caller that keeps reading is never cut off, however much it receives. The agent is a RogueAgent streaming 16 KiB chunks back to back (64 tokens each: the
// protocol allows at most 256 characters per token): a real agent on the demo model writes at most
// ~4 KB per generation (1,024 tokens of context; ~16 KB with the 4,096-token copy), which cannot fill
// any sensible buffer bound, so only a fast synthetic stream exercises it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Admin, Caller, generateStreamError, generateStreamText, SseReader } from "../../helpers/faults.ts";
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
  it("holds the hub to the request's output limit: a rogue that keeps sending is cut off with LIMIT_EXCEEDED", async () => {
    // Between the hub and a caller that reads nothing, the runtime's and the kernel's buffers take
    // about 1 MB here (measured with STREAM_BUFFER_MAX_BYTES at 64 and 256 KiB, fetch and node:http
    // callers alike). An agent within its limits writes at most max_tokens x 256 characters: 1 MiB
    // at max_tokens 4096, which those buffers absorb, so on this path it is the output limit, not the
    // slow-consumer bound, that stops an agent flooding an unread stream. (The SLOW_CONSUMER cut
    // itself is exercised in workerd, test/gateway/resilience.test.ts, where buffers are smaller.)
    const agent = await firehose("firehose-1", "firehose-model");
    const allowedChunks = MAX_TOKENS / TOKENS_PER_CHUNK;
    const res = await caller.post(
      "/generate",
      { model: "firehose-model", prompt: "x", max_tokens: MAX_TOKENS, stream: true },
      { headers: { "X-Request-Id": "never-reads" }, timeoutMs: 60_000 },
    );
    expect(res.status).toBe(200);
    await agent.waitFor(() => agent.closeInfo !== undefined, 20_000, "the hub to stop the rogue");
    expect(agent.closeInfo?.code).toBe(4010); // LIMIT_EXCEEDED
    expect(agent.cancels).toEqual([]);
    const stream = agent.streams.get("never-reads");
    observed.chunksAgentSent = stream?.chunksSent ?? 0;
    // It was stopped by the chunk that crossed max_tokens (and what it wrote before the close arrived).
    expect(stream?.chunksSent).toBeGreaterThan(allowedChunks);
    expect(stream?.ended).toBe("closed");

    // Reading now, the caller gets exactly what the request allows, then an explicit error.
    const events = await new SseReader(res).rest(20_000);
    expect(generateStreamText(events)).toBe(CHUNK.repeat(allowedChunks));
    expect(events.at(-1)?.event).toBe("error");
    expect(generateStreamError(events)).toMatchObject({
      code: "UPSTREAM_ERROR",
      message: "the agent sent more output than the request allows",
      requestId: "never-reads",
    });
    expect(events.some((e) => e.event === "done")).toBe(false);
    const view = await admin.agents();
    expect(view.agents.find((a) => a.id === "firehose-1")).toBeUndefined();
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
