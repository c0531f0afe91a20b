// The JSON Schema -> GBNF converter (node-agent/engines/llamacpp/json-grammar.ts), checked with
// llama.cpp's own grammar engine: exact membership for integer and number ranges, strings and
// their escapes, properties in schema order with optional ones, arrays and tuples; and a property
// test over random schemas from the supported set, sampling the real engine at temperature 1:
// every answer parses and validates (@cfworker/json-schema).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Validator } from "@cfworker/json-schema";
import fc from "fast-check";
import { getLlama, type Llama } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureDemoModel } from "../../node-agent/demo-model.ts";
import { LlamaCppEngine } from "../../node-agent/engines/llamacpp/index.ts";
import { allocate, jsonGrammar, quantize } from "../../node-agent/engines/llamacpp/json-grammar.ts";

let llama: Llama;
let dir: string;
let engine: LlamaCppEngine;

beforeAll(async () => {
  llama = await getLlama({ gpu: false, build: "never" });
  dir = await mkdtemp(join(tmpdir(), "orchard-json-grammar-"));
  engine = new LlamaCppEngine({
    models: [{ name: "demo", path: await ensureDemoModel(dir) }],
    capacity: 1,
    threads: 1,
    contextSize: 1024,
  });
}, 60_000);

afterAll(async () => {
  await engine?.close();
  await rm(dir, { recursive: true, force: true });
});

/** Whether llama.cpp's grammar engine accepts `text` as a whole (LlamaGrammar's internal _testText). */
async function accepter(schema: "json" | Record<string, unknown>, maxBytes = 400) {
  const grammar = await llama.createGrammar({ grammar: jsonGrammar(schema, { maxBytes }) });
  return (text: string) => (grammar as unknown as { _testText(t: string): boolean })._testText(text);
}

describe("integer ranges are exact", () => {
  const cases: [number | undefined, number | undefined][] = [
    [-15, 27],
    [0, 100],
    [5, 5],
    [-100, -3],
    [3, undefined],
    [-7, undefined],
    [123, undefined],
    [undefined, 12],
    [undefined, -12],
    [undefined, undefined],
    [18, 130],
  ];
  it.each(cases)(
    "minimum %s, maximum %s: every integer from -300 to 300 exactly when in range",
    async (lo, hi) => {
      const schema: Record<string, unknown> = { type: "integer" };
      if (lo !== undefined) schema.minimum = lo;
      if (hi !== undefined) schema.maximum = hi;
      const accepts = await accepter(schema);
      const wrong: number[] = [];
      for (let i = -300; i <= 300; i++) {
        if (accepts(String(i)) !== ((lo === undefined || i >= lo) && (hi === undefined || i <= hi)))
          wrong.push(i);
      }
      expect(wrong).toEqual([]);
      for (const text of ["01", "1.0", "1e2", "+1", " 1", ""]) expect(accepts(text), text).toBe(false);
    },
  );

  it("exclusive and fractional bounds become the inclusive integer bounds", async () => {
    const accepts = await accepter({ type: "integer", exclusiveMinimum: 2, maximum: 7.5 });
    expect([2, 3, 7, 8].map((i) => accepts(String(i)))).toEqual([false, true, true, false]);
  });

  it("an unbounded side keeps up to 15 digits (float64 is exact there)", async () => {
    const accepts = await accepter({ type: "integer", minimum: 0 });
    expect(accepts("9".repeat(15))).toBe(true);
    expect(accepts("1".repeat(16))).toBe(false);
  });
});

