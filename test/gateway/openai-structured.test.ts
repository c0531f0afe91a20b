// /v1/chat/completions with response_format and tools, through the real route and hub with scripted
// agents: what is refused before anything is dispatched (each code with its param), what the agent
// is asked for (format, the rendered conversation), and what the caller gets — whole and streamed —
// checked against what the openai SDK expects of OpenAI (its parse(), stream() and error classes).
import { exports } from "cloudflare:workers";
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { ARGUMENT_FRAGMENT_CHARS } from "../../gateway/render/openai-shapes.ts";
import { checkSchema } from "../../gateway/structured/schema-check.ts";
import { toolChecked, toolPlan } from "../../gateway/structured/tools.ts";
import { type ChatTool, OpenAIErrorBody } from "../../schema/api.ts";
import type { GenerateFrame } from "../../schema/protocol.ts";
import {
  BASE,
  bearer,
  gatewayFetch,
  postJson,
  readSse,
  SseReader,
  type TestAgent,
  token,
  trackedAgents,
  uniqueId,
  waitFor,
} from "./helpers.ts";

const agents = trackedAgents();
const user = (content: string) => [{ role: "user", content }];

const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string" }, unit: { enum: ["c", "f"] } },
      required: ["city"],
      additionalProperties: false,
    },
  },
} as const;
const TIME = {
  type: "function",
  function: { name: "get_time", parameters: { type: "object", properties: { zone: { type: "string" } } } },
} as const;

async function sdk(): Promise<OpenAI> {
  return new OpenAI({
    baseURL: `${BASE}/v1`,
    apiKey: await token(),
    maxRetries: 0,
    fetch: (input, init) => exports.default.fetch(new Request(input, init)),
  });
}

/** The agent answers the next generate frame with `text` whole, and returns the frame. */
async function answer(agent: TestAgent, text: string, finishReason = "stop"): Promise<GenerateFrame> {
  const frame = await agent.next("generate");
  if (text !== "") await agent.chunk(frame.id, text);
  await agent.done(frame.id, { promptTokens: 3, completionTokens: 2 }, finishReason);
  return frame;
}

/** The JSON of each data line of an OpenAI stream ("[DONE]" as it is). */
async function dataLines(response: Response): Promise<unknown[]> {
  return (await readSse(response)).map((m) => (m.data === "[DONE]" ? m.data : JSON.parse(m.data)));
}

async function expectError(response: Response, status: number, code: string, param: string | null) {
  expect(response.status).toBe(status);
  expect(response.headers.get("X-Error-Code")).toBe(code);
  const body = OpenAIErrorBody.parse(await response.json());
  expect(body.error).toMatchObject({ code, param });
  return body.error;
}

