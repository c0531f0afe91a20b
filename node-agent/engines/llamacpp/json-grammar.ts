// A JSON Schema (or "json": any JSON value) as a GBNF grammar for llama.cpp, so a model can only
// write compact JSON the schema accepts. Written here because node-llama-cpp's own converter
// (createGrammarForJsonSchema, utils/gbnfJson) has no anyOf, no optional properties and no numeric
// bounds, and llama.cpp's json_schema_to_grammar is C++ this build does not expose. The integer
// range rule is a port of llama.cpp's build_min_max_int (common/json-schema-to-grammar.cpp).
//
// What the grammar enforces: type (or a list), properties in schema order with required and
// optional ones, additionalProperties (false/absent: only the listed properties; a schema with no
// listed properties: a map), items / prefixItems / additionalItems, minItems / maxItems, enum and
// const, anyOf / oneOf (oneOf as anyOf), allOf by merging its members, local $ref / $defs
// (recursion through named rules), minLength / maxLength, integers and numbers with their bounds
// (exact where the bounds are integers; a number bound that is not is rounded outwards). What it
// cannot express (pattern, format, multipleOf, uniqueItems, propertyNames, min/maxProperties,
// oneOf's exclusivity) is left to the gateway, which validates every output.
//
// It must finish: the output is compact (no free whitespace), and every value the schema leaves
// unbounded gets a bound from the budget (see `jsonGrammar`), so that the largest text the grammar
// allows fits in the budget whenever the schema's smallest value does.

import { ANNOTATION_KEYWORDS } from "../../../schema/structured.ts";

/** A schema the grammar cannot be built for (unsatisfiable, a broken $ref): the request is invalid. */
export class SchemaGrammarError extends Error {
  readonly code = "INVALID_SCHEMA_GRAMMAR";
  constructor(message: string) {
    super(message);
    this.name = "SchemaGrammarError";
  }
}

export interface JsonGrammarOptions {
  /**
   * The most bytes the output may take: the tokens the generation may produce (a token is at least
   * one byte; llama.cpp's grammar sampler never lets an empty piece through).
   */
  maxBytes: number;
}

/** Digits of an integer part, and of a fraction, where the schema sets no bound: float64 is exact to 15. */
const MAX_DIGITS = 15;
/** Bytes one character of a JSON string can take: `\u001f`. A raw character takes at most 4. */
const BYTES_PER_CHAR = 6;
/** Items (or map entries) a grammar allows where the schema sets no maxItems: llama.cpp expands repetitions. */
const MAX_REPEAT = 256;
/** An unbounded array or map gets this share of its budget per item, so it can hold several. */
const ITEM_SHARE = 4;
/** Nesting depth of the grammar's construction: beyond it the schema is refused, never a stack overflow. */
const MAX_DEPTH = 200;

type Schema = Record<string, unknown> | boolean;

/** What a (sub)schema allows, after resolving $ref, allOf and anyOf siblings. */
type Shape =
  | { kind: "never" }
  | { kind: "any" }
  | { kind: "alt"; branches: Schema[] }
  | { kind: "literals"; texts: string[] }
  | { kind: "typed"; types: TypeName[]; schema: Record<string, unknown> };

type TypeName = "object" | "array" | "string" | "integer" | "number" | "boolean" | "null";
const TYPE_NAMES: readonly TypeName[] = ["object", "array", "string", "integer", "number", "boolean", "null"];

interface Out {
  /** A GBNF expression: a rule name or a short inline expression. */
  expr: string;
  /** Bytes of the shortest and the longest text it allows. */
  min: number;
  max: number;
}

/**
 * The GBNF grammar (root rule `root`) for `format`. Throws SchemaGrammarError.
 *
 * The budget rule: `maxBytes` is the tokens the generation may produce (min(max_tokens, the context
 * left); the engine quantizes it down to 3 significant bits), and a text's worst case counts every
 * byte as a token. A string character takes at most 6 bytes (`\u001f`), a number at most
 * 1 + 15 + 1 + 15. An object splits what its keys and punctuation leave among its properties by
 * water-filling (each gets at least its shortest value, at most its longest); an unbounded string
 * gets floor((budget - 2) / 6) characters; an array or map without maxItems gets as many items as
 * fit at a quarter of its budget each (at most 256); optional properties and anyOf branches whose
 * shortest value does not fit are left out. Numbers with no bound give up fraction digits first.
 */
export function jsonGrammar(format: "json" | Record<string, unknown>, options: JsonGrammarOptions): string {
  const builder = new GrammarBuilder(format === "json" ? true : format);
  const root = builder.root(Math.max(1, Math.floor(options.maxBytes)));
  return builder.text(root);
}

/** A string as a GBNF literal. JSON text has no raw control characters, so `\` and `"` are all to escape. */
export function gbnfLiteral(text: string): string {
  return `"${text
    .replace(/[\\"]/g, (c) => `\\${c}`)
    .replace(/\n/g, "\\n")
    .replace(/\r/g, "\\r")}"`;
}

const utf8Bytes = (text: string) => Buffer.byteLength(text, "utf8");

/** The budgets a rule is made for: 3 significant bits, so a recursive schema makes few rules. */
export function quantize(budget: number): number {
  if (budget < 8) return budget;
  const shift = Math.floor(Math.log2(budget)) - 2;
  return Math.floor(budget / 2 ** shift) * 2 ** shift;
}

class GrammarBuilder {
  private readonly rules = new Map<string, string>();
  private readonly memo = new Map<object, Map<number | "full", Out | null | "pending">>();
  private readonly shapes = new Map<object, Shape>();
  private readonly minimums = new Map<object, number>();
  private readonly maximums = new Map<object, number>();
  private readonly names = new Map<object, string>();
  private counter = 0;
  private depth = 0;
  private readonly any: Record<string, unknown> = {};
  private readonly never: Record<string, unknown> = { not: {} };

  constructor(private readonly rootSchema: Schema) {
    this.minimums.set(this.any, 1);
    this.maximums.set(this.any, Number.POSITIVE_INFINITY);
    this.names.set(this.any, "any");
  }

