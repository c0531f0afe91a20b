// The hub's fast paths for chunk and done frames must accept and reject exactly what the zod
// schema does.
import { describe, expect, it } from "vitest";
import { AgentFrame, parseAgentFrame } from "../../schema/protocol.ts";

const frames: string[] = [
  '{"type":"chunk","id":"r1","text":"hello","tokens":2}',
  '{"type":"chunk","id":"r1","text":"","tokens":0}',
  '{"type":"chunk","id":"","text":"x","tokens":1}',
  `{"type":"chunk","id":"${"a".repeat(129)}","text":"x","tokens":1}`,
  '{"type":"chunk","id":"r1","text":"x","tokens":-1}',
  '{"type":"chunk","id":"r1","text":"x","tokens":1.5}',
  '{"type":"chunk","id":"r1","text":"x","tokens":"1"}',
  '{"type":"chunk","id":"r1","text":5,"tokens":1}',
  '{"type":"chunk","id":7,"text":"x","tokens":1}',
  '{"type":"chunk","id":"r1","text":"x"}',
  '{"type":"chunk","id":"r1","text":"x","tokens":1,"extra":true}',
  '{"type":"chunk","type":"hello","id":"r1","text":"x","tokens":1}',
  '{"type":"chunk","id":"r1","text":"x","tokens":1e400}',
  '{"type":"chunk","id":"r1","text":"x","tokens":1',
  '{"type":"chunk"}',
  '{"type":"done","id":"r1","finishReason":"stop","usage":{"promptTokens":1,"completionTokens":2},"timings":{"firstTokenMs":1,"totalMs":2}}',
  '{"type":"chunk" , "id":"r1","text":"x","tokens":1}',
  '{"type":"done","id":"r1","finishReason":"length","usage":{"promptTokens":0,"completionTokens":0},"timings":{"firstTokenMs":null,"totalMs":0}}',
  '{"type":"done","id":"r1","finishReason":"cancelled","usage":{"promptTokens":3,"completionTokens":4},"timings":{"firstTokenMs":0.5,"totalMs":1.25}}',
  '{"type":"done","id":"r1","finishReason":"timeout","usage":{"promptTokens":1,"completionTokens":2},"timings":{"firstTokenMs":1,"totalMs":2}}',
  '{"type":"done","id":"","finishReason":"stop","usage":{"promptTokens":1,"completionTokens":2},"timings":{"firstTokenMs":1,"totalMs":2}}',
  '{"type":"done","id":"r1","finishReason":"stop","usage":{"promptTokens":-1,"completionTokens":2},"timings":{"firstTokenMs":1,"totalMs":2}}',
  '{"type":"done","id":"r1","finishReason":"stop","usage":{"promptTokens":1,"completionTokens":2.5},"timings":{"firstTokenMs":1,"totalMs":2}}',
  '{"type":"done","id":"r1","finishReason":"stop","usage":{"promptTokens":1,"completionTokens":2,"x":1},"timings":{"firstTokenMs":1,"totalMs":2}}',
  '{"type":"done","id":"r1","finishReason":"stop","usage":{"promptTokens":1},"timings":{"firstTokenMs":1,"totalMs":2}}',
  '{"type":"done","id":"r1","finishReason":"stop","usage":[1,2],"timings":{"firstTokenMs":1,"totalMs":2}}',
  '{"type":"done","id":"r1","finishReason":"stop","usage":{"promptTokens":1,"completionTokens":2},"timings":{"firstTokenMs":-1,"totalMs":2}}',
  '{"type":"done","id":"r1","finishReason":"stop","usage":{"promptTokens":1,"completionTokens":2},"timings":{"firstTokenMs":"1","totalMs":2}}',
  '{"type":"done","id":"r1","finishReason":"stop","usage":{"promptTokens":1,"completionTokens":2},"timings":{"totalMs":2}}',
  '{"type":"done","id":"r1","finishReason":"stop","usage":{"promptTokens":1,"completionTokens":2},"timings":null}',
  '{"type":"done","id":"r1","finishReason":"stop","usage":{"promptTokens":1,"completionTokens":2},"timings":{"firstTokenMs":1,"totalMs":2},"extra":1}',
  '{"type":"done","id":"r1","finishReason":"stop","usage":{"promptTokens":1,"completionTokens":1e400},"timings":{"firstTokenMs":1,"totalMs":2}}',
  "null",
  "[]",
];

function viaSchema(raw: string): { ok: boolean; frame?: unknown } {
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    return { ok: false };
  }
  const r = AgentFrame.safeParse(json);
  return r.success ? { ok: true, frame: r.data } : { ok: false };
}

describe("parseAgentFrame", () => {
  it.each(frames)("agrees with the zod schema on %s", (raw) => {
    const fast = parseAgentFrame(raw);
    const slow = viaSchema(raw);
    expect(fast.ok).toBe(slow.ok);
    if (fast.ok) expect(fast.frame).toEqual(slow.frame);
  });

  it("rejects binary frames and frames over the size limit", () => {
    expect(parseAgentFrame(new ArrayBuffer(4)).ok).toBe(false);
    expect(
      parseAgentFrame(`{"type":"chunk","id":"r","text":"${"x".repeat(1024 * 1024)}","tokens":1}`).ok,
    ).toBe(false);
  });
});