describe("number ranges", () => {
  const texts = [
    "0",
    "0.5",
    "1",
    "1.0",
    "2.5",
    "3",
    "3.0",
    "3.01",
    "-0.5",
    "-1",
    "-1.5",
    "-2",
    "-2.0",
    "-2.1",
    "10",
    "9.99",
    "-10.5",
    "0.0",
  ];
  const schemas: Record<string, unknown>[] = [
    { minimum: -2, maximum: 3 },
    { exclusiveMinimum: -2, exclusiveMaximum: 3 },
    { minimum: 0 },
    { exclusiveMaximum: 0 },
    { exclusiveMinimum: 1, maximum: 10 },
    { exclusiveMinimum: 0, exclusiveMaximum: 1 },
    {},
  ];
  it.each(schemas)("with integer bounds %o accepts exactly the numbers in range", async (bounds) => {
    const accepts = await accepter({ type: "number", ...bounds });
    const b = bounds as Record<string, number | undefined>;
    for (const text of texts) {
      const v = Number(text);
      const inRange =
        (b.minimum === undefined || v >= b.minimum) &&
        (b.maximum === undefined || v <= b.maximum) &&
        (b.exclusiveMinimum === undefined || v > b.exclusiveMinimum) &&
        (b.exclusiveMaximum === undefined || v < b.exclusiveMaximum);
      expect(accepts(text), text).toBe(inRange);
    }
    expect(accepts("1e3")).toBe(false);
  });

  it("rounds a fractional bound outwards: a superset the gateway's validation narrows", async () => {
    const accepts = await accepter({ type: "number", minimum: 0.5, maximum: 2.5 });
    expect(["0", "0.4", "0.5", "2.5", "2.9", "3"].map(accepts)).toEqual([true, true, true, true, true, true]);
    expect(["-0.1", "3.1"].map(accepts)).toEqual([false, false]);
  });
});

describe("strings, objects and arrays", () => {
  it("strings count characters (escapes are one), with JSON's escapes and no raw control characters", async () => {
    const accepts = await accepter({ type: "string", minLength: 2, maxLength: 4 });
    const yes = ['"ab"', '"a\\"b"', '"a\\nbc"', '"é€"', '"\\u0001x"', '"a\\/"', '"😀😀"'];
    const no = ['"a"', '"abcde"', '"a\nb"', '"\\x41b"', '"\\u0041b"', '"\\ud800x"', "ab", '"ab" '];
    for (const t of yes) expect(accepts(t), t).toBe(true);
    for (const t of no) expect(accepts(t), t).toBe(false);
  });

  it("properties come in schema order, each optional one present or not, nothing else", async () => {
    const accepts = await accepter({
      type: "object",
      properties: { a: { type: "boolean" }, 'q"k': { type: "string", maxLength: 3 }, c: { type: "null" } },
      required: ['q"k'],
    });
    const yes = [
      '{"q\\"k":"x"}',
      '{"a":true,"q\\"k":""}',
      '{"a":true,"q\\"k":"","c":null}',
      '{"q\\"k":"abc","c":null}',
    ];
    const no = [
      '{"q\\"k":"abcd"}',
      '{"c":null,"q\\"k":""}',
      "{}",
      '{"a":true}',
      '{ "q\\"k":""}',
      '{"q\\"k":"","d":1}',
    ];
    for (const t of yes) expect(accepts(t), t).toBe(true);
    for (const t of no) expect(accepts(t), t).toBe(false);
    const none = await accepter({
      type: "object",
      properties: { a: { type: "boolean" }, c: { type: "null" } },
    });
    expect(["{}", '{"a":false}', '{"c":null}', '{"a":false,"c":null}'].map(none)).toEqual([
      true,
      true,
      true,
      true,
    ]);
    expect(none('{,"c":null}')).toBe(false);
  });

  it("arrays hold minItems..maxItems items; prefixItems are positions; items false ends the tuple", async () => {
    const list = await accepter({ type: "array", items: { enum: ["x", 1, null] }, minItems: 1, maxItems: 3 });
    expect(["[]", '["x"]', '["x",1,null]', '["x",1,null,1]', "[2]"].map(list)).toEqual([
      false,
      true,
      true,
      false,
      false,
    ]);
    const tuple = await accepter({
      type: "array",
      prefixItems: [{ type: "boolean" }, { const: "k" }],
      items: false,
    });
    expect(["[]", "[true]", '[true,"k"]', '[true,"k",1]', '["k"]'].map(tuple)).toEqual([
      true,
      true,
      true,
      false,
      false,
    ]);
  });

  it("anyOf is the union of its branches, $ref follows $defs, allOf merges its members", async () => {
    const union = await accepter({
      anyOf: [
        { type: "string", maxLength: 2 },
        { type: "integer", minimum: 1, maximum: 3 },
      ],
    });
    expect(['"ab"', "2", "4", '"abc"'].map(union)).toEqual([true, true, false, false]);
    const ref = await accepter({
      $defs: { b: { type: "boolean" } },
      type: "array",
      items: { $ref: "#/$defs/b" },
    });
    expect(["[true,false]", "[1]"].map(ref)).toEqual([true, false]);
    const all = await accepter({
      allOf: [
        { type: "object", properties: { a: { type: "integer", minimum: 0, maximum: 5 } }, required: ["a"] },
        { properties: { b: { type: "boolean" } }, required: ["b"] },
      ],
    });
    expect(['{"a":1,"b":true}', '{"a":1}', '{"b":true}', '{"a":6,"b":true}'].map(all)).toEqual([
      true,
      false,
      false,
      false,
    ]);
  });

  it('"json" is any compact JSON value: no whitespace, no exponent, no lone surrogate', async () => {
    const accepts = await accepter("json", 2000);
    for (const t of ["{}", "[]", "null", "-0.5", '"x\\u0001"', '{"a":[1,2,{"b":null}]}', '[true,"x",{}]']) {
      expect(accepts(t), t).toBe(true);
    }
    for (const t of ["[1, 2]", " 1", "1e5", '"\\ud800"', "nul", "{1:2}"]) expect(accepts(t), t).toBe(false);
  });

  it("within the budget the longest text the grammar allows fits (every unbounded part is bounded)", async () => {
    for (const maxBytes of [16, 50, 120, 1000]) {
      const accepts = await accepter(
        { type: "object", properties: { s: { type: "string" } }, required: ["s"] },
        maxBytes,
      );
      let chars = 0;
      while (accepts(`{"s":"${"a".repeat(chars + 1)}"}`)) chars++;
      // The worst case for a string is its longest run of 6-byte escapes (\u001f): it still fits.
      const worst = `{"s":"${"\\u001f".repeat(chars)}"}`;
      expect(accepts(worst)).toBe(true);
      expect(Buffer.byteLength(worst)).toBeLessThanOrEqual(maxBytes);
      // Budgets are quantized (3 significant bits), so a bound is at most ~25 % below the exact one.
      expect(chars).toBeGreaterThanOrEqual(Math.floor((0.75 * (maxBytes - 8)) / 6));
    }
  });
});