  root(budget: number): Out {
    const root = this.node(this.rootSchema);
    this.solveMinimums(root);
    if (this.min(root) === Number.POSITIVE_INFINITY) {
      throw new SchemaGrammarError("no JSON value satisfies the schema");
    }
    const out = this.gen(root, budget);
    if (!out) throw new SchemaGrammarError("no JSON value satisfies the schema");
    return out;
  }

  text(root: Out): string {
    const lines = [`root ::= ${root.expr}`];
    for (const [name, body] of this.rules) lines.push(`${name} ::= ${body}`);
    return `${lines.join("\n")}\n`;
  }

  // ---- schema nodes ----

  /** The object a subschema is known by (booleans are shared objects), for memoizing. */
  private node(schema: unknown): Record<string, unknown> {
    if (schema === true) return this.any;
    if (schema === false) return this.never;
    if (typeof schema !== "object" || schema === null || Array.isArray(schema)) {
      throw new SchemaGrammarError("a subschema is not an object or a boolean");
    }
    return schema as Record<string, unknown>;
  }

  private resolveRef(ref: unknown): Record<string, unknown> {
    if (typeof ref !== "string" || !ref.startsWith("#")) {
      throw new SchemaGrammarError(`$ref ${JSON.stringify(ref)} is not a local reference`);
    }
    if (ref === "#") return this.node(this.rootSchema);
    if (!ref.startsWith("#/"))
      throw new SchemaGrammarError(`$ref ${JSON.stringify(ref)} is not a JSON pointer`);
    let at: unknown = this.rootSchema;
    for (const raw of ref.slice(2).split("/")) {
      const key = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~");
      if (typeof at !== "object" || at === null || !(key in at)) {
        throw new SchemaGrammarError(`$ref ${JSON.stringify(ref)} points at nothing`);
      }
      at = (at as Record<string, unknown>)[key];
    }
    return this.node(at);
  }

  private shape(node: Record<string, unknown>): Shape {
    let shape = this.shapes.get(node);
    if (!shape) {
      shape = this.computeShape(node);
      this.shapes.set(node, shape);
    }
    return shape;
  }

  private computeShape(node: Record<string, unknown>): Shape {
    if (node === this.never) return { kind: "never" };
    if (node.$ref !== undefined) return { kind: "alt", branches: [this.resolveRef(node.$ref)] };
    if (Array.isArray(node.allOf) && node.allOf.length > 0) {
      const { allOf, ...rest } = node;
      let merged: Record<string, unknown> = rest;
      for (const member of allOf) merged = mergeSchemas(merged, this.flatten(this.node(member)));
      return { kind: "alt", branches: [merged] };
    }
    const branches = Array.isArray(node.anyOf)
      ? node.anyOf
      : Array.isArray(node.oneOf)
        ? node.oneOf
        : undefined;
    if (branches) {
      const { anyOf: _a, oneOf: _o, ...siblings } = node;
      const constrained = Object.keys(siblings).some((k) => !ANNOTATIONS.has(k));
      return {
        kind: "alt",
        branches: branches.map((b) => {
          const branch = this.node(b);
          return constrained ? mergeSchemas(siblings, this.flatten(branch)) : branch;
        }),
      };
    }
    const types = typesOf(node);
    if (node.const !== undefined || Array.isArray(node.enum)) {
      const values = node.const !== undefined ? [node.const] : (node.enum as unknown[]);
      const texts = [
        ...new Set(values.filter((v) => types.includes(jsonType(v))).map((v) => JSON.stringify(v))),
      ];
      return texts.length === 0 ? { kind: "never" } : { kind: "literals", texts };
    }
    if (types.length === TYPE_NAMES.length && !Object.keys(node).some((k) => TYPED_KEYWORDS.has(k))) {
      return { kind: "any" };
    }
    return { kind: "typed", types, schema: node };
  }

  /** A $ref's target (or a single allOf member) in place of the reference, for merging. */
  private flatten(node: Record<string, unknown>): Record<string, unknown> {
    for (let hops = 0; node.$ref !== undefined && hops < 32; hops++) node = this.resolveRef(node.$ref);
    return node;
  }

  /** Every subschema the grammar may use, as (child, bytes around it) edges, for the size analyses. */
  private children(node: Record<string, unknown>): Record<string, unknown>[] {
    const shape = this.shape(node);
    if (shape.kind === "alt") return shape.branches.map((b) => this.node(b));
    if (shape.kind !== "typed") return [];
    const s = shape.schema;
    const out: Record<string, unknown>[] = [];
    if (shape.types.includes("object")) {
      for (const [, child] of propertiesOf(s)) out.push(this.node(child));
      const extra = s.additionalProperties;
      if (extra !== undefined && extra !== false) out.push(this.node(extra));
    }
    if (shape.types.includes("array")) {
      const { prefix, tail } = arrayParts(s);
      for (const p of prefix) out.push(this.node(p));
      if (tail !== false) out.push(this.node(tail));
    }
    return out;
  }

  // ---- sizes: the shortest value (a least fixed point over the schema graph) and the longest ----

  private solveMinimums(root: Record<string, unknown>): void {
    const all: Record<string, unknown>[] = [];
    const seen = new Set<object>([root]);
    for (let i = 0, queue = [root]; i < queue.length; i++) {
      const node = queue[i] as Record<string, unknown>;
      all.push(node);
      for (const child of this.children(node)) {
        if (!seen.has(child)) {
          seen.add(child);
          queue.push(child);
        }
      }
      if (all.length > 10_000)
        throw new SchemaGrammarError("the schema has too many subschemas for a grammar");
    }
    for (let round = 0, changed = true; changed && round <= all.length + 1; round++) {
      changed = false;
      for (const node of all) {
        const next = this.minOf(node);
        if (next < (this.minimums.get(node) ?? Number.POSITIVE_INFINITY)) {
          this.minimums.set(node, next);
          changed = true;
        }
      }
    }
  }

  private min(node: Record<string, unknown>): number {
    return this.minimums.get(node) ?? Number.POSITIVE_INFINITY;
  }

