// OpenAI structured outputs and tools against the running stack: the Worker in workerd, a real agent
// process, llama.cpp on the demo model (random weights: it writes no JSON of its own, so whatever
// validates came from the engine's grammar or from the gateway's retries). The openai SDK's own
// helpers do the parsing: parse() with zodResponseFormat, and stream() assembling a tool call.
// Each test says which path it took: the agent's "connected" line names the capabilities it
// negotiated (structured_output: llama.cpp enforces `format`), and its "generation started" lines
// for the request's id count the attempts.
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { DEMO_MODEL_NAME } from "../../node-agent/demo-model.ts";
import { type AgentProcess, type Stack, startStack } from "../helpers/stack.ts";

const MODEL = DEMO_MODEL_NAME;

let stack: Stack;
let client: OpenAI;
let agent: AgentProcess;
let enforced: boolean;

/** How many generations the agent started for request `id` (each attempt is one). */
const attempts = (id: string) =>
  agent.lines.filter((l) => l.includes('"msg":"generation started"') && l.includes(`"id":"${id}"`)).length;

/** Says which path a request took, for the run's log (the report reads it). */
function path(what: string, id: string): number {
  const n = attempts(id);
  console.log(`${what}: ${enforced ? "grammar-enforced" : "validation + retries"}, ${n} attempt(s)`);
  return n;
}

beforeAll(async () => {
  stack = await startStack();
  client = new OpenAI({ baseURL: `${stack.origin}/v1`, apiKey: await stack.token("user"), maxRetries: 0 });
  agent = await stack.startAgent({ id: "e2e-structured" });
  await stack.waitForAgents((list) => list.length === 1);
  const connected = await agent.waitForLog((l) => l.includes('"msg":"connected"'));
  enforced = (JSON.parse(connected) as { capabilities: string[] }).capabilities.includes("structured_output");
});

afterAll(async () => {
  await stack?.stop();
});

