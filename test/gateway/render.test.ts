// The hub renders what callers receive (gateway/render/render.ts). Content chunks are built from
// a prefix and suffix computed once per stream: they must be the same JSON chatChunk() describes.
import { describe, expect, it } from "vitest";
import { chatChunk, chatIdentity } from "../../gateway/render/openai-shapes.ts";
import { completionBody, streamRenderer } from "../../gateway/render/render.ts";
import type { ResponseShape } from "../../schema/hub.ts";

const shape = (over: Partial<ResponseShape> = {}): ResponseShape => ({
  api: "chat",
  stream: true,
  includeUsage: false,
  requestId: "req-1",
  receivedAt: 1_700_000_000_500,
  ...over,
});

/** The JSON of each `data:` line of SSE text. */
function dataLines(text: string): unknown[] {
  return text
    .split("\n\n")
    .filter((m) => m !== "")
    .map((m) => {
      const data = m.split("\n").find((l) => l.startsWith("data: ")) ?? "";
      const payload = data.slice("data: ".length);
      return payload === "[DONE]" ? payload : JSON.parse(payload);
    });
}

describe("chat stream rendering", () => {
  const texts = ["plain", 'a "quoted"\nline', "caf\u00e9 \u{1F34E} \\ </s>", "\u2028"];

  for (const includeUsage of [false, true]) {
    it(`content chunks equal chatChunk() (include_usage ${includeUsage})`, () => {
      const s = shape({ includeUsage });
      const renderer = streamRenderer(s, "m");
      const identity = chatIdentity("req-1", "m", s.receivedAt);
      for (const text of texts) {
        const rendered = renderer.chunk(text);
        expect(rendered.startsWith("data: ")).toBe(true);
        expect(rendered.endsWith("\n\n")).toBe(true);
        expect(dataLines(rendered)).toEqual([chatChunk(identity, { content: text }, null, includeUsage)]);
      }
    });
  }

  it("skips empty chunks, opens with the role, ends with finish, usage when asked, then [DONE]", () => {
    const renderer = streamRenderer(shape({ includeUsage: true }), "m");
    expect(renderer.chunk("")).toBe("");
    expect(dataLines(renderer.opening())).toMatchObject([
      { object: "chat.completion.chunk", choices: [{ delta: { role: "assistant", content: "" } }] },
    ]);
    const end = dataLines(
      renderer.done({ finishReason: "cancelled", usage: { promptTokens: 3, completionTokens: 4 } }),
    );
    expect(end).toMatchObject([
      { id: "chatcmpl-req-1", created: 1_700_000_000, choices: [{ delta: {}, finish_reason: "stop" }] },
      { choices: [], usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 } },
      "[DONE]",
    ]);
  });

  it("an error is OpenAI's error object, then [DONE]", () => {
    const renderer = streamRenderer(shape(), "m");
    expect(dataLines(renderer.error("GATEWAY_TIMEOUT", "too slow"))).toEqual([
      { error: { message: "too slow", type: "server_error", param: null, code: "GATEWAY_TIMEOUT" } },
      "[DONE]",
    ]);
  });
});

describe("generate rendering", () => {
  it("streams chunk events, then done with the summary, or error with the request id", () => {
    const renderer = streamRenderer(shape({ api: "generate" }), "m");
    expect(renderer.opening()).toBe("");
    expect(renderer.chunk('"x"\n')).toBe(`event: chunk\ndata: ${JSON.stringify({ text: '"x"\n' })}\n\n`);
    const done = renderer.done({ finishReason: "length", usage: { promptTokens: 1, completionTokens: 2 } });
    expect(done.startsWith("event: done\n")).toBe(true);
    expect(dataLines(done)).toEqual([
      {
        tokens_generated: 2,
        prompt_tokens: 1,
        finish_reason: "length",
        latency_ms: expect.any(Number),
        model_name: "m",
        request_id: "req-1",
      },
    ]);
    const error = renderer.error("SLOW_CONSUMER", "slow");
    expect(error.startsWith("event: error\n")).toBe(true);
    expect(dataLines(error)).toEqual([
      { error: { code: "SLOW_CONSUMER", message: "slow", requestId: "req-1" } },
    ]);
  });

  it("a whole answer is the GenerateResponse or the chat.completion", () => {
    const ending = { finishReason: "stop" as const, usage: { promptTokens: 2, completionTokens: 1 } };
    expect(JSON.parse(completionBody(shape({ api: "generate", stream: false }), "m", "hi", ending))).toEqual({
      text: "hi",
      tokens_generated: 1,
      prompt_tokens: 2,
      finish_reason: "stop",
      latency_ms: expect.any(Number),
      model_name: "m",
      request_id: "req-1",
    });
    expect(JSON.parse(completionBody(shape({ stream: false }), "m", "hi", ending))).toMatchObject({
      id: "chatcmpl-req-1",
      object: "chat.completion",
      choices: [{ message: { role: "assistant", content: "hi" }, finish_reason: "stop" }],
      usage: { total_tokens: 3 },
    });
  });
});