  /** The shortest value's bytes from the children's current estimates. */
  private minOf(node: Record<string, unknown>): number {
    const shape = this.shape(node);
    switch (shape.kind) {
      case "never":
        return Number.POSITIVE_INFINITY;
      case "any":
        return 1;
      case "literals":
        return Math.min(...shape.texts.map(utf8Bytes));
      case "alt":
        return Math.min(...shape.branches.map((b) => this.min(this.node(b))));
      case "typed":
        return Math.min(...shape.types.map((t) => this.typedMin(t, shape.schema)));
    }
  }

  private typedMin(type: TypeName, s: Record<string, unknown>): number {
    switch (type) {
      case "null":
        return 4;
      case "boolean":
        return 4;
      case "string":
        return 2 + (nonNegativeInt(s.minLength) ?? 0);
      case "integer": {
        const range = integerRange(s);
        return range ? integerShape(range, MAX_DIGITS).min : Number.POSITIVE_INFINITY;
      }
      case "number": {
        const shape = numberShape(s, Number.POSITIVE_INFINITY);
        return shape ? shape.min : Number.POSITIVE_INFINITY;
      }
      case "object": {
        let size = 2;
        let count = 0;
        for (const [name, child, required] of propertiesOf(s)) {
          if (!required) continue;
          size += utf8Bytes(JSON.stringify(name)) + 1 + this.min(this.node(child));
          count++;
        }
        return size + Math.max(0, count - 1);
      }
      case "array": {
        const { prefix, tail, minItems } = arrayParts(s);
        let size = 2 + Math.max(0, minItems - 1);
        for (let i = 0; i < minItems; i++) {
          const item = i < prefix.length ? prefix[i] : tail;
          size += item === false ? Number.POSITIVE_INFINITY : this.min(this.node(item));
        }
        return size;
      }
    }
  }

  /** The longest value's bytes with no budget (infinite on a cycle or an unbounded part). */
  private max(node: Record<string, unknown>, stack = new Set<object>()): number {
    const known = this.maximums.get(node);
    if (known !== undefined) return known;
    if (stack.has(node)) return Number.POSITIVE_INFINITY;
    stack.add(node);
    const value = this.maxOf(node, stack);
    stack.delete(node);
    this.maximums.set(node, value);
    return value;
  }

  private maxOf(node: Record<string, unknown>, stack: Set<object>): number {
    const shape = this.shape(node);
    const sub = (child: unknown) => {
      const n = this.node(child);
      return this.min(n) === Number.POSITIVE_INFINITY ? 0 : this.max(n, stack);
    };
    switch (shape.kind) {
      case "never":
        return 0;
      case "any":
        return Number.POSITIVE_INFINITY;
      case "literals":
        return Math.max(...shape.texts.map(utf8Bytes));
      case "alt":
        return Math.max(...shape.branches.map(sub));
      case "typed": {
        const s = shape.schema;
        let most = 0;
        for (const type of shape.types) {
          let size: number;
          switch (type) {
            case "null":
              size = 4;
              break;
            case "boolean":
              size = 5;
              break;
            case "string": {
              const maxLength = nonNegativeInt(s.maxLength);
              size = maxLength === undefined ? Number.POSITIVE_INFINITY : 2 + BYTES_PER_CHAR * maxLength;
              break;
            }
            case "integer": {
              const range = integerRange(s);
              size = range ? integerShape(range, MAX_DIGITS).max : 0;
              break;
            }
            case "number":
              size = numberShape(s, Number.POSITIVE_INFINITY)?.max ?? 0;
              break;
            case "object": {
              const props = propertiesOf(s).filter(
                ([, c]) => this.min(this.node(c)) < Number.POSITIVE_INFINITY,
              );
              if (isMap(s)) size = Number.POSITIVE_INFINITY;
              else {
                size = 2 + Math.max(0, props.length - 1);
                for (const [name, child] of props) size += utf8Bytes(JSON.stringify(name)) + 1 + sub(child);
              }
              break;
            }
            case "array": {
              const { prefix, tail, maxItems } = arrayParts(s);
              const count = tail === false ? Math.min(prefix.length, maxItems) : maxItems;
              if (count === Number.POSITIVE_INFINITY) size = Number.POSITIVE_INFINITY;
              else {
                size = 2 + Math.max(0, count - 1);
                for (let i = 0; i < count; i++) size += sub(i < prefix.length ? prefix[i] : tail);
              }
              break;
            }
          }
          most = Math.max(most, size);
        }
        return most;
      }
    }
  }

  // ---- generation ----

  private rule(node: object | undefined, hint: string, body: string): string {
    const base = node ? this.names.get(node) : undefined;
    const name = `r${++this.counter}-${(base ?? hint).replace(/[^A-Za-z0-9-]+/g, "-").slice(0, 24)}`;
    this.rules.set(name, body);
    return name;
  }

  /** The node's values within `budget` bytes if it can, else its shortest ones; null if it has none. */
  private gen(node: Record<string, unknown>, budget: number): Out | null {
    const min = this.min(node);
    if (min === Number.POSITIVE_INFINITY) return null;
    const max = this.max(node);
    const key: number | "full" = max <= budget ? "full" : Math.max(quantize(budget), min);
    let byBudget = this.memo.get(node);
    if (!byBudget) {
      byBudget = new Map();
      this.memo.set(node, byBudget);
    }
    const known = byBudget.get(key);
    // A rule that reaches itself without writing a byte (`a: anyOf [a, ...]`) adds nothing: drop it.
    if (known === "pending") return null;
    if (known !== undefined) return known;
    if (++this.depth > MAX_DEPTH) throw new SchemaGrammarError("the schema nests too deeply for a grammar");
    byBudget.set(key, "pending");
    try {
      const out = this.genShape(node, key === "full" ? max : key);
      byBudget.set(key, out);
      return out;
    } finally {
      this.depth--;
    }
  }