describe("OpenAI structured outputs and tools on the demo model", () => {
  it("chat.completions.parse() with zodResponseFormat returns the parsed object", async () => {
    const Reading = z.object({
      station: z.string().max(12),
      level: z.enum(["low", "mid", "high"]),
      count: z.number().int().min(0).max(99),
      ok: z.boolean(),
    });
    const id = "e2e-parse";
    const completion = await client.chat.completions.parse(
      {
        model: MODEL,
        messages: [{ role: "user", content: "Report the reading." }],
        response_format: zodResponseFormat(Reading, "reading"),
        max_tokens: 96,
        temperature: 0,
      },
      { headers: { "X-Request-Id": id } },
    );
    const choice = completion.choices[0];
    expect(choice?.finish_reason).toBe("stop");
    const parsed = choice?.message.parsed;
    expect(Reading.safeParse(parsed).success).toBe(true);
    expect(JSON.parse(choice?.message.content ?? "")).toEqual(parsed);
    const n = path("parse()", id);
    expect(n).toBeGreaterThanOrEqual(1);
    // With the grammar the first attempt validates; without it only retries can get here.
    if (enforced) expect(n).toBe(1);
  });

  it("a streamed tool call assembled by the SDK has a defined function and arguments that match its schema", async () => {
    const Args = z.object({ city: z.string().max(16), days: z.number().int().min(1).max(7) });
    const id = "e2e-tool-stream";
    const stream = client.chat.completions.stream(
      {
        model: MODEL,
        messages: [{ role: "user", content: "What will the weather be?" }],
        tools: [
          {
            type: "function",
            function: {
              name: "get_forecast",
              description: "The forecast for a city",
              strict: true,
              parameters: {
                type: "object",
                properties: {
                  city: { type: "string", maxLength: 16 },
                  days: { type: "integer", minimum: 1, maximum: 7 },
                },
                required: ["city", "days"],
                additionalProperties: false,
              },
            },
          },
          {
            type: "function",
            function: {
              name: "get_time",
              strict: true,
              parameters: { type: "object", properties: {}, additionalProperties: false },
            },
          },
        ],
        tool_choice: "required",
        parallel_tool_calls: false,
        max_tokens: 96,
        temperature: 0,
      },
      { headers: { "X-Request-Id": id } },
    );
    const deltas: string[] = [];
    stream.on("tool_calls.function.arguments.delta", (e) => deltas.push(e.arguments_delta));
    const completion = await stream.finalChatCompletion();
    const choice = completion.choices[0];
    expect(choice?.finish_reason).toBe("tool_calls");
    expect(choice?.message.content).toBeNull();
    const calls = choice?.message.tool_calls ?? [];
    expect(calls).toHaveLength(1);
    const call = calls[0];
    if (call?.type !== "function") throw new Error("a function call");
    expect(call.id).toMatch(/^call_[A-Za-z0-9]{24}$/);
    expect(["get_forecast", "get_time"]).toContain(call.function.name);
    const args: unknown = JSON.parse(call.function.arguments);
    if (call.function.name === "get_forecast") expect(Args.safeParse(args).success).toBe(true);
    else expect(args).toEqual({});
    expect(deltas.join("")).toBe(call.function.arguments);
    const n = path(`streamed tool call (${call.function.name})`, id);
    if (enforced) expect(n).toBe(1);
  });

  it("a json_object request returns parseable JSON (an object)", async () => {
    const id = "e2e-json-object";
    const completion = await client.chat.completions.create(
      {
        model: MODEL,
        messages: [{ role: "user", content: "Any JSON object." }],
        response_format: { type: "json_object" },
        max_tokens: 64,
        temperature: 0,
      },
      { headers: { "X-Request-Id": id } },
    );
    const content = completion.choices[0]?.message.content ?? "";
    const value: unknown = JSON.parse(content);
    expect(typeof value === "object" && value !== null && !Array.isArray(value)).toBe(true);
    const n = path("json_object", id);
    if (enforced) expect(n).toBe(1);
  });

  it("an answer that cannot fit max_tokens is 422 STRUCTURED_OUTPUT_INVALID in the SDK, after every attempt", async () => {
    // max_tokens 2 cannot hold this object; enforced or not, every attempt is cut off.
    const attempt = client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "x" }],
      response_format: {
        type: "json_schema",
        json_schema: {
          name: "long",
          schema: {
            type: "object",
            properties: { a: { type: "string", minLength: 20 } },
            required: ["a"],
            additionalProperties: false,
          },
        },
      },
      max_tokens: 2,
      temperature: 0,
    });
    await expect(attempt).rejects.toBeInstanceOf(OpenAI.UnprocessableEntityError);
    await expect(attempt).rejects.toMatchObject({ status: 422, code: "STRUCTURED_OUTPUT_INVALID" });
  });
});

describe("without enforcement (--structured-output off): validation and retries for real", () => {
  let plain: AgentProcess;

  beforeAll(async () => {
    await agent.stop();
    plain = await stack.startAgent({ id: "e2e-structured-off", args: ["--structured-output", "off"] });
    await stack.waitForAgents((list) => list.length === 1 && list[0]?.id === "e2e-structured-off");
    const connected = await plain.waitForLog((l) => l.includes('"msg":"connected"'));
    expect((JSON.parse(connected) as { capabilities: string[] }).capabilities).not.toContain(
      "structured_output",
    );
  });

  it("the random-weights model's text fails every attempt: 422 with the issues and its last raw output", async () => {
    const id = "e2e-json-object-off";
    const attempt = client.chat.completions.create(
      {
        model: MODEL,
        messages: [{ role: "user", content: "Any JSON object." }],
        response_format: { type: "json_object" },
        max_tokens: 24,
        temperature: 0,
      },
      { headers: { "X-Request-Id": id } },
    );
    const error = await attempt.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.UnprocessableEntityError);
    const details = (error as { error: { details: { attempts: number; raw: string; errors: unknown[] } } })
      .error.details;
    expect(details.attempts).toBe(3);
    expect(details.errors.length).toBeGreaterThan(0);
    expect(details.raw).not.toBe("");
    // Each attempt was a generation of its own on the agent: the first, then two with the feedback.
    const generations = plain.lines.filter(
      (l) => l.includes('"msg":"generation started"') && l.includes(`"id":"${id}"`),
    );
    expect(generations).toHaveLength(3);
    console.log(
      `json_object without enforcement: validation + retries, ${generations.length} attempt(s), 422`,
    );
  });
});