describe("budget helpers", () => {
  it("quantize keeps three significant bits and never rounds up", () => {
    expect([1, 7, 8, 9, 15, 16, 17, 100, 1000].map(quantize)).toEqual([1, 7, 8, 8, 14, 16, 16, 96, 896]);
  });

  it("allocate water-fills: minimums first, no slot beyond its maximum, the rest evenly", () => {
    expect(
      allocate(100, [
        { min: 5, max: 5, weight: 1 },
        { min: 2, max: Infinity, weight: 1 },
      ]),
    ).toEqual([5, 95]);
    expect(
      allocate(10, [
        { min: 8, max: 9, weight: 1 },
        { min: 8, max: 9, weight: 1 },
      ]),
    ).toEqual([8, 8]);
    expect(
      allocate(30, [
        { min: 0, max: Infinity, weight: 2 },
        { min: 0, max: Infinity, weight: 1 },
      ]),
    ).toEqual([10, 10]);
  });
});

// ---- the property test ----

type Json = Record<string, unknown>;
const names = fc.constantFrom("a", "b", "id", "x y", 'q"t', "é", "n\\m");
const scalar = fc.oneof(
  fc.boolean(),
  fc.constant(null),
  fc.integer({ min: -99, max: 999 }),
  fc.string({ maxLength: 4 }),
  fc.double({ min: -5, max: 5, noNaN: true, noDefaultInfinity: true }),
);
const bounds = fc.tuple(fc.integer({ min: -60, max: 60 }), fc.integer({ min: 0, max: 80 }));