  private genShape(node: Record<string, unknown>, budget: number): Out | null {
    const shape = this.shape(node);
    switch (shape.kind) {
      case "never":
        return null;
      case "any":
        return this.anyValue(budget);
      case "literals": {
        const texts = shape.texts.filter((t) => utf8Bytes(t) <= budget);
        const kept = texts.length > 0 ? texts : shape.texts.filter((t) => utf8Bytes(t) === this.min(node));
        return this.alternatives(
          node,
          "enum",
          kept.map((t) => ({ expr: gbnfLiteral(t), min: utf8Bytes(t), max: utf8Bytes(t) })),
        );
      }
      case "alt": {
        const branches = shape.branches.map((b) => this.node(b));
        const fitting = branches.filter((b) => this.min(b) <= budget);
        const chosen = fitting.length > 0 ? fitting : branches.filter((b) => this.min(b) === this.min(node));
        const outs = chosen.map((b) => this.gen(b, budget)).filter((o): o is Out => o !== null);
        return this.alternatives(node, "alt", outs);
      }
      case "typed": {
        const s = shape.schema;
        const outs: Out[] = [];
        const fitting = shape.types.filter((t) => this.typedMin(t, s) <= budget);
        const types = fitting.length > 0 ? fitting : shape.types;
        for (const type of types) {
          const out = this.genType(node, type, s, budget);
          if (out) outs.push(out);
        }
        return this.alternatives(node, "typed", outs);
      }
    }
  }

  private alternatives(node: object, hint: string, outs: Out[]): Out | null {
    if (outs.length === 0) return null;
    if (outs.length === 1) return outs[0] as Out;
    return {
      expr: this.rule(node, hint, outs.map((o) => o.expr).join(" | ")),
      min: Math.min(...outs.map((o) => o.min)),
      max: Math.max(...outs.map((o) => o.max)),
    };
  }

  private genType(node: object, type: TypeName, s: Record<string, unknown>, budget: number): Out | null {
    switch (type) {
      case "null":
        return { expr: '"null"', min: 4, max: 4 };
      case "boolean":
        return { expr: '("true" | "false")', min: 4, max: 5 };
      case "string":
        return this.string(nonNegativeInt(s.minLength) ?? 0, nonNegativeInt(s.maxLength), budget);
      case "integer": {
        const range = integerRange(s);
        if (!range) return null;
        const shape = integerShape(range, digitsFor(budget, range));
        return { expr: `(${shape.expr})`, min: shape.min, max: shape.max };
      }
      case "number": {
        const shape = numberShape(s, budget);
        return shape ? { expr: `(${shape.expr})`, min: shape.min, max: shape.max } : null;
      }
      case "object":
        return isMap(s)
          ? this.map(node, this.node(s.additionalProperties ?? true), budget)
          : this.object(node, s, budget);
      case "array":
        return this.array(node, s, budget);
    }
  }

  private charRule(): string {
    const name = "char";
    if (!this.rules.has(name)) {
      // One character of a JSON string: a code point as it is, or an escape; \u only for what has to be escaped.
      this.rules.set(
        name,
        '[^"\\\\\\x00-\\x1F\\x7F] | "\\\\" (["\\\\/bfnrt] | "u00" [01] [0-9a-fA-F] | "u007" [fF])',
      );
    }
    return name;
  }

  private string(minLength: number, maxLength: number | undefined, budget: number): Out {
    const fit = Math.floor((budget - 2) / BYTES_PER_CHAR);
    const most = Math.max(minLength, Math.min(maxLength ?? Number.POSITIVE_INFINITY, fit));
    const char = this.charRule();
    return {
      expr: `"\\"" ${repeat(char, minLength, most)} "\\""`,
      min: 2 + minLength,
      max: 2 + BYTES_PER_CHAR * most,
    };
  }

  private object(node: object, s: Record<string, unknown>, budget: number): Out | null {
    let props = propertiesOf(s).map(([name, child, required]) => ({
      key: JSON.stringify(name),
      child: this.node(child),
      required,
    }));
    if (props.some((p) => p.required && this.min(p.child) === Number.POSITIVE_INFINITY)) return null;
    props = props.filter((p) => this.min(p.child) < Number.POSITIVE_INFINITY);
    const overhead = (list: typeof props) =>
      2 + Math.max(0, list.length - 1) + list.reduce((n, p) => n + utf8Bytes(p.key) + 1, 0);
    const floor = (list: typeof props) => overhead(list) + list.reduce((n, p) => n + this.min(p.child), 0);
    // Optional properties that do not fit go, last first.
    while (floor(props) > budget && props.some((p) => !p.required)) {
      const last = props.map((p) => p.required).lastIndexOf(false);
      props = props.filter((_, i) => i !== last);
    }
    const budgets = allocate(
      budget - overhead(props),
      props.map((p) => ({ min: this.min(p.child), max: this.max(p.child), weight: 1 })),
    );
    const kvs = props.map((p, i) => {
      const value = this.gen(p.child, budgets[i] as number) as Out;
      const label = p.key.slice(1, -1);
      const key = gbnfLiteral(`${p.key}:`);
      return {
        required: p.required,
        size: utf8Bytes(p.key) + 1,
        value,
        expr: this.rule(undefined, `kv-${label}`, `${key} ${value.expr}`),
      };
    });
    // after[i]: properties i.. once one was written (each with its comma); start[i]: none written yet.
    const after: string[] = [];
    let next = "";
    for (let i = kvs.length - 1; i >= 0; i--) {
      const kv = kvs[i] as (typeof kvs)[number];
      const body = `${kv.required ? `"," ${kv.expr}` : `("," ${kv.expr})?`}${next ? ` ${next}` : ""}`;
      next = i === kvs.length - 1 ? body : this.rule(undefined, "obj-after", body);
      after[i] = next;
    }
    let start = "";
    for (let i = kvs.length - 1; i >= 0; i--) {
      const kv = kvs[i] as (typeof kvs)[number];
      const rest = after[i + 1] ?? "";
      const written = `${kv.expr}${rest ? ` ${rest}` : ""}`;
      if (kv.required) start = written;
      else if (start === "") start = `(${written})?`;
      else start = this.rule(undefined, "obj-start", `${written} | ${start}`);
    }
    let min = 2;
    let required = 0;
    let max = overhead(props);
    for (const kv of kvs) {
      max += kv.value.max;
      if (kv.required) {
        min += kv.size + kv.value.min;
        required++;
      }
    }
    min += Math.max(0, required - 1);
    return { expr: this.rule(node, "object", `"{" ${start ? `${start} ` : ""}"}"`), min, max };
  }

