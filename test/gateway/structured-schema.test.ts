// The schema check and the output validator (gateway/structured/schema-check.ts, output.ts), inside
// workerd as the gateway runs them: every supported keyword accepted and enforced, every other one
// refused with its path, the limits, $refs (local resolved, remote refused, cycles refused), and
// what the openai SDK's zodResponseFormat emits for typical zod schemas accepted as it is.
import { zodResponseFormat } from "openai/helpers/zod";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { GatewayError } from "../../gateway/errors.ts";
import { compactSchema, schemaInstruction } from "../../gateway/structured/feedback.ts";
import { jsonText, judgeOutput } from "../../gateway/structured/output.ts";
import { checkSchema, MAX_ISSUES } from "../../gateway/structured/schema-check.ts";
import { SchemaLimits, SUPPORTED_SCHEMA_KEYWORDS } from "../../schema/structured.ts";

function refused(schema: unknown, param = "schema"): GatewayError {
  try {
    checkSchema(schema, param);
  } catch (err) {
    expect(err).toBeInstanceOf(GatewayError);
    return err as GatewayError;
  }
  throw new Error(`accepted: ${JSON.stringify(schema).slice(0, 200)}`);
}

/** For each supported keyword: a schema using it, a value it accepts and one it refuses (null: annotation). */
const KEYWORDS: Record<string, [Record<string, unknown>, unknown, unknown]> = {
  type: [{ type: ["string", "null"] }, null, 3],
  properties: [{ properties: { a: { type: "string" } } }, { a: "x" }, { a: 1 }],
  required: [{ required: ["a"] }, { a: 1 }, {}],
  additionalProperties: [{ properties: { a: {} }, additionalProperties: false }, { a: 1 }, { a: 1, b: 2 }],
  items: [{ items: { type: "integer" } }, [1, 2], [1, 2.5]],
  prefixItems: [{ prefixItems: [{ type: "string" }, { type: "number" }] }, ["a", 1], [1, "a"]],
  additionalItems: [{ items: [{ type: "string" }], additionalItems: false }, ["a"], ["a", "b"]],
  minItems: [{ minItems: 2 }, [1, 2], [1]],
  maxItems: [{ maxItems: 1 }, [1], [1, 2]],
  uniqueItems: [{ uniqueItems: true }, [1, 2], [1, 1]],
  enum: [{ enum: ["red", "green"] }, "red", "blue"],
  const: [{ const: { k: 1 } }, { k: 1 }, { k: 2 }],
  anyOf: [{ anyOf: [{ type: "string" }, { type: "integer" }] }, 3, 3.5],
  oneOf: [{ oneOf: [{ type: "integer" }, { type: "number" }] }, 3.5, 3],
  allOf: [{ allOf: [{ minimum: 1 }, { maximum: 3 }] }, 2, 4],
  minLength: [{ minLength: 2 }, "ab", "a"],
  maxLength: [{ maxLength: 2 }, "ab", "abc"],
  pattern: [{ pattern: "^[a-z]+$" }, "abc", "ABC"],
  format: [{ format: "email" }, "a@example.com", "not an address"],
  minimum: [{ minimum: 1 }, 1, 0],
  maximum: [{ maximum: 1 }, 1, 2],
  exclusiveMinimum: [{ exclusiveMinimum: 1 }, 2, 1],
  exclusiveMaximum: [{ exclusiveMaximum: 1 }, 0, 1],
  multipleOf: [{ multipleOf: 0.5 }, 1.5, 1.2],
  minProperties: [{ minProperties: 1 }, { a: 1 }, {}],
  maxProperties: [{ maxProperties: 1 }, { a: 1 }, { a: 1, b: 2 }],
  propertyNames: [{ propertyNames: { pattern: "^[a-z]+$" } }, { ab: 1 }, { AB: 1 }],
  $ref: [{ $defs: { s: { type: "string" } }, $ref: "#/$defs/s" }, "x", 1],
  $defs: [
    { $defs: { n: { type: "number" } }, properties: { a: { $ref: "#/$defs/n" } } },
    { a: 1 },
    { a: "x" },
  ],
  definitions: [{ definitions: { n: { type: "number" } }, items: { $ref: "#/definitions/n" } }, [1], ["x"]],
};
const ANNOTATIONS: Record<string, unknown> = {
  $schema: "https://json-schema.org/draft/2020-12/schema",
  $comment: "why",
  title: "Thing",
  description: "a thing",
  default: { a: 1 },
  examples: [{ a: 1 }],
  deprecated: false,
  readOnly: true,
  writeOnly: false,
};

