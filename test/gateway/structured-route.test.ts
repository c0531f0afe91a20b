// POST /generate/structured against scripted agents on real sockets: what the generate frames
// carry (format, the instruction, the feedback), valid the first time or after a retry, invalid
// every time (422 with the issues, the raw output and the attempts), the deadline, the rate
// limiter counting every attempt, the prompt screen, and the streamed events.
import { describe, expect, it } from "vitest";
import type { ErrorBody } from "../../schema/api.ts";
import type { GenerateFrame } from "../../schema/protocol.ts";
import type { GenerateStructuredResponse } from "../../schema/structured.ts";
import {
  bearer,
  gatewayFetch,
  postJson,
  readSse,
  SseReader,
  type TestAgent,
  trackedAgents,
  uniqueId,
  waitFor,
} from "./helpers.ts";
import { answer, sendJson } from "./security-helpers.ts";

const agents = trackedAgents();

const PERSON = {
  type: "object",
  properties: { name: { type: "string" }, age: { type: "integer", minimum: 0 } },
  required: ["name", "age"],
  additionalProperties: false,
};

type Failure = ErrorBody & {
  error: {
    details: { errors: { path: string; message: string; keyword: string }[]; raw: string; attempts: number };
  };
};

async function servingModel(prefix: string): Promise<{ model: string; agent: TestAgent }> {
  const model = uniqueId(prefix);
  return { model, agent: await agents.serving(model) };
}