  /** An object of any keys (strings) whose values are `value`, with as many entries as fit. */
  private map(node: object, value: Record<string, unknown>, budget: number): Out {
    const entryMin = 2 + 1 + this.min(value);
    if (this.min(value) === Number.POSITIVE_INFINITY || budget < 2 + entryMin) {
      return { expr: '"{}"', min: 2, max: 2 };
    }
    const target = Math.max(entryMin, Math.floor(budget / ITEM_SHARE));
    const count = Math.max(1, Math.min(MAX_REPEAT, Math.floor((budget - 1) / (target + 1))));
    const perEntry = Math.floor((budget - 1) / count) - 1;
    const [keyBudget, valueBudget] = allocate(perEntry - 1, [
      { min: 2, max: Number.POSITIVE_INFINITY, weight: 1 },
      { min: this.min(value), max: this.max(value), weight: 1 },
    ]) as [number, number];
    const key = this.string(0, undefined, keyBudget);
    const val = this.gen(value, valueBudget) as Out;
    const entry = this.rule(undefined, "entry", `${key.expr} ":" ${val.expr}`);
    const entryMax = key.max + 1 + val.max;
    return {
      expr: this.rule(node, "map", `"{" (${entry} ${repeat(`("," ${entry})`, 0, count - 1)})? "}"`),
      min: 2,
      max: 2 + count * entryMax + (count - 1),
    };
  }

  private array(node: object, s: Record<string, unknown>, budget: number): Out | null {
    const parts = arrayParts(s);
    const prefix = parts.prefix.map((p) => this.node(p));
    const tail = parts.tail === false ? undefined : this.node(parts.tail);
    // Positions that can hold nothing end the array there.
    let limit = tail && this.min(tail) < Number.POSITIVE_INFINITY ? parts.maxItems : prefix.length;
    const blocked = prefix.findIndex((p) => this.min(p) === Number.POSITIVE_INFINITY);
    if (blocked >= 0) limit = Math.min(limit, blocked);
    limit = Math.min(limit, parts.maxItems);
    const minItems = parts.minItems;
    if (minItems > limit) return null;
    const at = (i: number) => (i < prefix.length ? prefix[i] : tail) as Record<string, unknown>;
    const floorOf = (count: number) => {
      let size = 2 + Math.max(0, count - 1);
      for (let i = 0; i < count; i++) size += this.min(at(i));
      return size;
    };
    // How many items: all the schema allows if that fits, else as many as fit at a fair size each.
    let count: number;
    if (limit === Number.POSITIVE_INFINITY) {
      const itemMin = tail ? this.min(tail) : 1;
      const itemMax = tail ? this.max(tail) : 1;
      const target = Math.min(itemMax, Math.max(itemMin, Math.floor(budget / ITEM_SHARE)));
      let spent = 2;
      count = 0;
      for (; count < prefix.length && spent <= budget; count++) spent += this.min(at(count)) + 1;
      count += Math.max(0, Math.floor((budget - spent + 1) / (target + 1)));
      count = Math.min(MAX_REPEAT, Math.max(minItems, count));
    } else count = limit;
    while (count > minItems && floorOf(count) > budget) count--;
    if (count === 0) return { expr: this.rule(node, "array", '"[" "]"'), min: 2, max: 2 };
    const tailCount = Math.max(0, count - prefix.length);
    const slots = [
      ...prefix.slice(0, count).map((p) => ({ min: this.min(p), max: this.max(p), weight: 1 })),
      ...(tail && tailCount > 0 ? [{ min: this.min(tail), max: this.max(tail), weight: tailCount }] : []),
    ];
    const budgets = allocate(budget - 2 - (count - 1), slots);
    const items = prefix.slice(0, count).map((p, i) => this.gen(p, budgets[i] as number) as Out);
    const tailOut =
      tail && tailCount > 0 ? (this.gen(tail, budgets[items.length] as number) as Out) : undefined;
    // Items from position i on, once one was written.
    const from = (i: number): string => {
      if (i >= count) return "";
      if (i >= prefix.length && tailOut) {
        const required = Math.max(0, minItems - i);
        return repeat(`("," ${tailOut.expr})`, required, count - i);
      }
      const item = `"," ${(items[i] as Out).expr}`;
      const rest = from(i + 1);
      const body = rest ? `${item} ${rest}` : item;
      return i < minItems ? body : `(${body})?`;
    };
    const first = (prefix.length > 0 ? items[0] : tailOut) as Out;
    const rest = from(1);
    const body = rest ? `${first.expr} ${rest}` : first.expr;
    const expr = `"[" ${minItems >= 1 ? body : `(${body})?`} "]"`;
    let min = 2 + Math.max(0, minItems - 1);
    let max = 2 + (count - 1);
    for (let i = 0; i < count; i++) {
      const out = i < items.length ? (items[i] as Out) : (tailOut as Out);
      max += out.max;
      if (i < minItems) min += out.min;
    }
    return { expr: this.rule(node, "array", expr), min, max };
  }

  /** Any JSON value within the budget: scalars, and arrays and maps of smaller values (so the rules end). */
  private anyValue(budget: number): Out | null {
    const outs: Out[] = [];
    const number = numberShape({}, budget);
    if (number) outs.push({ expr: `(${number.expr})`, min: number.min, max: number.max });
    if (budget >= 4) outs.push({ expr: '("null" | "true" | "false")', min: 4, max: 5 });
    if (budget >= 2) {
      outs.push(this.string(0, undefined, budget));
      const array = this.array(this.any, { type: "array" }, budget);
      if (array) outs.push(array);
      outs.push(this.map(this.any, this.any, budget));
    }
    return this.alternatives(this.any, "any", outs);
  }
}

// ---- schema reading ----

/** Keywords beside anyOf/oneOf that constrain nothing, so the branches need no merging. */
const ANNOTATIONS = new Set<string>([...ANNOTATION_KEYWORDS, "$id", "$defs", "definitions"]);

/** Keywords that make a schema with no `type` more than "any value". */
const TYPED_KEYWORDS = new Set([
  "properties",
  "required",
  "additionalProperties",
  "items",
  "prefixItems",
  "minItems",
  "maxItems",
  "minLength",
  "maxLength",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
]);