describe("bad requests are refused before anything is dispatched", () => {
  const cases: [what: string, body: Record<string, unknown>, status: number, code: string, param: string][] =
    [
      [
        "tool_choice naming an undefined function",
        {
          messages: user("hi"),
          tools: [WEATHER],
          tool_choice: { type: "function", function: { name: "get_time" } },
        },
        400,
        "UNKNOWN_TOOL",
        "tool_choice.function.name",
      ],
      [
        "a tool message answering a call nobody made",
        {
          messages: [...user("hi"), { role: "tool", tool_call_id: "call_nobody_made", content: "42" }],
        },
        400,
        "TOOL_CALL_MISMATCH",
        "messages.1.tool_call_id",
      ],
      [
        "a tool message answering a call made only after it",
        {
          messages: [
            ...user("hi"),
            { role: "tool", tool_call_id: "call_1", content: "42" },
            {
              role: "assistant",
              content: null,
              tool_calls: [
                { id: "call_1", type: "function", function: { name: "get_weather", arguments: "{}" } },
              ],
            },
          ],
        },
        400,
        "TOOL_CALL_MISMATCH",
        "messages.1.tool_call_id",
      ],
      [
        "a tool message without tool_call_id",
        { messages: [...user("hi"), { role: "tool", content: "42" }] },
        400,
        "INVALID_REQUEST",
        "messages.1.tool_call_id",
      ],
      [
        "tool_calls on a user message",
        {
          messages: [
            {
              role: "user",
              content: "hi",
              tool_calls: [{ id: "c", type: "function", function: { name: "f", arguments: "{}" } }],
            },
          ],
        },
        400,
        "INVALID_REQUEST",
        "messages.0.tool_calls",
      ],
      [
        "a function name outside OpenAI's pattern",
        { messages: user("hi"), tools: [{ type: "function", function: { name: "get weather" } }] },
        400,
        "INVALID_REQUEST",
        "tools.0.function.name",
      ],
      [
        "a function defined twice",
        { messages: user("hi"), tools: [WEATHER, WEATHER] },
        400,
        "INVALID_REQUEST",
        "tools.1.function.name",
      ],
      [
        "more than 128 tools",
        {
          messages: user("hi"),
          tools: Array.from({ length: 129 }, (_, i) => ({ type: "function", function: { name: `f${i}` } })),
        },
        400,
        "INVALID_REQUEST",
        "tools",
      ],
      [
        "a tool that is not a function",
        { messages: user("hi"), tools: [{ type: "custom", function: { name: "f" } }] },
        400,
        "UNSUPPORTED_PARAMETER",
        "tools.0.type",
      ],
      [
        'tool_choice "required" without tools',
        { messages: user("hi"), tool_choice: "required" },
        400,
        "INVALID_REQUEST",
        "tool_choice",
      ],
      [
        "an unsupported keyword in a function's parameters",
        {
          messages: user("hi"),
          tools: [
            {
              type: "function",
              function: {
                name: "f",
                parameters: { type: "object", properties: { x: { not: { type: "string" } } } },
              },
            },
          ],
        },
        400,
        "UNSUPPORTED_SCHEMA_KEYWORD",
        "tools.0.function.parameters.properties.x.not",
      ],
      [
        "a malformed schema in the second tool",
        {
          messages: user("hi"),
          tools: [WEATHER, { type: "function", function: { name: "g", parameters: { type: "banana" } } }],
        },
        400,
        "INVALID_SCHEMA",
        "tools.1.function.parameters.type",
      ],
      [
        "a malformed response_format schema",
        {
          messages: user("hi"),
          response_format: {
            type: "json_schema",
            json_schema: { name: "x", schema: { type: "object", required: "a" } },
          },
        },
        400,
        "INVALID_SCHEMA",
        "response_format.json_schema.schema.required",
      ],
      [
        "a remote $ref in response_format",
        {
          messages: user("hi"),
          response_format: {
            type: "json_schema",
            json_schema: { name: "x", schema: { $ref: "https://schemas.example.com/person.json" } },
          },
        },
        400,
        "SCHEMA_REMOTE_REF",
        "response_format.json_schema.schema.$ref",
      ],
      [
        "an unsupported keyword in response_format",
        {
          messages: user("hi"),
          response_format: {
            type: "json_schema",
            json_schema: { name: "x", schema: { type: "object", properties: { a: { not: {} } } } },
          },
        },
        400,
        "UNSUPPORTED_SCHEMA_KEYWORD",
        "response_format.json_schema.schema.properties.a.not",
      ],
      [
        "a response_format type OpenAI does not have",
        { messages: user("hi"), response_format: { type: "xml" } },
        400,
        "INVALID_REQUEST",
        "response_format.type",
      ],
      [
        "a json_schema name outside OpenAI's pattern",
        {
          messages: user("hi"),
          response_format: { type: "json_schema", json_schema: { name: "a b", schema: {} } },
        },
        400,
        "INVALID_REQUEST",
        "response_format.json_schema.name",
      ],
      [
        "the legacy functions",
        { messages: user("hi"), functions: [{ name: "f", parameters: { type: "object" } }] },
        400,
        "UNSUPPORTED_PARAMETER",
        "functions",
      ],
    ];

  it.each(cases)("%s: %i %s", async (_what, body, status, code, param) => {
    const model = uniqueId("bad-structured");
    const agent = await agents.serving(model);
    const error = await expectError(
      await postJson("/v1/chat/completions", { model, ...body }),
      status,
      code,
      param,
    );
    expect(error.type).toBe("invalid_request_error");
    expect(await agent.unread("generate")).toEqual([]);
  });

  it("too large a schema is SCHEMA_TOO_LARGE at the tool's parameters", async () => {
    let schema: Record<string, unknown> = { type: "string" };
    for (let depth = 0; depth < 40; depth++) schema = { type: "array", items: schema };
    const response = await postJson("/v1/chat/completions", {
      model: "m",
      messages: user("hi"),
      tools: [{ type: "function", function: { name: "deep", parameters: schema } }],
    });
    expect(response.status).toBe(400);
    const body = OpenAIErrorBody.parse(await response.json());
    expect(body.error.code).toBe("SCHEMA_TOO_LARGE");
    expect(body.error.param).toMatch(/^tools\.0\.function\.parameters(\.items)+$/);
  });

  it("reaches the openai SDK as a BadRequestError with the code and param", async () => {
    const attempt = (await sdk()).chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "hi" }],
      tools: [WEATHER],
      tool_choice: { type: "function", function: { name: "get_time" } },
    });
    await expect(attempt).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    await expect(attempt).rejects.toMatchObject({
      status: 400,
      code: "UNKNOWN_TOOL",
      param: "tool_choice.function.name",
    });
  });
});