describe("POST /generate/structured, not streamed", () => {
  it("valid the first time: the data, the raw text, one attempt; the frame carries the format and the instruction", async () => {
    const { model, agent } = await servingModel("so-valid");
    const pending = postJson("/generate/structured", {
      prompt: "Who is Ada?",
      model,
      schema: PERSON,
      seed: 7,
    });
    const frame = await answer(agent, ['{"name":', '"Ada","age":36}']);
    const response = await pending;
    expect(response.status).toBe(200);
    const body = (await response.json()) as GenerateStructuredResponse;
    expect(body).toMatchObject({
      data: { name: "Ada", age: 36 },
      raw: '{"name":"Ada","age":36}',
      attempts: 1,
      usage: { prompt_tokens: 4, completion_tokens: 2 },
      model_name: model,
      request_id: response.headers.get("X-Request-Id"),
    });
    expect(body.latency_ms).toBeGreaterThanOrEqual(0);
    expect(response.headers.get("X-Orchard-Model")).toBe(model);
    expect(frame.format).toEqual(PERSON);
    expect(frame.params.seed).toBe(7);
    expect(frame.prompt).toBe(
      `Answer with a JSON value only, matching this JSON Schema: ${JSON.stringify(PERSON)}\n\nWho is Ada?\n`,
    );
  });

  it("invalid, then valid: the second frame carries the output and the issues back, and the format", async () => {
    const { model, agent } = await servingModel("so-retry");
    const pending = postJson("/generate/structured", { prompt: "Who?", model, schema: PERSON });
    const first = await answer(agent, ['{"name":1,"age":-2}']);
    const second = await answer(agent, ['{"name":"Bo","age":2}']);
    const response = await pending;
    expect(response.status).toBe(200);
    const body = (await response.json()) as GenerateStructuredResponse;
    expect(body).toMatchObject({
      data: { name: "Bo", age: 2 },
      attempts: 2,
      usage: { prompt_tokens: 8, completion_tokens: 2 },
    });
    expect(second.format).toEqual(PERSON);
    expect(second.prompt?.startsWith(`${first.prompt}{"name":1,"age":-2}`)).toBe(true);
    expect(second.prompt).toContain("/name: ");
    expect(second.prompt).toContain("/age: ");
    expect(second.prompt).toContain("Answer again with only the corrected JSON value.");
  });

  it("messages: the instruction joins the system message; feedback is an assistant turn and a user turn", async () => {
    const { model, agent } = await servingModel("so-msgs");
    const messages = [
      { role: "system", content: "Be brief." },
      { role: "user", content: "A colour?" },
    ];
    const schema = {
      type: "object",
      properties: { colour: { enum: ["red", "green"] } },
      required: ["colour"],
    };
    const pending = postJson("/generate/structured", { messages, model, schema });
    const first = await answer(agent, ['{"colour":"blue"}']);
    const second = await answer(agent, ['```json\n{"colour":"red"}\n```']);
    const body = (await (await pending).json()) as GenerateStructuredResponse;
    expect(body).toMatchObject({ data: { colour: "red" }, attempts: 2 });
    expect(first.messages?.[0]).toEqual({
      role: "system",
      content: `Answer with a JSON value only, matching this JSON Schema: ${JSON.stringify(schema)}\n\nBe brief.`,
    });
    expect(first.messages?.slice(1)).toEqual([{ role: "user", content: "A colour?" }]);
    expect(second.messages?.slice(0, 2)).toEqual(first.messages);
    expect(second.messages?.[2]).toEqual({ role: "assistant", content: '{"colour":"blue"}' });
    expect(second.messages?.[3]?.role).toBe("user");
    expect(second.messages?.[3]?.content).toContain("/colour: ");
    expect(second.format).toEqual(schema);
  });

  it("invalid every time: 422 STRUCTURED_OUTPUT_INVALID with the issues, the last raw output and the attempts", async () => {
    const { model, agent } = await servingModel("so-422");
    const pending = postJson("/generate/structured", { prompt: "x", model, schema: PERSON, max_retries: 2 });
    const frames: GenerateFrame[] = [];
    for (const text of ["nope", '{"name":"a"}', '{"name":"a","age":"old"}'])
      frames.push(await answer(agent, [text]));
    const response = await pending;
    expect(response.status).toBe(422);
    expect(response.headers.get("X-Error-Code")).toBe("STRUCTURED_OUTPUT_INVALID");
    const body = (await response.json()) as Failure;
    expect(body.error.code).toBe("STRUCTURED_OUTPUT_INVALID");
    expect(body.error.message).toBe("the output did not match the schema after 3 attempts");
    expect(body.error.details).toEqual({
      errors: [{ path: "/age", keyword: "type", message: expect.any(String) }],
      raw: '{"name":"a","age":"old"}',
      attempts: 3,
    });
    expect(frames[1]?.prompt).toContain("(root): the output is not valid JSON");
    expect(frames[2]?.prompt).toContain('(root): Instance does not have required property "age".');
    // Nothing more was dispatched.
    expect(await agent.unread("generate")).toEqual([]);
  });

  it("max_retries 0: one attempt", async () => {
    const { model, agent } = await servingModel("so-once");
    const pending = postJson("/generate/structured", {
      prompt: "x",
      model,
      schema: { type: "integer" },
      max_retries: 0,
    });
    await answer(agent, ["3.5"]);
    const body = (await (await pending).json()) as Failure;
    expect(body.error.details).toMatchObject({ attempts: 1, raw: "3.5" });
    expect(await agent.unread("generate")).toEqual([]);
  });

  it("the deadline bounds the retries: a retry it cuts short ends as 422 after the attempts made", async () => {
    const { model, agent } = await servingModel("so-deadline");
    const pending = postJson(
      "/generate/structured",
      { prompt: "x", model, schema: PERSON, max_retries: 5 },
      { headers: { "X-Orchard-Timeout-Ms": "1500" } },
    );
    const first = await answer(agent, ["{}"]);
    const second = await agent.next("generate");
    // The retry gets what is left of the request's deadline, not a deadline of its own.
    expect(second.timeoutMs).toBeLessThanOrEqual(first.timeoutMs ?? Number.POSITIVE_INFINITY);
    expect(first.timeoutMs).toBeLessThanOrEqual(1500);
    const response = await pending; // the agent never answers the retry
    expect(response.status).toBe(422);
    const body = (await response.json()) as Failure;
    expect(body.error.message).toContain("deadline");
    expect(body.error.details).toMatchObject({ attempts: 1, raw: "{}" });
  });

  it("the rate limiter counts every attempt", async () => {
    const { model, agent } = await servingModel("so-rl");
    const vars = { RATE_LIMITS: JSON.stringify({ user: { rpm: 2 } }) };
    const token = { sub: uniqueId("so-rl-caller") };
    const pending = sendJson("/generate/structured", { prompt: "x", model, schema: PERSON }, { vars, token });
    await answer(agent, ["{}"]);
    await answer(agent, ['{"name":"a","age":1}']);
    const first = await pending;
    expect(first.status).toBe(200);
    expect(((await first.json()) as GenerateStructuredResponse).attempts).toBe(2);
    // Two attempts were two requests: the minute's budget is spent.
    expect(first.headers.get("RateLimit")).toContain('"rpm";r=0');
    const refused = await sendJson(
      "/generate/structured",
      { prompt: "x", model, schema: PERSON },
      { vars, token },
    );
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as ErrorBody).error.code).toBe("RATE_LIMITED");
  });

  it("the prompt screen reads the prompt and the user messages, as on /generate", async () => {
    const vars = {
      CONTENT_FILTERS: JSON.stringify({
        generate: [{ pattern: "forbidden-word", action: "block", name: "deny" }],
      }),
    };
    const byPrompt = await sendJson(
      "/generate/structured",
      { prompt: "a forbidden-word", schema: PERSON },
      { vars },
    );
    expect(byPrompt.status).toBe(400);
    expect(((await byPrompt.json()) as ErrorBody).error.code).toBe("CONTENT_FILTERED");
    const byMessage = await sendJson(
      "/generate/structured",
      { messages: [{ role: "user", content: "the forbidden-word" }], schema: PERSON },
      { vars },
    );
    expect(((await byMessage.json()) as ErrorBody).error.code).toBe("CONTENT_FILTERED");
  });

  it.each<[Record<string, unknown>, string]>([
    [{ schema: PERSON }, "neither prompt nor messages"],
    [{ prompt: "x", messages: [{ role: "user", content: "y" }], schema: PERSON }, "both"],
    [{ prompt: "x" }, "no schema"],
    [{ prompt: "x", schema: PERSON, max_retries: 6 }, "max_retries over 5"],
    [{ prompt: "x", schema: PERSON, max_retries: -1 }, "max_retries under 0"],
    [{ prompt: "x", schema: ["not", "a", "schema"] }, "a list for a schema"],
    [{ prompt: "x", schema: "bad name!" }, "a schema name with a space"],
    [{ prompt: "x", schema: PERSON, tools: [] }, "an unknown field"],
  ])("%j is 400 INVALID_REQUEST (%s)", async (body) => {
    const response = await postJson("/generate/structured", body);
    expect(response.status).toBe(400);
    expect(((await response.json()) as ErrorBody).error.code).toBe("INVALID_REQUEST");
  });

  it("a bad schema is refused before anything is dispatched, with the path to the fault", async () => {
    const { model, agent } = await servingModel("so-bad");
    const response = await postJson("/generate/structured", {
      prompt: "x",
      model,
      schema: { type: "object", properties: { a: { type: "string", contains: {} } } },
    });
    expect(response.status).toBe(400);
    const body = (await response.json()) as ErrorBody;
    expect(body.error.code).toBe("UNSUPPORTED_SCHEMA_KEYWORD");
    expect(body.error.message).toContain('"contains"');
    expect(await agent.unread("generate")).toEqual([]);
  });

  it("needs a token", async () => {
    const response = await postJson(
      "/generate/structured",
      { prompt: "x", schema: PERSON },
      { headers: { Authorization: "" } },
    );
    expect(response.status).toBe(401);
  });
});

