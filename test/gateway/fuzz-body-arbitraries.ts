// Pure fast-check arbitraries for the bodies of fuzzed HTTP requests (docs/fuzzing.md): an
// operation's example (or {}) with mutations at any path, written in one of several encodings, raw
// texts and bytes, and how the bytes travel. renderBody() turns a recipe into the bytes.
import fc from "fast-check";

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A value to put somewhere in a body. `raw` is spliced into the JSON text as it is. */
export type ValueRecipe =
  | { v: Json }
  | { str: number; ch: string }
  | { arr: number; of: Json }
  | { deep: number; as: "array" | "object" }
  | { raw: string };

export type Mutation =
  | { op: "set"; path: (string | number)[]; value: ValueRecipe }
  | { op: "delete"; path: (string | number)[] }
  | { op: "extra"; path: (string | number)[]; key: string; value: ValueRecipe };

export type Encoding =
  | { e: "utf8" }
  | { e: "bom" }
  | { e: "utf16le" }
  | { e: "latin1" }
  | { e: "invalid-utf8"; at: number; bytes: number[] }
  | { e: "truncate"; keep: number }
  | { e: "duplicate-key" }
  | { e: "pad-to"; size: number };

export type BodyRecipe =
  | { t: "none" }
  | { t: "json"; base: "example" | "empty-object"; mutations: Mutation[]; encoding: Encoding }
  | { t: "text"; text: string }
  | { t: "bytes"; bytes: number[] };

/** How the bytes travel: one buffer (with Content-Length), or a stream in chunks (without). */
export type Framing = { f: "buffer" } | { f: "stream"; chunks: number } | { f: "declared"; length: string };

const SMALL_VALUES: Json[] = [
  null,
  true,
  false,
  0,
  -1,
  1.5,
  -0,
  2 ** 53 + 1,
  Number.MAX_SAFE_INTEGER,
  -(2 ** 31),
  1e300,
  "",
  "x",
  " ",
  "\u0000",
  "\ud800",
  "\udfff\ud800",
  "😀",
  "<|im_start|>system",
  [],
  [null],
  {},
  { a: 1 },
];

/** Spliced in as text: numbers JSON.parse turns odd (or refuses), and keys that name prototypes. */
const RAW_VALUES = [
  '{"__proto__":{"role":"admin"}}',
  '{"constructor":{"prototype":{"polluted":true}}}',
  "1e400",
  "-1e400",
  "1e-400",
  "NaN",
  "Infinity",
  "-Infinity",
  "-0",
  "123456789012345678901234567890",
  "0x10",
  "01",
  "1.",
  ".5",
  "+1",
  "undefined",
];

function valueArb(limits: readonly number[]): fc.Arbitrary<ValueRecipe> {
  const sizes = [
    ...new Set([...limits.flatMap((n) => [n - 1, n, n + 1]), 1000, 70_000].filter((n) => n > 0)),
  ];
  return fc.oneof(
    { weight: 5, arbitrary: fc.constantFrom(...SMALL_VALUES).map((v) => ({ v })) },
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => ({ v: v as Json })) },
    {
      weight: 2,
      arbitrary: fc.record({
        str: fc.constantFrom(...sizes),
        ch: fc.constantFrom("a", "é", "😀", "\n", "\\", '"'),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        arr: fc.constantFrom(...sizes.filter((n) => n <= 70_000)),
        of: fc.constantFrom<Json>(1, "x", { role: "user", content: "hi" }, null),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        deep: fc.constantFrom(64, 1000, 5000, 100_000),
        as: fc.constantFrom("array", "object"),
      }),
    },
    { weight: 2, arbitrary: fc.constantFrom(...RAW_VALUES).map((raw) => ({ raw })) },
  );
}

/** Every path to a value in `example` (objects and arrays included), root first. */
export function valuePaths(example: unknown): (string | number)[][] {
  const out: (string | number)[][] = [[]];
  const walk = (value: unknown, path: (string | number)[]) => {
    if (Array.isArray(value)) {
      value.forEach((item, i) => {
        out.push([...path, i]);
        walk(item, [...path, i]);
      });
    } else if (typeof value === "object" && value !== null) {
      for (const [key, item] of Object.entries(value)) {
        out.push([...path, key]);
        walk(item, [...path, key]);
      }
    }
  };
  walk(example, []);
  return out;
}

const EXTRA_KEYS = [
  "extra",
  "__proto__",
  "constructor",
  "prototype",
  "toString",
  "",
  "a.b",
  "😀",
  "stream",
  "model",
  "tools",
  "n",
  "response_format",
  "user",
];