describe("checkSchema: the allow-list", () => {
  it("covers every supported keyword in these tables", () => {
    expect(new Set([...Object.keys(KEYWORDS), ...Object.keys(ANNOTATIONS)])).toEqual(
      new Set(SUPPORTED_SCHEMA_KEYWORDS),
    );
  });

  it.each(Object.entries(KEYWORDS))("%s is accepted and enforced", (_keyword, [schema, good, bad]) => {
    const checked = checkSchema(schema, "schema");
    expect(checked.validate(good)).toEqual([]);
    const issues = checked.validate(bad);
    expect(issues.length).toBeGreaterThan(0);
    for (const issue of issues) {
      expect(issue.path === "" || issue.path.startsWith("/")).toBe(true);
      expect(issue.message.length).toBeGreaterThan(0);
    }
  });

  it.each(Object.entries(ANNOTATIONS))("%s is accepted and constrains nothing", (keyword, value) => {
    const checked = checkSchema({ type: "object", [keyword]: value }, "schema");
    expect(checked.validate({ b: 2 })).toEqual([]);
    expect(checked.validate("x").map((i) => i.keyword)).toEqual(["type"]);
  });

  it.each([
    "not",
    "if",
    "then",
    "else",
    "patternProperties",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contains",
    "minContains",
    "maxContains",
    "$id",
    "$anchor",
    "$dynamicRef",
    "$recursiveRef",
    "nullable",
    "contentEncoding",
    "x-anything",
  ])("%s is refused with its path", (keyword) => {
    const err = refused(
      { type: "object", properties: { a: { type: "object", [keyword]: {} } } },
      "response_format.json_schema.schema",
    );
    expect(err.code).toBe("UNSUPPORTED_SCHEMA_KEYWORD");
    expect(err.param).toBe(`response_format.json_schema.schema.properties.a.${keyword}`);
    expect(err.message).toContain(JSON.stringify(keyword));
  });

  it("paths run through lists, maps and definitions", () => {
    expect(refused({ anyOf: [{ type: "string" }, { items: { not: {} } }] }).param).toBe(
      "schema.anyOf.1.items.not",
    );
    expect(refused({ $defs: { p: { properties: { q: { if: {} } } } } }).param).toBe(
      "schema.$defs.p.properties.q.if",
    );
    expect(refused({ items: [{ type: "string" }, { else: {} }] }).param).toBe("schema.items.1.else");
  });

  it("a format outside date-time, date, time, email, uuid is refused; those five are validated", () => {
    const err = refused({ properties: { h: { type: "string", format: "hostname" } } });
    expect([err.code, err.param]).toEqual(["UNSUPPORTED_SCHEMA_KEYWORD", "schema.properties.h.format"]);
    const cases: [string, string, string][] = [
      ["date-time", "2026-12-02T10:00:00Z", "2026-12-02 10:00"],
      ["date", "2026-12-02", "2026-13-02"],
      ["time", "10:00:00Z", "25:00:00Z"],
      ["email", "a@example.com", "a@"],
      ["uuid", "3f1c5f3e-2b6a-4d8e-9c7f-1a2b3c4d5e6f", "3f1c5f3e"],
    ];
    for (const [format, good, bad] of cases) {
      const checked = checkSchema({ type: "string", format }, "schema");
      expect(checked.validate(good), format).toEqual([]);
      expect(
        checked.validate(bad).map((i) => i.keyword),
        format,
      ).toEqual(["format"]);
    }
  });

  it("$schema: draft 2020-12 and draft-07 only", () => {
    checkSchema({ $schema: "http://json-schema.org/draft-07/schema#", type: "string" }, "schema");
    const err = refused({ $schema: "http://json-schema.org/draft-04/schema#", type: "string" });
    expect([err.code, err.param]).toEqual(["UNSUPPORTED_SCHEMA_KEYWORD", "schema.$schema"]);
  });
});