describe("POST /generate/structured, streamed", () => {
  it("chunks of each attempt, a retry with the issues, then done with the validated data", async () => {
    const { model, agent } = await servingModel("so-stream");
    const pending = postJson("/generate/structured", { prompt: "x", model, schema: PERSON, stream: true });
    const first = await agent.next("generate");
    expect(first.format).toEqual(PERSON);
    await agent.chunk(first.id, '{"name":');
    const response = await pending;
    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Type")).toContain("text/event-stream");
    const reader = new SseReader(response.body as ReadableStream<Uint8Array>);
    expect(await reader.next()).toEqual({
      event: "chunk",
      data: JSON.stringify({ text: '{"name":', attempt: 1 }),
    });
    await agent.chunk(first.id, "7}");
    await agent.done(first.id);
    expect(await reader.next()).toEqual({ event: "chunk", data: JSON.stringify({ text: "7}", attempt: 1 }) });
    const retry = await reader.next();
    expect(retry?.event).toBe("retry");
    const retryData = JSON.parse(retry?.data ?? "{}") as { attempt: number; errors: { path: string }[] };
    expect(retryData.attempt).toBe(1);
    expect(retryData.errors.map((e) => e.path).sort()).toEqual(["", "/name"]);
    const second = await answer(agent, ['{"name":"C","age":3}']);
    expect(second.prompt).toContain('{"name":7}');
    expect(await reader.next()).toEqual({
      event: "chunk",
      data: JSON.stringify({ text: '{"name":"C","age":3}', attempt: 2 }),
    });
    const done = await reader.next();
    expect(done?.event).toBe("done");
    expect(JSON.parse(done?.data ?? "{}")).toMatchObject({
      data: { name: "C", age: 3 },
      raw: '{"name":"C","age":3}',
      attempts: 2,
      usage: { prompt_tokens: 7, completion_tokens: 3 },
      model_name: model,
      request_id: response.headers.get("X-Request-Id"),
    });
    expect(await reader.next()).toBeNull();
  });

  it("invalid every time: the stream ends with an error event carrying the details", async () => {
    const { model, agent } = await servingModel("so-stream-422");
    const pending = postJson("/generate/structured", {
      prompt: "x",
      model,
      schema: PERSON,
      stream: true,
      max_retries: 1,
    });
    await answer(agent, ["no"]);
    await answer(agent, ["still no"]);
    const events = await readSse(await pending);
    expect(events.map((e) => e.event)).toEqual(["chunk", "retry", "chunk", "error"]);
    const error = JSON.parse(events[3]?.data ?? "{}") as Failure;
    expect(error.error.code).toBe("STRUCTURED_OUTPUT_INVALID");
    expect(error.error.details).toMatchObject({ attempts: 2, raw: "still no" });
  });

  it("a refusal of the first attempt is still an HTTP status", async () => {
    const response = await postJson("/generate/structured", {
      prompt: "x",
      model: uniqueId("so-nobody"),
      schema: PERSON,
      stream: true,
    });
    expect(response.status).toBe(404);
    expect(((await response.json()) as ErrorBody).error.code).toBe("MODEL_NOT_FOUND");
  });

  it("a caller that stops reading cancels the generation on the agent", async () => {
    const { model, agent } = await servingModel("so-stream-gone");
    const pending = postJson("/generate/structured", { prompt: "x", model, schema: PERSON, stream: true });
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, "{");
    const reader = new SseReader((await pending).body as ReadableStream<Uint8Array>);
    expect((await reader.next())?.event).toBe("chunk");
    await reader.cancel();
    // The gateway learns it when it next writes: with the agent's next chunk.
    await agent.chunk(frame.id, '"a"');
    const cancel = await agent.next("cancel");
    expect(cancel.id).toBe(frame.id);
    // Nor is the attempt retried.
    expect(await agent.unread("generate")).toEqual([]);
  });

  it("an agent failing mid-attempt ends the stream with its error event", async () => {
    const { model, agent } = await servingModel("so-stream-fail");
    const pending = postJson("/generate/structured", { prompt: "x", model, schema: PERSON, stream: true });
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, "{");
    agent.send({ type: "error", id: frame.id, code: "ENGINE_ERROR", message: "boom", retryable: false });
    const events = await readSse(await pending);
    expect(events.map((e) => e.event)).toEqual(["chunk", "error"]);
    expect((JSON.parse(events[1]?.data ?? "{}") as ErrorBody).error.code).toBe("UPSTREAM_ERROR");
  });
});