const RAW_TEXTS = [
  "",
  " ",
  "null",
  "[]",
  "1",
  '"s"',
  "{",
  "}",
  '{"a":',
  '{"a":1,}',
  "[1,]",
  "NaN",
  "Infinity",
  "undefined",
  "{'a':1}",
  "<xml/>",
  "a=1&b=2",
  "\u0000",
  '{"a":1}{"b":2}',
  '{"a":1} trailing',
  "\uFEFF\uFEFF{}",
  "//comment\n{}",
  `${"[".repeat(100_000)}${"]".repeat(100_000)}`,
  `${'{"a":'.repeat(20_000)}1${"}".repeat(20_000)}`,
  '"\\ud800"',
  '"\\u00"',
];

export interface BodyContext {
  example: unknown;
  /** The route's byte limit (json-body's default when it has none of its own). */
  maxBytes: number;
  /** Field limits worth probing near (Limits.maxPromptChars, ...). */
  limits: readonly number[];
}

export function bodyArb({ example, maxBytes, limits }: BodyContext): fc.Arbitrary<BodyRecipe> {
  const paths = valuePaths(example ?? {});
  const path = fc.constantFrom(...paths);
  const value = valueArb(limits);
  const mutation: fc.Arbitrary<Mutation> = fc.oneof(
    { weight: 4, arbitrary: fc.record({ op: fc.constant("set" as const), path, value }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("delete" as const), path }) },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant("extra" as const),
        path,
        key: fc.constantFrom(...EXTRA_KEYS),
        value,
      }),
    },
  );
  const encoding: fc.Arbitrary<Encoding> = fc.oneof(
    { weight: 8, arbitrary: fc.constant({ e: "utf8" } as const) },
    { weight: 1, arbitrary: fc.constant({ e: "bom" } as const) },
    { weight: 1, arbitrary: fc.constant({ e: "utf16le" } as const) },
    { weight: 1, arbitrary: fc.constant({ e: "latin1" } as const) },
    {
      weight: 1,
      arbitrary: fc.record({
        e: fc.constant("invalid-utf8" as const),
        at: fc.nat({ max: 200 }),
        bytes: fc.constantFrom<number[]>(
          [0xff],
          [0xc0, 0xaf],
          [0xed, 0xa0, 0x80],
          [0xe0, 0x80],
          [0xf8, 0x88, 0x80, 0x80, 0x80],
          [0x80],
        ),
      }),
    },
    { weight: 1, arbitrary: fc.record({ e: fc.constant("truncate" as const), keep: fc.nat({ max: 200 }) }) },
    { weight: 1, arbitrary: fc.constant({ e: "duplicate-key" } as const) },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(maxBytes - 1, maxBytes, maxBytes + 1, 2 * maxBytes)
        .map((size) => ({ e: "pad-to", size }) as const),
    },
  );
  return fc.oneof(
    { weight: 1, arbitrary: fc.constant({ t: "none" } as const) },
    {
      weight: 10,
      arbitrary: fc.record({
        t: fc.constant("json" as const),
        base: fc.constantFrom<"example" | "empty-object">("example", "example", "example", "empty-object"),
        mutations: fc.array(mutation, { maxLength: 3 }),
        encoding,
      }),
    },
    { weight: 2, arbitrary: fc.constantFrom(...RAW_TEXTS).map((text) => ({ t: "text", text }) as const) },
    { weight: 1, arbitrary: fc.string({ maxLength: 64 }).map((text) => ({ t: "text", text }) as const) },
    {
      weight: 1,
      arbitrary: fc
        .array(fc.nat({ max: 255 }), { maxLength: 64 })
        .map((bytes) => ({ t: "bytes", bytes }) as const),
    },
  );
}

export const framingArb: fc.Arbitrary<Framing> = fc.oneof(
  { weight: 6, arbitrary: fc.constant({ f: "buffer" } as const) },
  {
    weight: 2,
    arbitrary: fc.integer({ min: 1, max: 7 }).map((chunks) => ({ f: "stream", chunks }) as const),
  },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom("0", "-1", "abc", "1e3", "99999999999", " 5", "5, 5")
      .map((length) => ({ f: "declared", length }) as const),
  },
);

// ---- rendering ----

const encoder = new TextEncoder();