describe("checkSchema: malformed schemas", () => {
  it.each([
    [{ type: "banana" }, "schema.type"],
    [{ type: [] }, "schema.type"],
    [{ type: ["string", "string"] }, "schema.type"],
    [{ required: "a" }, "schema.required"],
    [{ enum: [] }, "schema.enum"],
    [{ minLength: -1 }, "schema.minLength"],
    [{ maxItems: 1.5 }, "schema.maxItems"],
    [{ minimum: "1" }, "schema.minimum"],
    [{ exclusiveMinimum: true }, "schema.exclusiveMinimum"],
    [{ multipleOf: 0 }, "schema.multipleOf"],
    [{ uniqueItems: "yes" }, "schema.uniqueItems"],
    [{ pattern: "([a-z]" }, "schema.pattern"],
    [{ properties: [] }, "schema.properties"],
    [{ properties: { a: 3 } }, "schema.properties.a"],
    [{ anyOf: [] }, "schema.anyOf"],
    [{ anyOf: {} }, "schema.anyOf"],
    [{ items: "string" }, "schema.items"],
    [{ title: 3 }, "schema.title"],
    [{ $ref: 3 }, "schema.$ref"],
  ])("%j is INVALID_SCHEMA at %s", (schema, param) => {
    const err = refused(schema);
    expect([err.code, err.param]).toEqual(["INVALID_SCHEMA", param]);
  });

  it.each([[null], ["string"], [[{ type: "string" }]], [true]])("%j is no schema object", (schema) => {
    expect(refused(schema).code).toBe("INVALID_SCHEMA");
  });

  it("boolean subschemas are schemas", () => {
    const checked = checkSchema({ properties: { a: true, b: false } }, "schema");
    expect(checked.validate({ a: 1 })).toEqual([]);
    expect(checked.validate({ b: 1 }).length).toBeGreaterThan(0);
  });
});

describe("checkSchema: $ref", () => {
  it.each(["https://schemas.example.com/person.json", "person.json", "//evil.example/x", "urn:uuid:1234"])(
    "%s is a remote ref, refused",
    (ref) => {
      const err = refused({ properties: { p: { $ref: ref } } });
      expect([err.code, err.param]).toEqual(["SCHEMA_REMOTE_REF", "schema.properties.p.$ref"]);
    },
  );

  it("a local ref that resolves to nothing, or into anything but the definitions, is INVALID_SCHEMA", () => {
    for (const ref of ["#/$defs/missing", "#/definitions/a/b", "#/properties/a", "#anchor"]) {
      const err = refused({
        definitions: { a: { type: "string" } },
        properties: { a: {} },
        items: { $ref: ref },
      });
      expect([err.code, err.param], ref).toEqual(["INVALID_SCHEMA", "schema.items.$ref"]);
    }
  });

  it("# (the root) resolves: a recursive tree validates at any depth", () => {
    const tree = checkSchema(
      {
        type: "object",
        properties: { name: { type: "string" }, children: { type: "array", items: { $ref: "#" } } },
        required: ["name", "children"],
      },
      "schema",
    );
    expect(tree.validate({ name: "a", children: [{ name: "b", children: [] }] })).toEqual([]);
    const issues = tree.validate({
      name: "a",
      children: [{ name: "b", children: [{ name: 3, children: [] }] }],
    });
    expect(issues).toEqual([
      expect.objectContaining({ path: "/children/0/children/0/name", keyword: "type" }),
    ]);
  });

  it("escaped pointer tokens resolve (~1 for /, ~0 for ~, percent-encoding)", () => {
    const checked = checkSchema(
      {
        $defs: { "a/b": { type: "string" }, "c~d": { type: "number" }, "e f": { type: "null" } },
        properties: {
          x: { $ref: "#/$defs/a~1b" },
          y: { $ref: "#/$defs/c~0d" },
          z: { $ref: "#/$defs/e%20f" },
        },
      },
      "schema",
    );
    expect(checked.validate({ x: "s", y: 1, z: null })).toEqual([]);
    expect(checked.validate({ x: 1 }).map((i) => i.path)).toEqual(["/x"]);
  });

  it("a cycle of refs that reads no input is refused (the validator would recurse forever)", () => {
    expect(
      refused({
        $defs: { a: { $ref: "#/$defs/b" }, b: { anyOf: [{ $ref: "#/$defs/a" }] } },
        $ref: "#/$defs/a",
      }).code,
    ).toBe("INVALID_SCHEMA");
    expect(refused({ allOf: [{ $ref: "#" }] }).code).toBe("INVALID_SCHEMA");
  });
});