describe("response_format", () => {
  it("json_object asks the agent for format json and answers the JSON text as content", async () => {
    const model = uniqueId("json-object");
    const agent = await agents.serving(model);
    const pending = postJson("/v1/chat/completions", {
      model,
      messages: [
        { role: "system", content: "You are terse." },
        { role: "user", content: "Give me an object" },
      ],
      response_format: { type: "json_object" },
      store: false,
      metadata: { team: "lab" },
    });
    const frame = await answer(agent, ' {"a": [1, 2]} ');
    expect(frame.format).toBe("json");
    expect(frame.messages?.[0]?.role).toBe("system");
    expect(frame.messages?.[0]?.content).toMatch(
      /^Answer with a JSON value only.*"type":"object".*\n\nYou are terse\.$/s,
    );
    expect(frame.messages?.slice(1)).toEqual([{ role: "user", content: "Give me an object" }]);
    const response = await pending;
    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Type")).toMatch(/^application\/json/);
    const body = (await response.json()) as OpenAI.ChatCompletion;
    expect(body).toMatchObject({
      object: "chat.completion",
      model,
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: '{"a": [1, 2]}', refusal: null },
          finish_reason: "stop",
        },
      ],
      usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
    });
    expect(JSON.parse(body.choices[0]?.message.content ?? "")).toEqual({ a: [1, 2] });
  });

  it("json_schema: the SDK's parse() with a zod schema gets the parsed object", async () => {
    const model = uniqueId("json-schema");
    const agent = await agents.serving(model);
    const Person = z.object({
      name: z.string(),
      age: z.number().int().min(0),
      tags: z.array(z.enum(["a", "b"])),
    });
    const format = zodResponseFormat(Person, "person");
    const pending = (await sdk()).chat.completions.parse({
      model,
      messages: [{ role: "user", content: "Who?" }],
      response_format: format,
    });
    const frame = await answer(agent, '{"name":"Ada","age":36,"tags":["a"]}');
    expect(frame.format).toEqual(format.json_schema.schema);
    const completion = await pending;
    expect(completion.choices[0]?.message.parsed).toEqual({ name: "Ada", age: 36, tags: ["a"] });
    expect(completion.choices[0]?.finish_reason).toBe("stop");
  });

  it("an invalid answer is retried with the issues fed back; usage sums the attempts", async () => {
    const model = uniqueId("json-retry");
    const agent = await agents.serving(model);
    const schema = { type: "object", properties: { n: { type: "integer", maximum: 9 } }, required: ["n"] };
    const pending = postJson("/v1/chat/completions", {
      model,
      messages: user("a number"),
      response_format: { type: "json_schema", json_schema: { name: "n", schema, strict: true } },
    });
    await answer(agent, '{"n": 12}');
    const second = await answer(agent, '{"n": 7}');
    expect(second.format).toEqual(schema);
    const turns = second.messages ?? [];
    expect(turns.at(-2)).toEqual({ role: "assistant", content: '{"n": 12}' });
    expect(turns.at(-1)?.role).toBe("user");
    expect(turns.at(-1)?.content).toContain("/n");
    const response = await pending;
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({
      choices: [{ message: { content: '{"n": 7}' }, finish_reason: "stop" }],
      usage: { prompt_tokens: 6, completion_tokens: 4, total_tokens: 10 },
    });
  });

  it("when every attempt fails: 422 STRUCTURED_OUTPUT_INVALID in OpenAI's shape, the SDK's UnprocessableEntityError", async () => {
    const model = uniqueId("json-422");
    const agent = await agents.serving(model);
    const pending = (await sdk()).chat.completions.create({
      model,
      messages: [{ role: "user", content: "hi" }],
      response_format: { type: "json_object" },
    });
    const caught = pending.catch((e: unknown) => e);
    for (let attempt = 0; attempt < 3; attempt++) await answer(agent, "not json at all");
    const error = await caught;
    expect(error).toBeInstanceOf(OpenAI.UnprocessableEntityError);
    expect(error).toMatchObject({
      status: 422,
      code: "STRUCTURED_OUTPUT_INVALID",
      error: { details: { attempts: 3, raw: "not json at all", errors: [{ path: "", keyword: "json" }] } },
    });
    expect(await agent.unread("generate")).toEqual([]);
  });

  it("streamed: the JSON text streams as content deltas and the stream ends validated", async () => {
    const model = uniqueId("json-stream");
    const agent = await agents.serving(model);
    const pending = postJson("/v1/chat/completions", {
      model,
      messages: user("an object"),
      response_format: { type: "json_object" },
      stream: true,
      stream_options: { include_usage: true },
    });
    const frame = await agent.next("generate");
    expect(frame.format).toBe("json");
    await agent.chunk(frame.id, '{"a":');
    await agent.chunk(frame.id, " true}");
    await agent.done(frame.id);
    const response = await pending;
    expect(response.headers.get("Content-Type")).toMatch(/^text\/event-stream/);
    const lines = await dataLines(response);
    expect(lines).toMatchObject([
      {
        object: "chat.completion.chunk",
        choices: [{ delta: { role: "assistant", content: "" }, finish_reason: null }],
      },
      { choices: [{ delta: { content: '{"a":' } }] },
      { choices: [{ delta: { content: " true}" } }] },
      { choices: [{ delta: {}, finish_reason: "stop" }] },
      { choices: [], usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } },
      "[DONE]",
    ]);
  });

  it("streamed: a caller that goes away cancels the generation on the agent", async () => {
    const model = uniqueId("json-stream-cancel");
    const agent = await agents.serving(model);
    const pending = postJson("/v1/chat/completions", {
      model,
      messages: user("an object"),
      response_format: { type: "json_object" },
      stream: true,
    });
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, '{"a":');
    const sse = new SseReader((await pending).body as ReadableStream<Uint8Array>);
    expect((await sse.next())?.data).toContain('"role":"assistant"');
    expect((await sse.next())?.data).toContain('{\\"a\\":');
    await sse.cancel();
    expect(await agent.next("cancel")).toEqual({
      type: "cancel",
      id: frame.id,
      reason: "client_disconnected",
    });
    await agent.done(frame.id, { promptTokens: 1, completionTokens: 1 }, "cancelled");
  });

  it("streamed: an invalid end is an error data line, then [DONE]; the SDK raises it", async () => {
    const model = uniqueId("json-stream-bad");
    const agent = await agents.serving(model);
    const schema = { type: "object", properties: { a: { type: "string" } }, required: ["a"] };
    const body = {
      model,
      messages: user("an object"),
      response_format: { type: "json_schema", json_schema: { name: "a", schema } },
      stream: true,
    };
    const pending = postJson("/v1/chat/completions", body);
    await answer(agent, '{"b": 1}');
    const lines = await dataLines(await pending);
    expect(lines.at(-1)).toBe("[DONE]");
    expect(lines.at(-2)).toMatchObject({
      error: {
        code: "STRUCTURED_OUTPUT_INVALID",
        message: expect.stringContaining("schema after 1 attempt"),
        details: { attempts: 1, raw: '{"b": 1}', errors: [{ path: "", keyword: "required" }] },
      },
    });
    expect(lines.slice(0, -2)).toMatchObject([
      { choices: [{ delta: { role: "assistant" } }] },
      { choices: [{ delta: { content: '{"b": 1}' } }] },
    ]);
    // One attempt only: what streamed cannot be taken back.
    expect(await agent.unread("generate")).toEqual([]);

    const stream = (await sdk()).chat.completions.stream({ ...body, stream: true } as never);
    const raised: unknown[] = [];
    stream.on("error", (e) => raised.push(e));
    await answer(agent, '{"b": 1}');
    await expect(stream.finalChatCompletion()).rejects.toMatchObject({ code: "STRUCTURED_OUTPUT_INVALID" });
    expect(raised).toMatchObject([{ code: "STRUCTURED_OUTPUT_INVALID" }]);
  });
});

