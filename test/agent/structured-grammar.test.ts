// The acceptance test of llama.cpp's grammar enforcement: the demo model (random weights, so it
// writes no JSON on its own) answers schemas of increasing difficulty across many seeds at
// temperature 1, and every answer parses and validates against its schema (@cfworker/json-schema,
// the validator the gateway uses). Plus the engine's refusals: a format no grammar can express
// is INVALID_REQUEST, not a crash.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Validator } from "@cfworker/json-schema";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureDemoModel } from "../../node-agent/demo-model.ts";
import { EngineError, type GenerationRequest } from "../../node-agent/engines/engine.ts";
import { LlamaCppEngine } from "../../node-agent/engines/llamacpp/index.ts";

const MODEL = "demo";
const SEEDS = 20;

let dir: string;
let engine: LlamaCppEngine;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "orchard-structured-"));
  engine = new LlamaCppEngine({
    models: [{ name: MODEL, path: await ensureDemoModel(dir) }],
    capacity: 2,
    threads: 1,
    contextSize: 1024,
  });
}, 60_000);

afterAll(async () => {
  await engine?.close();
  await rm(dir, { recursive: true, force: true });
});

async function run(request: GenerationRequest): Promise<{ text: string; finishReason: string }> {
  const generation = engine.generate(request, new AbortController().signal);
  let text = "";
  for await (const piece of generation) text += piece.text;
  return { text, finishReason: (await generation.result).finishReason };
}

const person = {
  type: "object",
  properties: { name: { type: "string", minLength: 1, maxLength: 12 }, admin: { type: "boolean" } },
  required: ["name", "admin"],
  additionalProperties: false,
};

/** Schemas of increasing difficulty, each as a caller would send it. */
const SCHEMAS: [string, Record<string, unknown>][] = [
  ["flat object", person],
  [
    "nested arrays of objects",
    {
      type: "object",
      properties: {
        teams: {
          type: "array",
          minItems: 1,
          maxItems: 3,
          items: {
            type: "object",
            properties: { members: { type: "array", items: person, maxItems: 2 }, open: { type: "boolean" } },
            required: ["members", "open"],
          },
        },
      },
      required: ["teams"],
    },
  ],
  [
    "enums",
    {
      type: "object",
      properties: {
        color: { enum: ["red", "green", "blue"] },
        size: { type: "string", enum: ["S", "M", "L", "XL"] },
        code: { enum: [1, 2.5, null, 'x"y', { a: [1] }] },
      },
      required: ["color", "size", "code"],
    },
  ],
  [
    "required and optional fields",
    {
      type: "object",
      properties: {
        id: { type: "integer" },
        note: { type: "string", maxLength: 8 },
        tags: { type: "array", items: { type: "string", maxLength: 4 }, maxItems: 3 },
        done: { type: "boolean" },
        extra: { type: "null" },
      },
      required: ["done", "id"],
    },
  ],
  [
    "integers and numbers with bounds",
    {
      type: "object",
      properties: {
        age: { type: "integer", minimum: 18, maximum: 130 },
        delta: { type: "integer", minimum: -50, maximum: -7 },
        count: { type: "integer", exclusiveMinimum: 0 },
        ratio: { type: "number", minimum: 0, maximum: 1 },
        temperature: { type: "number", exclusiveMinimum: -40, exclusiveMaximum: 60 },
        price: { type: "number", minimum: 0.5, maximum: 99.5 },
      },
      required: ["age", "delta", "count", "ratio", "temperature", "price"],
    },
  ],
  [
    "anyOf",
    {
      type: "object",
      properties: {
        result: {
          anyOf: [
            {
              type: "object",
              properties: { ok: { const: true }, value: { type: "integer", minimum: 0, maximum: 9 } },
              required: ["ok", "value"],
            },
            {
              type: "object",
              properties: { ok: { const: false }, error: { type: "string", maxLength: 10 } },
              required: ["ok", "error"],
            },
          ],
        },
        id: {
          oneOf: [
            { type: "string", minLength: 3, maxLength: 5 },
            { type: "integer", minimum: 100, maximum: 999 },
          ],
        },
      },
      required: ["result", "id"],
    },
  ],
  [
    "$ref and recursion",
    {
      $defs: {
        node: {
          type: "object",
          properties: {
            label: { type: "string", maxLength: 6 },
            children: { type: "array", items: { $ref: "#/$defs/node" }, maxItems: 2 },
          },
          required: ["label"],
        },
      },
      type: "object",
      properties: { root: { $ref: "#/$defs/node" }, depth: { type: "integer", minimum: 0, maximum: 5 } },
      required: ["root", "depth"],
    },
  ],
  ["any JSON value", {}],
];