const leaf: fc.Arbitrary<Json> = fc.oneof(
  fc.constant({ type: "boolean" }),
  fc.constant({ type: "null" }),
  fc.record(
    {
      type: fc.constant("string"),
      minLength: fc.integer({ min: 0, max: 3 }),
      maxLength: fc.integer({ min: 3, max: 12 }),
    },
    { requiredKeys: ["type"] },
  ),
  bounds.chain(([lo, span]) =>
    fc.constantFrom<Json>(
      { type: "integer", minimum: lo, maximum: lo + span },
      { type: "integer", minimum: lo },
      { type: "integer", maximum: lo },
      { type: "integer", exclusiveMinimum: lo, exclusiveMaximum: lo + span + 2 },
      { type: "number", minimum: lo, maximum: lo + span },
      { type: "number", exclusiveMinimum: lo, exclusiveMaximum: lo + span + 1 },
      // A fractional bound is rounded outwards (a superset the gateway narrows): not in this property.
    ),
  ),
  fc
    .uniqueArray(scalar, { minLength: 1, maxLength: 4, selector: (v) => JSON.stringify(v) })
    .map((values) => ({ enum: values })),
  scalar.map((value) => ({ const: value })),
  fc.constant({ $ref: "#/$defs/shared" }),
);

const schemaArb = fc.letrec<{ node: Json }>((tie) => ({
  node: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    leaf,
    fc
      .uniqueArray(fc.tuple(names, tie("node"), fc.boolean()), {
        minLength: 1,
        maxLength: 4,
        selector: ([n]) => n,
      })
      .chain((props) =>
        fc.boolean().map((closed) => ({
          type: "object",
          properties: Object.fromEntries(props.map(([n, s]) => [n, s])),
          required: props.filter(([, , r]) => r).map(([n]) => n),
          ...(closed ? { additionalProperties: false } : {}),
        })),
      ),
    fc.record(
      {
        type: fc.constant("array"),
        items: tie("node"),
        minItems: fc.integer({ min: 0, max: 2 }),
        maxItems: fc.integer({ min: 2, max: 4 }),
      },
      { requiredKeys: ["type", "items"] },
    ),
    fc
      .tuple(fc.array(tie("node"), { minLength: 1, maxLength: 3 }), fc.boolean())
      .map(([prefixItems, closed]) => ({
        type: "array",
        prefixItems,
        ...(closed ? { items: false } : {}),
      })),
    fc.array(tie("node"), { minLength: 1, maxLength: 3 }).map((anyOf) => ({ anyOf })),
    // oneOf's "exactly one" is the gateway's to check (the grammar treats it as anyOf): disjoint branches here.
    fc.constantFrom<Json>(
      {
        oneOf: [
          { type: "string", maxLength: 3 },
          { type: "integer", minimum: 0, maximum: 50 },
        ],
      },
      {
        oneOf: [
          { type: "boolean" },
          { type: "null" },
          { type: "array", items: { type: "boolean" }, maxItems: 2 },
        ],
      },
    ),
    fc.constantFrom<Json>(
      { type: ["string", "null"], maxLength: 5 },
      { type: ["integer", "boolean"], minimum: 0, maximum: 9 },
    ),
  ),
}));

const rootArb = fc
  .tuple(
    schemaArb.node,
    leaf.filter((s) => s.$ref === undefined),
  )
  .map(([schema, shared]) => ({ ...schema, $defs: { shared } }));

describe("random schemas from the supported set", () => {
  it("every answer the demo model writes under the grammar parses and validates", async () => {
    await fc.assert(
      fc.asyncProperty(rootArb, fc.integer({ min: 1, max: 2 ** 31 - 1 }), async (schema, seed) => {
        const validator = new Validator(schema as never, "2020-12", false);
        for (let k = 0; k < 3; k++) {
          const generation = engine.generate(
            {
              model: "demo",
              prompt: "JSON:",
              params: { maxTokens: 256, temperature: 1, seed: seed + k },
              format: schema,
            },
            new AbortController().signal,
          );
          let text = "";
          for await (const piece of generation) text += piece.text;
          const { finishReason } = await generation.result;
          expect(finishReason, text).toBe("stop");
          const result = validator.validate(JSON.parse(text));
          expect(
            result.errors.map((e) => e.error),
            `${JSON.stringify(schema)}\n${text}`,
          ).toEqual([]);
        }
      }),
      { numRuns: 60 },
    );
  }, 240_000);
});