describe("tools", () => {
  it('"required": the agent gets the combined schema and the tool instruction; the answer is message.tool_calls', async () => {
    const model = uniqueId("tools-required");
    const agent = await agents.serving(model);
    const pending = postJson("/v1/chat/completions", {
      model,
      messages: user("Weather in Paris?"),
      tools: [WEATHER, TIME],
      tool_choice: "required",
      parallel_tool_calls: false,
    });
    const frame = await answer(agent, '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}');
    expect(frame.format).toEqual({
      type: "object",
      properties: {
        tool_calls: {
          type: "array",
          items: {
            anyOf: [
              {
                type: "object",
                properties: { name: { const: "get_weather" }, arguments: WEATHER.function.parameters },
                required: ["name", "arguments"],
                additionalProperties: false,
              },
              {
                type: "object",
                properties: { name: { const: "get_time" }, arguments: TIME.function.parameters },
                required: ["name", "arguments"],
                additionalProperties: false,
              },
            ],
          },
          minItems: 1,
          maxItems: 1,
        },
      },
      required: ["tool_calls"],
      additionalProperties: false,
    });
    const system = frame.messages?.[0];
    expect(system?.role).toBe("system");
    expect(system?.content).toContain("- get_weather: The weather in a city");
    expect(system?.content).toContain("- get_time");
    const response = await pending;
    expect(response.status).toBe(200);
    const body = (await response.json()) as OpenAI.ChatCompletion;
    const choice = body.choices[0];
    expect(choice?.finish_reason).toBe("tool_calls");
    expect(choice?.message.content).toBeNull();
    expect(choice?.message.tool_calls).toEqual([
      {
        id: expect.stringMatching(/^call_[A-Za-z0-9]{24}$/),
        type: "function",
        function: { name: "get_weather", arguments: '{"city":"Paris"}' },
      },
    ]);
  });

  it("a named tool_choice allows only that function; parallel calls are allowed by default", async () => {
    const model = uniqueId("tools-named");
    const agent = await agents.serving(model);
    const pending = postJson("/v1/chat/completions", {
      model,
      messages: user("time?"),
      tools: [WEATHER, TIME],
      tool_choice: { type: "function", function: { name: "get_time" } },
    });
    const frame = await answer(
      agent,
      '{"tool_calls":[{"name":"get_time","arguments":{"zone":"UTC"}},{"name":"get_time","arguments":{}}]}',
    );
    const format = frame.format as { properties: { tool_calls: Record<string, unknown> } };
    expect(format.properties.tool_calls.items).toMatchObject({ properties: { name: { const: "get_time" } } });
    expect(format.properties.tool_calls).not.toHaveProperty("maxItems");
    const body = (await (await pending).json()) as OpenAI.ChatCompletion;
    const calls = body.choices[0]?.message.tool_calls ?? [];
    expect(
      calls.map((c) => (c.type === "function" ? [c.function.name, c.function.arguments] : null)),
    ).toEqual([
      ["get_time", '{"zone":"UTC"}'],
      ["get_time", "{}"],
    ]);
    expect(new Set(calls.map((c) => c.id)).size).toBe(2);
  });

  it("arguments are validated against the function's parameters: a failure is fed back and retried", async () => {
    const model = uniqueId("tools-retry");
    const agent = await agents.serving(model);
    const pending = postJson("/v1/chat/completions", {
      model,
      messages: user("Weather?"),
      tools: [WEATHER],
      tool_choice: "required",
    });
    await answer(agent, '{"tool_calls":[{"name":"get_weather","arguments":{"city":3}}]}');
    const second = await answer(agent, '{"tool_calls":[{"name":"get_wether","arguments":{"city":"Oslo"}}]}');
    expect(second.messages?.at(-1)?.content).toContain("/tool_calls/0/arguments/city");
    const third = await answer(
      agent,
      '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Oslo","unit":"c"}}]}',
    );
    expect(third.messages?.at(-1)?.content).toContain("/tool_calls/0/name");
    const body = (await (await pending).json()) as OpenAI.ChatCompletion;
    expect(body.choices[0]?.message.tool_calls?.[0]).toMatchObject({
      function: { name: "get_weather", arguments: '{"city":"Oslo","unit":"c"}' },
    });
    expect(body.usage?.completion_tokens).toBe(6);
  });

  it("arguments that never validate: 422 STRUCTURED_OUTPUT_INVALID", async () => {
    const model = uniqueId("tools-422");
    const agent = await agents.serving(model);
    const pending = postJson("/v1/chat/completions", {
      model,
      messages: user("x"),
      tools: [WEATHER],
      tool_choice: "required",
    });
    for (let attempt = 0; attempt < 3; attempt++)
      await answer(agent, '{"tool_calls":[{"name":"get_weather","arguments":{}}]}');
    const error = await expectError(await pending, 422, "STRUCTURED_OUTPUT_INVALID", null);
    expect(error.message).toMatch(/3 attempts/);
    expect(error.details).toEqual({
      attempts: 3,
      raw: '{"tool_calls":[{"name":"get_weather","arguments":{}}]}',
      errors: [expect.objectContaining({ path: "/tool_calls/0/arguments", keyword: "required" })],
    });
  });

  it('"auto": the model may answer without a call ({"content"}), which is plain content', async () => {
    const model = uniqueId("tools-auto");
    const agent = await agents.serving(model);
    const pending = postJson("/v1/chat/completions", { model, messages: user("hello"), tools: [WEATHER] });
    const frame = await answer(agent, '{"content":"Hello there"}');
    const format = frame.format as { anyOf: unknown[] };
    expect(format.anyOf).toHaveLength(2);
    expect(format.anyOf[1]).toEqual({
      type: "object",
      properties: { content: { type: "string" } },
      required: ["content"],
      additionalProperties: false,
    });
    const body = (await (await pending).json()) as OpenAI.ChatCompletion;
    expect(body.choices[0]).toMatchObject({ message: { content: "Hello there" }, finish_reason: "stop" });
    expect(body.choices[0]?.message).not.toHaveProperty("tool_calls");
  });

  it('"auto" with a response_format schema: no call answers that schema\'s JSON as content', async () => {
    const model = uniqueId("tools-auto-json");
    const agent = await agents.serving(model);
    const schema = {
      type: "object",
      properties: { ok: { type: "boolean" } },
      required: ["ok"],
      additionalProperties: false,
    };
    const pending = postJson("/v1/chat/completions", {
      model,
      messages: user("ok?"),
      tools: [WEATHER],
      tool_choice: "auto",
      response_format: { type: "json_schema", json_schema: { name: "ok", schema } },
    });
    const frame = await answer(agent, '{"ok":true}');
    expect((frame.format as { anyOf: unknown[] }).anyOf[1]).toEqual(schema);
    expect(await (await pending).json()).toMatchObject({
      choices: [{ message: { content: '{"ok":true}' }, finish_reason: "stop" }],
    });
  });

  it('"none": no format, no tool instruction, free text', async () => {
    const model = uniqueId("tools-none");
    const agent = await agents.serving(model);
    const pending = postJson("/v1/chat/completions", {
      model,
      messages: user("hi"),
      tools: [WEATHER],
      tool_choice: "none",
    });
    const frame = await answer(agent, "plain words");
    expect(frame.format).toBeUndefined();
    expect(frame.messages).toEqual([{ role: "user", content: "hi" }]);
    expect(await (await pending).json()).toMatchObject({
      choices: [{ message: { content: "plain words" } }],
    });
  });

  it("a conversation's tool calls and results reach the agent as assistant and user text", async () => {
    const model = uniqueId("tools-history");
    const agent = await agents.serving(model);
    const pending = postJson("/v1/chat/completions", {
      model,
      messages: [
        { role: "developer", content: "Be brief." },
        { role: "user", content: "Weather in Paris?" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            {
              id: "call_a",
              type: "function",
              function: { name: "get_weather", arguments: '{"city":"Paris"}' },
            },
          ],
        },
        { role: "tool", tool_call_id: "call_a", content: "21 C, sunny" },
      ],
      tools: [WEATHER],
    });
    const frame = await answer(agent, '{"content":"It is 21 C and sunny."}');
    expect(frame.messages?.slice(1)).toEqual([
      { role: "user", content: "Weather in Paris?" },
      { role: "assistant", content: '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}' },
      { role: "user", content: "Result of get_weather (call_a): 21 C, sunny" },
    ]);
    expect(frame.messages?.[0]?.content).toMatch(/Be brief\.$/);
    expect(await (await pending).json()).toMatchObject({
      choices: [{ message: { content: "It is 21 C and sunny." } }],
    });
  });

  it("streamed: delta.tool_calls as OpenAI streams them, once the call validated; the SDK assembles it", async () => {
    const model = uniqueId("tools-stream");
    const agent = await agents.serving(model);
    const city = "Llanfairpwllgwyngyll, Anglesey \u{1F3F4}";
    const calls = `{"tool_calls":[{"name":"get_weather","arguments":{"city":${JSON.stringify(city)}}},{"name":"get_time","arguments":{}}]}`;
    const pending = postJson("/v1/chat/completions", {
      model,
      messages: user("both"),
      tools: [WEATHER, TIME],
      tool_choice: "required",
      stream: true,
      stream_options: { include_usage: true },
    });
    await answer(agent, '{"tool_calls":[]}');
    await answer(agent, calls);
    const response = await pending;
    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Type")).toMatch(/^text\/event-stream/);
    const lines = (await dataLines(response)) as OpenAI.ChatCompletionChunk[];
    expect(lines.at(-1)).toBe("[DONE]");
    const chunks = lines.slice(0, -1);
    expect(chunks[0]?.choices[0]).toEqual({
      index: 0,
      delta: { role: "assistant", content: null },
      logprobs: null,
      finish_reason: null,
    });
    const deltas = chunks.flatMap((c) => c.choices.flatMap((ch) => ch.delta.tool_calls ?? []));
    const firsts = deltas.filter((d) => d.id !== undefined);
    expect(firsts).toEqual([
      {
        index: 0,
        id: expect.stringMatching(/^call_/),
        type: "function",
        function: { name: "get_weather", arguments: "" },
      },
      {
        index: 1,
        id: expect.stringMatching(/^call_/),
        type: "function",
        function: { name: "get_time", arguments: "" },
      },
    ]);
    const args = (index: number) =>
      deltas
        .filter((d) => d.index === index && d.id === undefined)
        .map((d) => {
          expect(Object.keys(d).sort()).toEqual(["function", "index"]);
          expect((d.function?.arguments ?? "").length).toBeLessThanOrEqual(ARGUMENT_FRAGMENT_CHARS);
          return d.function?.arguments ?? "";
        });
    expect(args(0).length).toBeGreaterThan(1);
    expect(JSON.parse(args(0).join(""))).toEqual({ city });
    expect(args(1).join("")).toBe("{}");
    expect(chunks.at(-2)?.choices[0]).toMatchObject({ delta: {}, finish_reason: "tool_calls" });
    expect(chunks.at(-1)).toMatchObject({
      choices: [],
      usage: { prompt_tokens: 6, completion_tokens: 4, total_tokens: 10 },
    });
    for (const chunk of chunks.slice(0, -1))
      expect(chunk).toMatchObject({ object: "chat.completion.chunk", usage: null, model });
  });

  it("streamed through the SDK: stream().finalChatCompletion() has the calls, ids and arguments", async () => {
    const model = uniqueId("tools-sdk-stream");
    const agent = await agents.serving(model);
    const tool = { ...WEATHER, function: { ...WEATHER.function, strict: true } };
    const stream = (await sdk()).chat.completions.stream({
      model,
      messages: [{ role: "user", content: "Weather?" }],
      tools: [tool],
      tool_choice: "required",
    });
    const done: string[] = [];
    stream.on("tool_calls.function.arguments.done", (e) => done.push(`${e.name} ${e.arguments}`));
    await answer(
      agent,
      '{"tool_calls":[{"name":"get_weather","arguments":{"city":"A much longer city name, Somewhere"}}]}',
    );
    const completion = await stream.finalChatCompletion();
    const message = completion.choices[0]?.message;
    expect(completion.choices[0]?.finish_reason).toBe("tool_calls");
    expect(message?.tool_calls).toHaveLength(1);
    const call = message?.tool_calls?.[0];
    expect(call?.id).toMatch(/^call_/);
    expect(call?.type === "function" && JSON.parse(call.function.arguments)).toEqual({
      city: "A much longer city name, Somewhere",
    });
    expect(done).toEqual(['get_weather {"city":"A much longer city name, Somewhere"}']);
  });

  it("the SDK's runTools() loop: a call, the SDK runs the function, its result goes back, the final answer", async () => {
    const model = uniqueId("tools-run");
    const agent = await agents.serving(model);
    const seen: unknown[] = [];
    const runner = (await sdk()).chat.completions.runTools({
      model,
      messages: [{ role: "user", content: "Weather in Rome?" }],
      tools: [
        {
          type: "function",
          function: {
            name: "get_weather",
            description: "The weather in a city",
            parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
            parse: JSON.parse,
            function: (args: unknown) => {
              seen.push(args);
              return "19 C, cloudy";
            },
          },
        },
      ],
    });
    await answer(agent, '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Rome"}}]}');
    const second = await answer(agent, '{"content":"19 C and cloudy in Rome."}');
    expect(seen).toEqual([{ city: "Rome" }]);
    expect(second.messages?.slice(-2)).toEqual([
      { role: "assistant", content: '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Rome"}}]}' },
      {
        role: "user",
        content: expect.stringMatching(/^Result of get_weather \(call_[A-Za-z0-9]{24}\): 19 C, cloudy$/),
      },
    ]);
    expect(await runner.finalContent()).toBe("19 C and cloudy in Rome.");
  });

  it('streamed "auto" without a call: the content as one delta, finish_reason stop', async () => {
    const model = uniqueId("tools-stream-auto");
    const agent = await agents.serving(model);
    const pending = postJson("/v1/chat/completions", {
      model,
      messages: user("hi"),
      tools: [WEATHER],
      stream: true,
    });
    await answer(agent, '{"content":"Hi!"}');
    expect(await dataLines(await pending)).toMatchObject([
      { choices: [{ delta: { role: "assistant", content: "" } }] },
      { choices: [{ delta: { content: "Hi!" } }] },
      { choices: [{ delta: {}, finish_reason: "stop" }] },
      "[DONE]",
    ]);
  });
});