describe("checkSchema: limits", () => {
  const nested = (depth: number) => {
    let schema: Record<string, unknown> = { type: "string" };
    for (let i = 1; i < depth; i++) schema = { type: "array", items: schema };
    return schema;
  };

  it(`depth ${SchemaLimits.maxDepth} is accepted, one more is SCHEMA_TOO_LARGE at the subschema too deep`, () => {
    checkSchema(nested(SchemaLimits.maxDepth), "schema");
    const err = refused(nested(SchemaLimits.maxDepth + 1));
    expect(err.code).toBe("SCHEMA_TOO_LARGE");
    expect(err.param).toBe(`schema${".items".repeat(SchemaLimits.maxDepth)}`);
  });

  it(`${SchemaLimits.maxSubschemas} subschemas are accepted, one more is SCHEMA_TOO_LARGE`, () => {
    const properties = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`p${i}`, {}]));
    checkSchema({ properties: properties(SchemaLimits.maxSubschemas - 1) }, "schema");
    expect(refused({ properties: properties(SchemaLimits.maxSubschemas) }).code).toBe("SCHEMA_TOO_LARGE");
  });

  it(`over ${SchemaLimits.maxBytes} bytes serialized is SCHEMA_TOO_LARGE`, () => {
    const err = refused({ type: "string", description: "é".repeat(SchemaLimits.maxBytes / 2) });
    expect([err.code, err.param]).toEqual(["SCHEMA_TOO_LARGE", "schema"]);
    checkSchema({ type: "string", description: "x".repeat(SchemaLimits.maxBytes - 100) }, "schema");
  });
});

describe("the openai SDK's zodResponseFormat output is accepted as it is", () => {
  const Node: z.ZodType<{ name: string; children: unknown[] }> = z.object({
    name: z.string(),
    get children() {
      return z.array(Node);
    },
  });
  const Address = z.object({ city: z.string() }).meta({ id: "Address" });
  const schemas: [string, z.ZodType, unknown, unknown][] = [
    [
      "object",
      z.object({ a: z.string(), b: z.number().int().min(0).max(10), c: z.boolean() }),
      { a: "x", b: 3, c: true },
      { a: "x", b: 11, c: true },
    ],
    [
      "nested arrays",
      z.object({ items: z.array(z.object({ id: z.uuid(), tags: z.array(z.string()).min(1).max(3) })) }),
      { items: [{ id: "3f1c5f3e-2b6a-4d8e-9c7f-1a2b3c4d5e6f", tags: ["a"] }] },
      { items: [{ id: "3f1c5f3e-2b6a-4d8e-9c7f-1a2b3c4d5e6f", tags: [] }] },
    ],
    [
      "enums, literals, bounds",
      z.object({
        color: z.enum(["red", "green"]),
        lit: z.literal("x"),
        n: z.number().gt(0).lt(1).multipleOf(0.1),
      }),
      { color: "red", lit: "x", n: 0.3 },
      { color: "blue", lit: "x", n: 0.3 },
    ],
    [
      "unions, nullable, string formats",
      z.object({
        v: z.union([z.string(), z.number()]),
        w: z.string().nullable(),
        e: z.email(),
        d: z.iso.datetime(),
        dd: z.iso.date(),
        t: z.iso.time(),
      }),
      { v: 1, w: null, e: "a@example.com", d: "2026-12-02T10:00:00Z", dd: "2026-12-02", t: "10:00:00" },
      { v: true, w: null, e: "a@example.com", d: "2026-12-02T10:00:00Z", dd: "2026-12-02", t: "10:00:00" },
    ],
    ["tuple", z.object({ t: z.tuple([z.string(), z.number()]) }), { t: ["a", 1] }, { t: ["a", 1, 2] }],
    ["record", z.object({ r: z.record(z.string(), z.number()) }), { r: { a: 1 } }, { r: { a: "x" } }],
    [
      "descriptions, defaults, regex",
      z.object({
        a: z.string().describe("the a").default("q"),
        s: z
          .string()
          .regex(/^[a-z]+$/)
          .min(2)
          .max(5),
      }),
      { a: "z", s: "abc" },
      { a: "z", s: "ABC" },
    ],
    [
      "recursive (a $ref to #)",
      Node,
      { name: "a", children: [{ name: "b", children: [] }] },
      { name: "a", children: [{ name: 1, children: [] }] },
    ],
    [
      "discriminated union",
      z.object({
        x: z.discriminatedUnion("k", [
          z.object({ k: z.literal("a"), a: z.string() }),
          z.object({ k: z.literal("b") }),
        ]),
      }),
      { x: { k: "b" } },
      { x: { k: "c" } },
    ],
    [
      "shared definitions",
      z.object({ home: Address, work: Address }),
      { home: { city: "a" }, work: { city: "b" } },
      { home: { city: "a" }, work: {} },
    ],
  ];

  it.each(schemas)("%s", (name, zodSchema, good, bad) => {
    const schema = zodResponseFormat(zodSchema, name.replaceAll(/[^a-z]/g, "_")).json_schema.schema as Record<
      string,
      unknown
    >;
    const checked = checkSchema(schema, "response_format.json_schema.schema");
    expect(checked.validate(good)).toEqual([]);
    expect(checked.validate(bad).length).toBeGreaterThan(0);
    expect(checked.schema).toBe(schema);
    // Compiling leaves the caller's schema as it was (the validator annotates its own copy).
    expect(JSON.parse(JSON.stringify(schema))).toEqual(schema);
  });
});