/** The types a schema allows: its `type`, else what its keywords imply, else all. */
function typesOf(s: Record<string, unknown>): TypeName[] {
  const declared = typeof s.type === "string" ? [s.type] : Array.isArray(s.type) ? s.type : undefined;
  if (declared) {
    const types = TYPE_NAMES.filter((t) => declared.includes(t));
    // "number" includes the integers; the grammar writes them as numbers.
    return types.includes("number") ? types.filter((t) => t !== "integer") : types;
  }
  const implied: TypeName[] = [];
  if (["properties", "required", "additionalProperties"].some((k) => k in s)) implied.push("object");
  if (["items", "prefixItems", "minItems", "maxItems"].some((k) => k in s)) implied.push("array");
  if (["minLength", "maxLength"].some((k) => k in s)) implied.push("string");
  if (["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"].some((k) => k in s))
    implied.push("number");
  return implied.length > 0 ? implied : [...TYPE_NAMES];
}

function jsonType(value: unknown): TypeName {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value as TypeName;
}

/** [name, subschema, required] in the schema's order (required names it does not list come last, as any value). */
function propertiesOf(s: Record<string, unknown>): [string, unknown, boolean][] {
  const props = (typeof s.properties === "object" && s.properties !== null ? s.properties : {}) as Record<
    string,
    unknown
  >;
  const required = new Set(Array.isArray(s.required) ? s.required.filter((r) => typeof r === "string") : []);
  const out: [string, unknown, boolean][] = Object.entries(props).map(([name, child]) => [
    name,
    child,
    required.has(name),
  ]);
  for (const name of required) {
    if (!(name in props))
      out.push([name, s.additionalProperties === undefined ? true : s.additionalProperties, true]);
  }
  return out;
}

/** An object schema that lists no properties but allows others: its entries are free. */
function isMap(s: Record<string, unknown>): boolean {
  const extra = s.additionalProperties;
  return propertiesOf(s).length === 0 && extra !== undefined && extra !== false;
}

function arrayParts(s: Record<string, unknown>): {
  prefix: unknown[];
  tail: unknown;
  minItems: number;
  maxItems: number;
} {
  let prefix: unknown[] = [];
  let tail: unknown = true;
  if (Array.isArray(s.prefixItems)) {
    prefix = s.prefixItems;
    tail = s.items === undefined ? true : s.items;
  } else if (Array.isArray(s.items)) {
    prefix = s.items; // draft-07's tuple form
    tail = s.additionalItems === undefined ? true : s.additionalItems;
  } else if (s.items !== undefined) tail = s.items;
  return {
    prefix,
    tail,
    minItems: nonNegativeInt(s.minItems) ?? 0,
    maxItems: nonNegativeInt(s.maxItems) ?? Number.POSITIVE_INFINITY,
  };
}

function nonNegativeInt(value: unknown): number | undefined {
  return typeof value === "number" && Number.isFinite(value) && value >= 0 ? Math.floor(value) : undefined;
}

const finite = (value: unknown): value is number => typeof value === "number" && Number.isFinite(value);

/**
 * Two schemas as one (allOf, or anyOf's siblings): their keywords together, properties merged (both
 * apply), required united, the tighter bounds. An approximation of the intersection; the gateway
 * validates the rest.
 */
function mergeSchemas(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a, ...b };
  if (typeof a.properties === "object" && typeof b.properties === "object") {
    out.properties = { ...(a.properties as object), ...(b.properties as object) };
  }
  if (Array.isArray(a.required) || Array.isArray(b.required)) {
    out.required = [...new Set([...((a.required as unknown[]) ?? []), ...((b.required as unknown[]) ?? [])])];
  }
  for (const k of ["minimum", "exclusiveMinimum", "minLength", "minItems"] as const) {
    if (finite(a[k]) && finite(b[k])) out[k] = Math.max(a[k], b[k]);
  }
  for (const k of ["maximum", "exclusiveMaximum", "maxLength", "maxItems"] as const) {
    if (finite(a[k]) && finite(b[k])) out[k] = Math.min(a[k], b[k]);
  }
  if (a.type !== undefined && b.type !== undefined) {
    const ta = typesOf(a);
    const tb = typesOf(b);
    const both = ta.filter((t) => tb.includes(t) || (t === "integer" && tb.includes("number")));
    for (const t of tb) if (t === "integer" && ta.includes("number") && !both.includes(t)) both.push(t);
    out.type = both;
  }
  return out;
}

// ---- numbers ----

interface IntRange {
  /** Inclusive; undefined: unbounded. */
  lo: number | undefined;
  hi: number | undefined;
}

/** An integer schema's inclusive bounds, or null when no integer fits. */
function integerRange(s: Record<string, unknown>): IntRange | null {
  let lo: number | undefined;
  let hi: number | undefined;
  if (finite(s.minimum)) lo = Math.ceil(s.minimum);
  if (finite(s.exclusiveMinimum)) lo = Math.max(lo ?? -Infinity, Math.floor(s.exclusiveMinimum) + 1);
  if (finite(s.maximum)) hi = Math.floor(s.maximum);
  if (finite(s.exclusiveMaximum)) hi = Math.min(hi ?? Infinity, Math.ceil(s.exclusiveMaximum) - 1);
  if (lo !== undefined && hi !== undefined && lo > hi) return null;
  return { lo, hi };
}

const digitCount = (n: number) => String(Math.abs(n)).length;

/** Digits an unbounded side may use within the budget (never fewer than a bound has). */
function digitsFor(budget: number, range: IntRange): number {
  // An unbounded side needs one digit more than the bound's (llama.cpp's rule writes bound+1 digits).
  const needed =
    Math.max(
      range.lo === undefined ? 1 : digitCount(range.lo),
      range.hi === undefined ? 1 : digitCount(range.hi),
    ) + 1;
  let digits = MAX_DIGITS;
  while (digits > needed && integerShape(range, digits).max > budget) digits--;
  return Math.max(needed, digits);
}