describe("metrics", () => {
  it("chat's structured answers are counted like /generate/structured's: tools, and a streamed response_format", async () => {
    const model = uniqueId("chat-metrics");
    const agent = await agents.serving(model);
    const tools = postJson("/v1/chat/completions", {
      model,
      messages: user("x"),
      tools: [WEATHER],
      tool_choice: "required",
    });
    await answer(agent, "{}");
    await answer(agent, '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Oslo"}}]}');
    expect((await tools).status).toBe(200);
    const streamed = postJson("/v1/chat/completions", {
      model,
      messages: user("x"),
      response_format: { type: "json_object" },
      stream: true,
    });
    await answer(agent, "[1]");
    expect((await readSse(await streamed)).at(-2)?.data).toContain("STRUCTURED_OUTPUT_INVALID");

    const m = `model="${model}",version=""`;
    const series = (text: string, name: string, labels: string) =>
      text
        .split("\n")
        .find((line) => line.startsWith(`${name}{`) && line.includes(labels))
        ?.split(" ")[1];
    const text = await waitFor(async () => {
      const body = await (
        await gatewayFetch("/metrics", { headers: await bearer({ role: "admin" }) })
      ).text();
      return series(body, "ml_inference_structured_output_attempts_count", m) === "2" ? body : null;
    });
    expect(series(text, "ml_inference_structured_outputs_total", `${m},outcome="valid"`)).toBe("1");
    expect(series(text, "ml_inference_structured_outputs_total", `${m},outcome="invalid"`)).toBe("1");
    expect(series(text, "ml_inference_structured_output_attempts_sum", m)).toBe("3");
  });
});

