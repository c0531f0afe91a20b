// POST /generate/structured through the running stack: the Worker in workerd, a real agent process,
// llama.cpp on the demo model (random weights: it writes no JSON of its own). With the agent's
// grammar enforcement every answer across seeds at temperature 1 is 200, valid, in one attempt; with
// --structured-output off the gateway's validation and retries work alone, for real: every attempt
// is a generation of its own, the streamed form says `retry` between them, and when they run out
// the answer is 422 STRUCTURED_OUTPUT_INVALID with the issues and the last raw output.
import { Validator } from "@cfworker/json-schema";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEMO_MODEL_NAME } from "../../node-agent/demo-model.ts";
import { type AgentProcess, type Stack, startStack } from "../helpers/stack.ts";

let stack: Stack;
let token: string;
let agent: AgentProcess;

/** The agent's "generation started" lines for request `id`: one per attempt. */
const generations = (who: AgentProcess, id: string) =>
  who.lines.filter((l) => l.includes('"msg":"generation started"') && l.includes(`"id":"${id}"`)).length;

async function structured(id: string, body: Record<string, unknown>): Promise<Response> {
  return fetch(`${stack.origin}/generate/structured`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", "X-Request-Id": id },
    body: JSON.stringify({ model: DEMO_MODEL_NAME, ...body }),
  });
}

/** A text/event-stream body as [event, data] pairs. */
async function events(response: Response): Promise<[string, Record<string, unknown>][]> {
  const text = await response.text();
  return text
    .split("\n\n")
    .filter((block) => block.trim() !== "")
    .map((block) => {
      const lines = block.split("\n");
      const event =
        lines
          .find((l) => l.startsWith("event:"))
          ?.slice(6)
          .trim() ?? "message";
      const data = lines
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trim())
        .join("\n");
      return [event, JSON.parse(data) as Record<string, unknown>];
    });
}

const SCHEMAS: [string, Record<string, unknown>][] = [
  [
    "object with enums, bounded numbers and optional fields",
    {
      type: "object",
      properties: {
        city: { type: "string", minLength: 1, maxLength: 12 },
        level: { enum: ["low", "mid", "high"] },
        reading: { type: "number", minimum: -10, maximum: 40 },
        count: { type: "integer", minimum: 1, maximum: 99 },
        note: { type: "string", maxLength: 6 },
      },
      required: ["city", "level", "reading", "count"],
      additionalProperties: false,
    },
  ],
  [
    "nested arrays of objects",
    {
      type: "object",
      properties: {
        rows: {
          type: "array",
          minItems: 1,
          maxItems: 3,
          items: {
            type: "object",
            properties: {
              id: { type: "integer", minimum: 0 },
              tags: { type: "array", items: { type: "string", maxLength: 4 }, maxItems: 2 },
            },
            required: ["id", "tags"],
          },
        },
      },
      required: ["rows"],
    },
  ],
  [
    "anyOf with $ref",
    {
      $defs: {
        ok: {
          type: "object",
          properties: { ok: { const: true }, value: { type: "boolean" } },
          required: ["ok", "value"],
        },
      },
      anyOf: [
        { $ref: "#/$defs/ok" },
        {
          type: "object",
          properties: { ok: { const: false }, error: { type: "string", maxLength: 8 } },
          required: ["ok", "error"],
        },
      ],
    },
  ],
];

beforeAll(async () => {
  stack = await startStack();
  token = await stack.token("user");
  agent = await stack.startAgent({ id: "e2e-grammar" });
  await stack.waitForAgents((list) => list.length === 1);
  const connected = await agent.waitForLog((l) => l.includes('"msg":"connected"'));
  expect((JSON.parse(connected) as { capabilities: string[] }).capabilities).toContain("structured_output");
}, 120_000);

afterAll(async () => {
  await stack?.stop();
});