function renderValue(value: ValueRecipe, raws: string[]): Json {
  // Copies: later mutations change what they are put into, and a recipe's value (or one of the
  // shared SMALL_VALUES) changed in place made a later body circular (FUZZ_SEED=1081916755).
  if ("v" in value) return structuredClone(value.v);
  if ("str" in value) return value.ch.repeat(value.str);
  if ("arr" in value) return Array.from({ length: value.arr }, () => structuredClone(value.of));
  const raw =
    "deep" in value
      ? value.as === "array"
        ? `${"[".repeat(value.deep)}${"]".repeat(value.deep)}`
        : `${'{"a":'.repeat(value.deep)}1${"}".repeat(value.deep)}`
      : value.raw;
  raws.push(raw);
  return `@@raw${raws.length - 1}@@`;
}

function clone(value: unknown): Json {
  return value === undefined ? {} : (JSON.parse(JSON.stringify(value)) as Json);
}

function nodeAt(root: Json, path: (string | number)[]): Json | undefined {
  let node: Json | undefined = root;
  for (const step of path) {
    if (typeof node !== "object" || node === null) return undefined;
    node = (node as Record<string, Json>)[step as string];
  }
  return node;
}

function applyMutation(root: Json, mutation: Mutation, raws: string[]): Json {
  if (mutation.op === "extra") {
    const node = nodeAt(root, mutation.path);
    if (typeof node === "object" && node !== null && !Array.isArray(node)) {
      // defineProperty, so "__proto__" becomes an own key that JSON.stringify writes out.
      Object.defineProperty(node, mutation.key, {
        value: renderValue(mutation.value, raws),
        enumerable: true,
        configurable: true,
        writable: true,
      });
    }
    return root;
  }
  if (mutation.path.length === 0) return mutation.op === "set" ? renderValue(mutation.value, raws) : {};
  const parent = nodeAt(root, mutation.path.slice(0, -1));
  const key = mutation.path[mutation.path.length - 1] as string | number;
  if (typeof parent !== "object" || parent === null) return root;
  if (mutation.op === "delete") {
    if (Array.isArray(parent)) parent.splice(Number(key), 1);
    else delete parent[key as string];
  } else (parent as Record<string, Json>)[key as string] = renderValue(mutation.value, raws);
  return root;
}

/** The JSON text of a json recipe before its encoding. */
export function renderJsonText(recipe: Extract<BodyRecipe, { t: "json" }>, example: unknown): string {
  const raws: string[] = [];
  let root = recipe.base === "example" ? clone(example) : {};
  for (const mutation of recipe.mutations) root = applyMutation(root, mutation, raws);
  let text = JSON.stringify(root) ?? "null";
  raws.forEach((raw, i) => {
    text = text.replace(`"@@raw${i}@@"`, raw);
  });
  return text;
}

function utf16le(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length * 2);
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    bytes[2 * i] = code & 0xff;
    bytes[2 * i + 1] = code >> 8;
  }
  return bytes;
}

function encode(text: string, encoding: Encoding): Uint8Array {
  switch (encoding.e) {
    case "utf8":
      return encoder.encode(text);
    case "bom":
      return encoder.encode(`\uFEFF${text}`);
    case "utf16le":
      return utf16le(`\uFEFF${text}`);
    case "latin1":
      return Uint8Array.from(text, (ch) => ch.charCodeAt(0) & 0xff);
    case "invalid-utf8": {
      const bytes = encoder.encode(text);
      const at = Math.min(encoding.at, bytes.length);
      return Uint8Array.from([...bytes.subarray(0, at), ...encoding.bytes, ...bytes.subarray(at)]);
    }
    case "truncate":
      return encoder.encode(text).subarray(0, Math.min(encoding.keep, Math.max(0, text.length - 1)));
    case "duplicate-key": {
      const first = /^\{"((?:[^"\\]|\\.)*)":/.exec(text);
      const dup = first ? `{"${first[1]}":{"dup":[1,2]},` : "";
      return encoder.encode(first && text !== "{}" ? text.replace(/^\{/, dup) : text);
    }
    case "pad-to": {
      const bytes = encoder.encode(text);
      if (bytes.length >= encoding.size) return bytes;
      const padded = new Uint8Array(encoding.size).fill(0x20);
      padded.set(bytes, 0);
      return padded;
    }
  }
}

/** The body's bytes, or null for no body. */
export function renderBody(recipe: BodyRecipe, example: unknown): Uint8Array | null {
  switch (recipe.t) {
    case "none":
      return null;
    case "text":
      return encoder.encode(recipe.text);
    case "bytes":
      return Uint8Array.from(recipe.bytes);
    case "json":
      return encode(renderJsonText(recipe, example), recipe.encoding);
  }
}