describe("the answer schema of tools (pure)", () => {
  // What zodFunction emits for a recursive zod schema: draft-07, definitions, $refs into them and to the root.
  const tree: ChatTool = {
    type: "function",
    function: {
      name: "tree",
      parameters: {
        $schema: "http://json-schema.org/draft-07/schema#",
        type: "object",
        properties: { root: { $ref: "#/definitions/__schema0" }, again: { $ref: "#" } },
        required: ["root"],
        additionalProperties: false,
        definitions: {
          __schema0: {
            type: "object",
            properties: {
              name: { type: "string" },
              children: { type: "array", items: { $ref: "#/definitions/__schema0" } },
            },
            required: ["name", "children"],
            additionalProperties: false,
          },
        },
      },
    },
  };
  const plan = toolPlan([tree, WEATHER as unknown as ChatTool], "required", true);
  if (plan === null) throw new Error("a plan");
  const checked = toolChecked(plan, null);
  const call = (name: string, args: unknown) => ({ tool_calls: [{ name, arguments: args }] });
  const leaf = { name: "b", children: [] };

  it("hoists each function's definitions into the root, so its $refs resolve there (the engine's schema checks)", () => {
    const engine = checkSchema(checked.schema, "tools");
    expect(Object.keys(checked.schema.$defs as object).sort()).toEqual(["fn_tree", "fn_tree____schema0"]);
    expect(
      engine.validate(call("tree", { root: { name: "a", children: [leaf] }, again: { root: leaf } })),
    ).toEqual([]);
    expect(
      engine.validate(call("tree", { root: { name: "a", children: [{ name: 1, children: [] }] } })),
    ).not.toEqual([]);
    expect(engine.validate(call("get_weather", { city: "Rome" }))).toEqual([]);
    expect(engine.validate(call("get_weather", { town: "Rome" }))).not.toEqual([]);
  });

  it("validation names the fault inside the call's arguments, by the function's own schema", () => {
    expect(checked.validate(call("tree", { root: { name: "a", children: [leaf] } }))).toEqual([]);
    const issues = checked.validate(
      call("tree", { root: { name: "a", children: [{ name: 1, children: [] }] } }),
    );
    expect(issues.map((i) => i.path)).toContain("/tool_calls/0/arguments/root/children/0/name");
    expect(checked.validate(call("nope", {})).map((i) => i.path)).toEqual(["/tool_calls/0/name"]);
    expect(checked.validate({ tool_calls: [] }).map((i) => i.path)).toEqual(["/tool_calls"]);
    expect(checked.validate({ content: "hi" }).map((i) => i.keyword)).toEqual(["required"]);
    expect(checked.validate({ tool_calls: [{ name: "get_weather" }] }).map((i) => i.path)).toEqual([
      "/tool_calls/0/arguments",
    ]);
  });

  it("one call at most without parallel_tool_calls; a plain answer only under auto", () => {
    const single = toolPlan([WEATHER as unknown as ChatTool], "auto", false);
    if (single === null) throw new Error("a plan");
    const one = toolChecked(single, null);
    const two = {
      tool_calls: [
        { name: "get_weather", arguments: { city: "a" } },
        { name: "get_weather", arguments: { city: "b" } },
      ],
    };
    expect(one.validate(two).map((i) => i.keyword)).toEqual(["maxItems"]);
    expect(one.validate({ content: "hi" })).toEqual([]);
    expect(one.validate({ content: 1 })).not.toEqual([]);
    expect(toolPlan([WEATHER as unknown as ChatTool], "none", true)).toBeNull();
    expect(toolPlan([], "auto", true)).toBeNull();
  });
});