describe("with grammar enforcement (llama.cpp announces json_schema_grammar)", () => {
  it.each(SCHEMAS)(
    "%s: 200 and valid in one attempt, across seeds at temperature 1",
    async (name, schema) => {
      const validator = new Validator(schema as never, "2020-12", false);
      for (let seed = 1; seed <= 6; seed++) {
        const id = `e2e-g${SCHEMAS.findIndex(([n]) => n === name)}-${seed}`;
        const response = await structured(id, {
          prompt: "Report.",
          schema,
          max_tokens: 160,
          temperature: 1,
          seed,
        });
        const body = (await response.json()) as {
          data: unknown;
          raw: string;
          attempts: number;
          request_id: string;
        };
        if (response.status !== 200) console.log(agent.lines.slice(-30).join("\n"));
        expect(response.status, JSON.stringify(body)).toBe(200);
        expect(validator.validate(body.data).errors).toEqual([]);
        expect(JSON.parse(body.raw)).toEqual(body.data);
        expect(body.attempts).toBe(1);
        expect(body.request_id).toBe(id);
        expect(generations(agent, id)).toBe(1);
      }
    },
  );

  it("streamed: the JSON text in chunks, no retry, then done with the data", async () => {
    const [, schema] = SCHEMAS[0] as [string, Record<string, unknown>];
    const response = await structured("e2e-grammar-stream", {
      prompt: "Report.",
      schema,
      max_tokens: 160,
      temperature: 1,
      seed: 7,
      stream: true,
    });
    expect(response.status).toBe(200);
    const list = await events(response);
    expect(list.map(([e]) => e).filter((e) => e !== "chunk")).toEqual(["done"]);
    const text = list
      .filter(([e]) => e === "chunk")
      .map(([, d]) => d.text)
      .join("");
    const done = list.at(-1)?.[1] as { data: unknown; attempts: number };
    expect(JSON.parse(text)).toEqual(done.data);
    expect(done.attempts).toBe(1);
  });
});

describe("without enforcement (--structured-output off): the gateway's retries and 422 for real", () => {
  let plain: AgentProcess;
  const [, schema] = SCHEMAS[0] as [string, Record<string, unknown>];

  beforeAll(async () => {
    await agent.stop();
    plain = await stack.startAgent({ id: "e2e-grammar-off", args: ["--structured-output", "off"] });
    await stack.waitForAgents((list) => list.length === 1 && list[0]?.id === "e2e-grammar-off");
    const connected = await plain.waitForLog((l) => l.includes('"msg":"connected"'));
    expect((JSON.parse(connected) as { capabilities: string[] }).capabilities).not.toContain(
      "structured_output",
    );
  }, 120_000);

  it("every attempt is a generation of its own, and when they run out: 422 with the issues and the raw output", async () => {
    const id = "e2e-grammar-off-422";
    const response = await structured(id, {
      prompt: "Report.",
      schema,
      max_tokens: 24,
      temperature: 1,
      seed: 3,
      max_retries: 2,
    });
    expect(response.status).toBe(422);
    const body = (await response.json()) as {
      error: {
        code: string;
        details: { errors: { path: string; message: string }[]; raw: string; attempts: number };
      };
    };
    expect(body.error.code).toBe("STRUCTURED_OUTPUT_INVALID");
    expect(body.error.details.attempts).toBe(3);
    expect(body.error.details.errors.length).toBeGreaterThan(0);
    expect(body.error.details.raw).not.toBe("");
    expect(generations(plain, id)).toBe(3);
  });

  it("streamed: retry events between the attempts, then the error with the same details", async () => {
    const id = "e2e-grammar-off-stream";
    const response = await structured(id, {
      prompt: "Report.",
      schema,
      max_tokens: 24,
      temperature: 1,
      seed: 4,
      max_retries: 1,
      stream: true,
    });
    expect(response.status).toBe(200);
    const list = await events(response);
    const kinds = list.map(([e]) => e).filter((e) => e !== "chunk");
    expect(kinds).toEqual(["retry", "error"]);
    const retry = list.find(([e]) => e === "retry")?.[1] as { attempt: number; errors: unknown[] };
    expect(retry.attempt).toBe(1);
    expect(retry.errors.length).toBeGreaterThan(0);
    expect(new Set(list.filter(([e]) => e === "chunk").map(([, d]) => d.attempt))).toEqual(new Set([1, 2]));
    const error = list.at(-1)?.[1] as {
      code?: string;
      error?: { code: string; details: { attempts: number } };
    };
    expect(error.error?.code ?? error.code).toBe("STRUCTURED_OUTPUT_INVALID");
    expect(generations(plain, id)).toBe(2);
  });

  it("max_retries 0: one attempt, then 422", async () => {
    const id = "e2e-grammar-off-once";
    const response = await structured(id, {
      prompt: "Report.",
      schema,
      max_tokens: 24,
      seed: 5,
      max_retries: 0,
    });
    expect(response.status).toBe(422);
    const body = (await response.json()) as { error: { details: { attempts: number } } };
    expect(body.error.details.attempts).toBe(1);
    expect(generations(plain, id)).toBe(1);
  });
});
