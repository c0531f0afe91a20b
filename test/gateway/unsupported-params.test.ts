// Chat fields that change a request's meaning and that Orchard does not implement yet: each is a
// 400 UNSUPPORTED_PARAMETER naming the field (never unconstrained text), and the values that ask
// for nothing still pass. Driven through the real route, and through the openai SDK's error classes.
import { exports } from "cloudflare:workers";
import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { OpenAIErrorBody } from "../../schema/api.ts";
import { BASE, postJson, token, trackedAgents } from "./helpers.ts";

const agents = trackedAgents();
const messages = [{ role: "user", content: "Hello" }];

/** Each unsupported field with a value that asks for it. */
const UNSUPPORTED: [field: string, value: unknown][] = [
  // response_format and tools are served (test/gateway/openai-structured.test.ts); the legacy
  // function calling they replaced is not.
  ["functions", [{ name: "get_weather", parameters: { type: "object" } }]],
  ["function_call", "auto"],
  ["logprobs", true],
  ["top_logprobs", 3],
  ["n", 2],
  ["audio", { voice: "alloy", format: "mp3" }],
  ["modalities", ["text", "audio"]],
  ["prediction", { type: "content", content: "predicted" }],
  ["logit_bias", { "50256": -100 }],
  ["web_search_options", {}],
];

describe("unsupported chat parameters", () => {
  it.each(UNSUPPORTED)("%s = %j is 400 UNSUPPORTED_PARAMETER naming it", async (field, value) => {
    const response = await postJson("/v1/chat/completions", { model: "m", messages, [field]: value });
    expect(response.status).toBe(400);
    expect(response.headers.get("X-Error-Code")).toBe("UNSUPPORTED_PARAMETER");
    const body = OpenAIErrorBody.parse(await response.json());
    expect(body.error).toMatchObject({
      code: "UNSUPPORTED_PARAMETER",
      param: field,
      type: "invalid_request_error",
    });
    expect(body.error.message).toMatch(new RegExp(`^${field}: .*not supported|^${field}: only `));
  });

  it("is the answer even when the request has other faults too", async () => {
    const response = await postJson("/v1/chat/completions", {
      model: "m",
      messages: [{ role: "robot", content: "x" }],
      functions: [{ name: "f" }],
    });
    expect(await response.json()).toMatchObject({
      error: { code: "UNSUPPORTED_PARAMETER", param: "functions" },
    });
  });

  it("a malformed value of such a field is still INVALID_REQUEST where it has a type", async () => {
    for (const n of [0, 1.5, "2"]) {
      const response = await postJson("/v1/chat/completions", { model: "m", messages, n });
      expect(response.status).toBe(400);
      expect(await response.json()).toMatchObject({ error: { code: "INVALID_REQUEST", param: "n" } });
    }
  });

  it("values that ask for nothing are served", async () => {
    const agent = await agents.serving("neutral-model");
    const pending = postJson("/v1/chat/completions", {
      model: "neutral-model",
      messages,
      response_format: { type: "text" },
      tools: [],
      tool_choice: "none",
      function_call: "none",
      logprobs: false,
      top_logprobs: null,
      n: 1,
      audio: null,
      modalities: ["text"],
      prediction: null,
      logit_bias: {},
      functions: null,
      store: false,
      metadata: { team: "lab" },
    });
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, "Hi");
    await agent.done(frame.id);
    const response = await pending;
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ choices: [{ message: { content: "Hi" } }] });
  });

  it("reaches the openai SDK as a BadRequestError with the code and param", async () => {
    const client = new OpenAI({
      baseURL: `${BASE}/v1`,
      apiKey: await token(),
      maxRetries: 0,
      fetch: (input, init) => exports.default.fetch(new Request(input, init)),
    });
    const attempt = client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Hello" }],
      logprobs: true,
    });
    await expect(attempt).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    await expect(attempt).rejects.toMatchObject({
      status: 400,
      code: "UNSUPPORTED_PARAMETER",
      param: "logprobs",
    });
  });
});