describe("llama.cpp grammar enforcement on the demo model", () => {
  it.each(SCHEMAS)(
    "every answer to %s parses and validates, across seeds at temperature 1",
    async (_, schema) => {
      const validator = new Validator(schema as never, "2020-12", false);
      const failures: string[] = [];
      for (let seed = 1; seed <= SEEDS; seed++) {
        const { text, finishReason } = await run({
          model: MODEL,
          prompt: "Answer with JSON:",
          params: { maxTokens: 200, temperature: 1, seed },
          format: schema,
        });
        let value: unknown;
        try {
          value = JSON.parse(text);
        } catch {
          failures.push(`seed ${seed} (${finishReason}): not JSON: ${text}`);
          continue;
        }
        const { valid, errors } = validator.validate(value);
        if (!valid) failures.push(`seed ${seed}: ${text}: ${errors.map((e) => e.error).join("; ")}`);
        // Ended by the grammar (end of generation), not by max_tokens.
        if (finishReason !== "stop") failures.push(`seed ${seed}: finish ${finishReason}: ${text}`);
      }
      expect(failures).toEqual([]);
    },
  );

  it('"json" is any compact JSON value, ended by the grammar within max_tokens', async () => {
    for (const maxTokens of [8, 40]) {
      for (let seed = 1; seed <= 5; seed++) {
        const { text, finishReason } = await run({
          model: MODEL,
          messages: [{ role: "user", content: "Some JSON please" }],
          params: { maxTokens, temperature: 1, seed },
          format: "json",
        });
        expect(() => JSON.parse(text), text).not.toThrow();
        expect(text).not.toMatch(/^\s|\s$/);
        expect(finishReason).toBe("stop");
      }
    }
  });

  it("unbounded strings and arrays get bounds from max_tokens, so even a small budget ends in valid JSON", async () => {
    const schema = {
      type: "object",
      properties: { words: { type: "array", items: { type: "string" } }, title: { type: "string" } },
      required: ["words", "title"],
    };
    const validator = new Validator(schema as never, "2020-12", false);
    for (const maxTokens of [24, 64]) {
      for (let seed = 1; seed <= 5; seed++) {
        const { text, finishReason } = await run({
          model: MODEL,
          prompt: "JSON:",
          params: { maxTokens, temperature: 1, seed },
          format: schema,
        });
        expect(finishReason, text).toBe("stop");
        expect(validator.validate(JSON.parse(text)).valid, text).toBe(true);
      }
    }
  });

  it("without format the demo model writes no JSON: the grammar is what makes the answers valid", async () => {
    let parsed = 0;
    for (let seed = 1; seed <= 5; seed++) {
      const { text } = await run({
        model: MODEL,
        prompt: "Answer with JSON:",
        params: { maxTokens: 40, temperature: 1, seed },
      });
      try {
        JSON.parse(text);
        parsed++;
      } catch {}
    }
    expect(parsed).toBe(0);
  });

  it("a schema no value satisfies, or a broken $ref, is INVALID_REQUEST; the engine keeps serving", async () => {
    for (const format of [
      { type: "integer", minimum: 5, maximum: 1 },
      { type: "object", properties: { a: false }, required: ["a"] },
      { $ref: "#/$defs/missing" },
      { type: "array", items: { enum: [] }, minItems: 1 },
    ]) {
      const error = await run({ model: MODEL, prompt: "x", params: { maxTokens: 8 }, format }).catch(
        (e) => e,
      );
      expect(error, JSON.stringify(format)).toBeInstanceOf(EngineError);
      expect((error as EngineError).code).toBe("INVALID_REQUEST");
      expect((error as EngineError).retryable).toBe(false);
    }
    const { text } = await run({
      model: MODEL,
      prompt: "x",
      params: { maxTokens: 40, seed: 1 },
      format: person,
    });
    expect(new Validator(person as never).validate(JSON.parse(text)).valid).toBe(true);
  });
});