describe("outputs against a checked schema", () => {
  const person = checkSchema(
    {
      type: "object",
      properties: { name: { type: "string" }, age: { type: "integer", minimum: 0 } },
      required: ["name", "age"],
      additionalProperties: false,
    },
    "schema",
  );

  it("valid JSON that matches is the value", () => {
    expect(judgeOutput(' {"name":"a","age":3}\n', "stop", person)).toEqual({
      valid: true,
      data: { name: "a", age: 3 },
    });
  });

  it("a Markdown fence around the JSON is taken off", () => {
    expect(jsonText('```json\n{"a":1}\n```')).toBe('{"a":1}');
    expect(jsonText("```\n[1]\n```")).toBe("[1]");
    expect(judgeOutput('```json\n{"name":"a","age":3}\n```', "stop", person).valid).toBe(true);
  });

  it("text that is not JSON is one issue at the root, saying whether max_tokens cut it", () => {
    expect(judgeOutput("not json at all", "stop", person)).toEqual({
      valid: false,
      issues: [{ path: "", message: "the output is not valid JSON", keyword: "json" }],
    });
    const cut = judgeOutput('{"name":"a', "length", person);
    expect(cut.valid === false && cut.issues[0]?.message).toContain("cut off at max_tokens");
    const empty = judgeOutput("  ", "stop", person);
    expect(empty.valid === false && empty.issues[0]?.message).toBe("the output is empty");
  });

  it("every issue is a leaf with its path, the wrappers' own errors left out", () => {
    const verdict = judgeOutput('{"name":1,"age":-1,"x":true}', "stop", person);
    expect(verdict.valid).toBe(false);
    if (verdict.valid) return;
    expect(verdict.issues.map((i) => [i.path, i.keyword])).toEqual([
      ["/name", "type"],
      ["/age", "minimum"],
      ["", "additionalProperties"],
    ]);
  });

  it(`at most ${MAX_ISSUES} issues are reported`, () => {
    const ints = checkSchema({ type: "array", items: { type: "integer" } }, "schema");
    expect(ints.validate(Array.from({ length: 50 }, () => "x"))).toHaveLength(MAX_ISSUES);
  });
});

describe("the instruction the first attempt carries", () => {
  it("is the schema in one line without $schema, $comment and examples keywords", () => {
    const schema = {
      $schema: "http://json-schema.org/draft-07/schema#",
      $comment: "internal",
      type: "object",
      properties: { examples: { type: "string", examples: ["a"] } },
      examples: [{}],
    };
    expect(compactSchema(schema)).toBe('{"type":"object","properties":{"examples":{"type":"string"}}}');
    expect(schemaInstruction({ type: "integer" })).toBe(
      'Answer with a JSON value only, matching this JSON Schema: {"type":"integer"}',
    );
  });
});