describe("metrics: the schema-valid rate and the attempts, per model and version", () => {
  it("each structured request's end is counted by its pool's hub", async () => {
    const { model, agent } = await servingModel("so-metrics");
    const valid = postJson("/generate/structured", { prompt: "x", model, schema: PERSON });
    await answer(agent, ["{}"]);
    await answer(agent, ['{"name":"a","age":1}']);
    expect((await valid).status).toBe(200);
    const invalid = postJson("/generate/structured", { prompt: "x", model, schema: PERSON, max_retries: 0 });
    await answer(agent, ["no"]);
    expect((await invalid).status).toBe(422);

    const series = (text: string, name: string, labels: string) =>
      text
        .split("\n")
        .find((line) => line.startsWith(`${name}{`) && line.includes(labels))
        ?.split(" ")[1];
    const text = await waitFor(async () => {
      const response = await gatewayFetch("/metrics", { headers: await bearer({ role: "admin" }) });
      const body = await response.text();
      return body.includes(`ml_inference_structured_output_attempts_count{pool="default",model="${model}"`) &&
        body.includes(`model="${model}",version="",outcome="invalid"`)
        ? body
        : null;
    });
    const m = `model="${model}",version=""`;
    expect(series(text, "ml_inference_structured_outputs_total", `${m},outcome="valid"`)).toBe("1");
    expect(series(text, "ml_inference_structured_outputs_total", `${m},outcome="invalid"`)).toBe("1");
    expect(series(text, "ml_inference_structured_output_attempts_count", m)).toBe("2");
    expect(series(text, "ml_inference_structured_output_attempts_sum", m)).toBe("3");
    expect(series(text, "ml_inference_structured_output_attempts_bucket", `${m},le="1"`)).toBe("1");
    expect(series(text, "ml_inference_structured_output_attempts_bucket", `${m},le="2"`)).toBe("2");
  });
});