/** An integer range as GBNF, with unbounded sides limited to `digits` digits. */
function integerShape(range: IntRange, digits: number): { expr: string; min: number; max: number } {
  const { lo, hi } = range;
  const out: string[] = [];
  if (lo === undefined && hi === undefined) out.push(`"-"? ([0] | [1-9] ${moreDigits(0, digits - 1)})`);
  else buildMinMaxInt(lo ?? Number.NEGATIVE_INFINITY, hi ?? Number.POSITIVE_INFINITY, out, digits, true);
  const expr = out.join("");
  const size = (n: number) => String(n).length;
  let min: number;
  if ((lo ?? -1) <= 0 && (hi ?? 1) >= 0) min = 1;
  else if (lo !== undefined && lo > 0) min = size(lo);
  else min = size(hi as number);
  const max = Math.max(
    lo === undefined ? 1 + digits : size(lo),
    hi === undefined ? digits : size(hi),
    lo !== undefined && lo < 0 && hi === undefined ? digits : 0,
  );
  return { expr, min, max };
}

function moreDigits(min: number, max: number): string {
  if (max <= 0 && min <= 0) return "";
  if (min === 1 && max === 1) return "[0-9]";
  if (min === max) return `[0-9]{${min}}`;
  return `[0-9]{${min},${max === Number.POSITIVE_INFINITY ? "" : max}}`;
}

/** llama.cpp's build_min_max_int, with the same recursion and the same digit limits. */
function buildMinMaxInt(
  min: number,
  max: number,
  out: string[],
  decimalsLeft: number,
  topLevel: boolean,
): void {
  const hasMin = min !== Number.NEGATIVE_INFINITY;
  const hasMax = max !== Number.POSITIVE_INFINITY;
  const digitRange = (from: string, to: string) => out.push(from === to ? `[${from}]` : `[${from}-${to}]`);
  const more = (lo: number, hi: number) => {
    out.push("[0-9]");
    if (lo === hi && lo === 1) return;
    out.push(`{${lo}`);
    if (hi !== lo) out.push(`,${hi === Number.POSITIVE_INFINITY ? "" : hi}`);
    out.push("}");
  };
  const chr = (c: string, d: number) => String.fromCharCode(c.charCodeAt(0) + d);
  const uniformRange = (from: string, to: string): void => {
    let i = 0;
    while (i < from.length && i < to.length && from[i] === to[i]) i++;
    if (i > 0) out.push(`"${from.slice(0, i)}"`);
    if (i < from.length && i < to.length) {
      if (i > 0) out.push(" ");
      const subLen = from.length - i - 1;
      const fi = from[i] as string;
      const ti = to[i] as string;
      if (subLen > 0) {
        const fromSub = from.slice(i + 1);
        const toSub = to.slice(i + 1);
        const zeros = "0".repeat(subLen);
        const nines = "9".repeat(subLen);
        let toReached = false;
        out.push("(");
        if (fromSub === zeros) {
          digitRange(fi, chr(ti, -1));
          out.push(" ");
          more(subLen, subLen);
        } else {
          out.push(`[${fi}] `);
          out.push("(");
          uniformRange(fromSub, nines);
          out.push(")");
          if (fi < chr(ti, -1)) {
            out.push(" | ");
            if (toSub === nines) {
              digitRange(chr(fi, 1), ti);
              toReached = true;
            } else digitRange(chr(fi, 1), chr(ti, -1));
            out.push(" ");
            more(subLen, subLen);
          }
        }
        if (!toReached) {
          out.push(" | ");
          digitRange(ti, ti);
          out.push(" ");
          uniformRange(zeros, toSub);
        }
        out.push(")");
      } else out.push(`[${fi}-${ti}]`);
    }
  };

  if (hasMin && hasMax) {
    if (min < 0 && max < 0) {
      out.push('"-" (');
      buildMinMaxInt(-max, -min, out, decimalsLeft, true);
      out.push(")");
      return;
    }
    if (min < 0) {
      out.push('"-" (');
      buildMinMaxInt(0, -min, out, decimalsLeft, true);
      out.push(") | ");
      min = 0;
    }
    let minS = String(min);
    const maxS = String(max);
    for (let digits = minS.length; digits < maxS.length; digits++) {
      uniformRange(minS, "9".repeat(digits));
      minS = `1${"0".repeat(digits)}`;
      out.push(" | ");
    }
    uniformRange(minS, maxS);
    return;
  }
  const lessDecimals = Math.max(decimalsLeft - 1, 1);
  if (hasMin) {
    if (min < 0) {
      out.push('"-" (');
      buildMinMaxInt(Number.NEGATIVE_INFINITY, -min, out, decimalsLeft, false);
      out.push(") | [0] | [1-9] ");
      more(0, decimalsLeft - 1);
    } else if (min === 0) {
      if (topLevel) {
        out.push("[0] | [1-9] ");
        more(0, lessDecimals);
      } else more(1, decimalsLeft);
    } else if (min <= 9) {
      const c = String(min);
      const rangeStart = topLevel ? "1" : "0";
      if (c > rangeStart) {
        digitRange(rangeStart, chr(c, -1));
        out.push(" ");
        more(1, lessDecimals);
        out.push(" | ");
      }
      digitRange(c, "9");
      out.push(" ");
      more(0, lessDecimals);
    } else {
      const minS = String(min);
      const len = minS.length;
      const c = minS[0] as string;
      if (c > "1") {
        digitRange(topLevel ? "1" : "0", chr(c, -1));
        out.push(" ");
        more(len, lessDecimals);
        out.push(" | ");
      }
      digitRange(c, c);
      out.push(" (");
      buildMinMaxInt(Number(minS.slice(1)), Number.POSITIVE_INFINITY, out, lessDecimals, false);
      out.push(")");
      if (c < "9") {
        out.push(" | ");
        digitRange(chr(c, 1), "9");
        out.push(" ");
        more(len - 1, lessDecimals);
      }
    }
    return;
  }
  if (hasMax) {
    if (max >= 0) {
      if (topLevel) {
        out.push('"-" [1-9] ');
        more(0, lessDecimals);
        out.push(" | ");
      }
      buildMinMaxInt(0, max, out, decimalsLeft, true);
    } else {
      out.push('"-" (');
      buildMinMaxInt(-max, Number.POSITIVE_INFINITY, out, decimalsLeft, false);
      out.push(")");
    }
    return;
  }
  throw new Error("buildMinMaxInt needs a bound");
}

interface Bound {
  at: number;
  exclusive: boolean;
}

/**
 * A number schema as GBNF: an optional minus, an integer part, an optional fraction, no exponent.
 * Integer bounds are exact (inclusive or exclusive); others are rounded outwards. Null: no number fits.
 */
function numberShape(
  s: Record<string, unknown>,
  budget: number,
): { expr: string; min: number; max: number } | null {
  const lower = numberBound(s.minimum, s.exclusiveMinimum, "lower");
  const upper = numberBound(s.maximum, s.exclusiveMaximum, "upper");
  if (
    lower &&
    upper &&
    (lower.at > upper.at || (lower.at === upper.at && (lower.exclusive || upper.exclusive)))
  ) {
    return null;
  }
  // Fraction digits first give way to the budget, then an unbounded integer part's.
  let fraction = MAX_DIGITS;
  let digits = MAX_DIGITS;
  for (;;) {
    const shape = numberGrammar(lower, upper, digits, fraction);
    if (shape.max <= budget || (fraction <= 1 && digits <= 1)) return shape;
    if (fraction > 1) fraction = Math.max(1, fraction - (shape.max - budget));
    else digits = Math.max(1, digits - (shape.max - budget));
  }
}

function numberBound(inclusive: unknown, exclusive: unknown, side: "lower" | "upper"): Bound | undefined {
  const round = side === "lower" ? Math.floor : Math.ceil;
  const bounds: Bound[] = [];
  if (finite(inclusive)) bounds.push({ at: round(inclusive), exclusive: false });
  if (finite(exclusive)) bounds.push({ at: round(exclusive), exclusive: Number.isInteger(exclusive) });
  if (bounds.length === 0) return undefined;
  // The tighter of the two.
  return bounds.reduce((a, b) => {
    if (a.at === b.at) return a.exclusive ? a : b;
    return (side === "lower" ? a.at > b.at : a.at < b.at) ? a : b;
  });
}

function numberGrammar(
  lower: Bound | undefined,
  upper: Bound | undefined,
  digits: number,
  fraction: number,
): { expr: string; min: number; max: number } {
  const parts: { expr: string; min: number; max: number }[] = [];
  const positive = upper === undefined || upper.at > 0 || (upper.at === 0 && !upper.exclusive);
  if (positive) {
    const lo: Bound = lower === undefined || lower.at < 0 ? { at: 0, exclusive: false } : lower;
    parts.push(magnitude(lo, upper, digits, fraction));
  }
  const negative = lower === undefined || lower.at < 0;
  if (negative) {
    const lo: Bound =
      upper === undefined || upper.at > 0
        ? { at: 0, exclusive: false }
        : { at: -upper.at, exclusive: upper.exclusive };
    const hi = lower === undefined ? undefined : { at: -lower.at, exclusive: lower.exclusive };
    const m = magnitude(lo, hi, digits, fraction);
    parts.push({ expr: `"-" (${m.expr})`, min: m.min + 1, max: m.max + 1 });
  }
  return {
    expr: parts.map((p) => p.expr).join(" | "),
    min: Math.min(...parts.map((p) => p.min)),
    max: Math.max(...parts.map((p) => p.max)),
  };
}

/** Non-negative decimals m with lo < or <= m, and m < or <= hi (integers; hi undefined: none). */
function magnitude(lo: Bound, hi: Bound | undefined, digits: number, fraction: number) {
  const alts: { expr: string; min: number; max: number }[] = [];
  const frac = fraction > 0 ? `("." ${repeat("[0-9]", 1, fraction)})?` : "";
  const fracBytes = fraction > 0 ? 1 + fraction : 0;
  const anyLo = lo.exclusive ? lo.at + 1 : lo.at;
  const anyHi = hi === undefined ? undefined : hi.at - 1;
  if (anyHi === undefined || anyLo <= anyHi) {
    const least = anyHi === undefined ? digitCount(anyLo) + 1 : 1;
    const ints = integerShape({ lo: anyLo, hi: anyHi }, Math.max(digits, least));
    alts.push({ expr: `(${ints.expr}) ${frac}`, min: ints.min, max: ints.max + fracBytes });
  }
  const loText = String(lo.at);
  if (lo.exclusive && (hi === undefined || lo.at < hi.at)) {
    // m = lo plus a fraction that is not zero.
    const f = Math.max(1, fraction);
    alts.push({
      expr: `${gbnfLiteral(loText)} "." ${repeat("[0-9]", 0, f - 1)} [1-9]`,
      min: loText.length + 2,
      max: loText.length + 1 + f,
    });
  }
  if (hi !== undefined && !hi.exclusive && (hi.at > lo.at || !lo.exclusive)) {
    const hiText = String(hi.at);
    const zeros = fraction > 0 ? ` ("." ${repeat('"0"', 1, fraction)})?` : "";
    alts.push({ expr: `${gbnfLiteral(hiText)}${zeros}`, min: hiText.length, max: hiText.length + fracBytes });
  }
  return {
    expr: alts.map((a) => `(${a.expr})`).join(" | "),
    min: Math.min(...alts.map((a) => a.min)),
    max: Math.max(...alts.map((a) => a.max)),
  };
}

// ---- helpers ----

/** `item` repeated min..max times as GBNF. */
function repeat(item: string, min: number, max: number): string {
  if (max <= 0) return "";
  if (min === max) return min === 1 ? item : `${item}{${min}}`;
  if (min === 0 && max === 1) return `${item}?`;
  return `${item}{${min},${max}}`;
}

/**
 * Splits `budget` bytes among slots (each `weight` copies of one value) by water-filling: every slot
 * gets at least its minimum and at most its maximum, and the rest is shared evenly.
 */
export function allocate(budget: number, slots: { min: number; max: number; weight: number }[]): number[] {
  const total = (level: number) =>
    slots.reduce((n, s) => n + s.weight * Math.min(s.max, Math.max(s.min, level)), 0);
  if (slots.length === 0) return [];
  if (total(0) >= budget) return slots.map((s) => s.min);
  let lo = 0;
  let hi = Math.max(1, budget);
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (total(mid) <= budget) lo = mid;
    else hi = mid - 1;
  }
  return slots.map((s) => Math.min(s.max, Math.max(s.min, lo)));
}
