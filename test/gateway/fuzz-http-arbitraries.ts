// Pure fast-check arbitraries for fuzzing the gateway's HTTP routes (docs/fuzzing.md). Each one
// generates a small, printable recipe (what a counterexample shows and what shrinking works on);
// render*() turns a recipe into the bytes, URL and headers a request is made of.
import fc from "fast-check";

/** A path template's parameters: Hono's `:name` or `:name{regex}`. */
export const PARAM_PATTERN = /:([A-Za-z0-9_]+)(\{[^}]*\})?/g;

export function paramNames(template: string): string[] {
  return [...template.matchAll(PARAM_PATTERN)].map((m) => m[1] as string);
}

// ---- path parameters ----

/**
 * Plausible values per parameter name, so some requests get past the path to what it names. None
 * names a version the fuzz can register and activate: an activation waits for agents to load it.
 */
const PLAUSIBLE: Record<string, readonly string[]> = {
  name: ["example-missing", "tinyllama", "a", "fuzz-model"],
  model_id: ["example-missing:1.0.0", "tinyllama@stable", "tinyllama:9.9.9", "nobody@x"],
  version: ["1.0.0", "1.1.0", "2.0.0-rc.1"],
  alias: ["stable", "prod-eu"],
  target: ["tinyllama", "example-missing:1.0.0", "tinyllama@stable"],
  tag: ["chat", "v1.0", "a:b"],
  id: ["example-missing", "mini-3", "8b0d6f5e-2c1a-4f7e-9d3b-5a6c7e8f9a0b"],
  command: ["promote", "pause", "resume", "abort", "explode"],
  file: ["app.js", "app.css", "icon.svg", "missing.js", "index.html"],
};

/** Values no route expects: traversal, encodings of `/` and NUL, malformed escapes, unicode. */
export const HOSTILE_SEGMENTS: readonly string[] = [
  "..",
  ".",
  "%2e%2e",
  "%2E",
  "%00",
  "a%00b",
  "%2F",
  "a%2Fb",
  "%252F",
  "a/b",
  "%5C",
  "a\\b",
  "%",
  "%zz",
  "%E0%A4",
  "%C0%AF",
  "%ff",
  "%FE%FF",
  " ",
  "%20",
  "+",
  "?x=1",
  "#frag",
  ";a=b",
  "*",
  "~",
  "'",
  '"',
  "<script>",
  "{name}",
  ":name",
  "null",
  "undefined",
  "0",
  "-1",
  "__proto__",
  "constructor",
  "模型",
  "😀",
  "e\u0301",
  "\u202etxt",
  "\uFEFF",
  "\u0000",
  "\u0007",
  "\t",
];

export interface SegmentRecipe {
  /** The value before encoding. */
  value: string;
  /** raw: inserted as is (the URL parser normalizes it); encoded: encodeURIComponent first. */
  mode: "raw" | "encoded";
}

const longSegment = fc
  .record({
    n: fc.constantFrom(64, 65, 128, 129, 256, 1000, 8000, 20000),
    ch: fc.constantFrom("a", "é", "😀", "%41", "-", "."),
  })
  .map(({ n, ch }) => ch.repeat(n));

/** Unicode strings without lone surrogates (encodeURIComponent refuses those; bodies carry them). */
const unicodeSegment = fc.string({ unit: "grapheme", minLength: 1, maxLength: 12 });

/** A value the parameter plausibly takes (the first of its plausible ones). */
export function plausibleValue(param: string): string {
  return PLAUSIBLE[param]?.[0] ?? "x";
}

export function segmentArb(param: string): fc.Arbitrary<SegmentRecipe> {
  const plausible = PLAUSIBLE[param] ?? ["x"];
  return fc.record({
    value: fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom(...plausible) },
      { weight: 4, arbitrary: fc.constantFrom(...HOSTILE_SEGMENTS) },
      { weight: 1, arbitrary: longSegment },
      { weight: 1, arbitrary: unicodeSegment },
      { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9._:@-]{1,40}$/) },
    ),
    mode: fc.constantFrom("raw", "encoded"),
  });
}

export function renderSegment({ value, mode }: SegmentRecipe): string {
  return mode === "encoded" ? encodeURIComponent(value) : value;
}

// ---- query strings ----

export type QueryRecipe = { key: string; value: string; raw: boolean }[];

const HOSTILE_QUERY_VALUES = [
  "",
  "-1",
  "0",
  "1e309",
  "NaN",
  "true",
  "[]",
  "%00",
  "%zz",
  "%E0%A4%A",
  "../../etc",
  "a".repeat(5000),
  "😀",
  "1,2,3",
  "5m",
  "1h",
  "24h",
];

export function queryArb(knownKeys: readonly string[]): fc.Arbitrary<QueryRecipe> {
  const keys = [...knownKeys, "limit", "status", "model", "name", "v", "windows", "__proto__", "x"];
  return fc.oneof(
    { weight: 3, arbitrary: fc.constant<QueryRecipe>([]) },
    {
      weight: 2,
      arbitrary: fc.array(
        fc.record({
          key: fc.constantFrom(...keys),
          value: fc.oneof(fc.constantFrom(...HOSTILE_QUERY_VALUES), fc.string({ maxLength: 20 })),
          raw: fc.boolean(),
        }),
        { minLength: 1, maxLength: 4 },
      ),
    },
  );
}

export function renderQuery(query: QueryRecipe): string {
  if (query.length === 0) return "";
  const parts = query.map(({ key, value, raw }) =>
    raw ? `${key}=${value}` : `${encodeURIComponent(key)}=${encodeURIComponent(value)}`,
  );
  return `?${parts.join("&")}`;
}

// ---- methods ----

const OTHER_METHODS = [
  "GET",
  "POST",
  "PUT",
  "DELETE",
  "PATCH",
  "HEAD",
  "OPTIONS",
  "PROPFIND",
  "FOO",
  "patch",
];

/** Mostly the route's own method, so most requests reach its handler. */
export function methodArb(own: string): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 5, arbitrary: fc.constant(own) },
    { weight: 2, arbitrary: fc.constantFrom(...OTHER_METHODS) },
  );
}

// ---- authorization ----

export type Role = "user" | "admin" | "agent";

export type AuthRecipe =
  | { a: "none" }
  | {
      a: "jwt";
      role: Role | "root" | "" | null;
      sub: "caller" | "long" | "empty" | "missing";
      exp: "valid" | "expired" | "missing" | "far";
      key: "main" | "rotated" | "wrong" | "unknown-kid" | "alg-none";
      scheme: "Bearer" | "bearer" | "BEARER" | "Token";
      suffix: "" | " " | " junk" | ",Bearer x";
    }
  | { a: "raw"; value: string }
  | { a: "metrics-token" }
  | { a: "two-headers"; first: Role; second: string };

const RAW_AUTH = [
  "",
  "Bearer",
  "Bearer ",
  "Bearer  ",
  "Basic dXNlcjpwYXNz",
  "Bearer a.b.c",
  "Bearer eyJhbGciOiJIUzI1NiJ9.e30.",
  "Bearer ....",
  "Bearer %%%",
  "Bearer é",
  `Bearer ${"A".repeat(9000)}`,
  `Bearer ${"eyJ".repeat(30000)}`,
  "Digest username=x",
  "Bearer\ttoken",
];

/** `role` is what the route needs: half the requests carry a token that satisfies it. */
export function authArb(role: Role | null): fc.Arbitrary<AuthRecipe> {
  const good: fc.Arbitrary<AuthRecipe> = fc.constant({
    a: "jwt",
    role: role ?? "user",
    sub: "caller",
    exp: "valid",
    key: "main",
    scheme: "Bearer",
    suffix: "",
  });
  const jwt: fc.Arbitrary<AuthRecipe> = fc.record({
    a: fc.constant("jwt" as const),
    role: fc.constantFrom<Role | "root" | "" | null>("user", "admin", "agent", "root", "", null),
    sub: fc.constantFrom("caller", "caller", "long", "empty", "missing"),
    exp: fc.constantFrom("valid", "valid", "expired", "missing", "far"),
    key: fc.constantFrom("main", "main", "rotated", "wrong", "unknown-kid", "alg-none"),
    scheme: fc.constantFrom("Bearer", "Bearer", "bearer", "BEARER", "Token"),
    suffix: fc.constantFrom("", "", " ", " junk", ",Bearer x"),
  });
  return fc.oneof(
    { weight: role === null ? 1 : 6, arbitrary: good },
    { weight: 4, arbitrary: jwt },
    { weight: 1, arbitrary: fc.constant({ a: "none" } as const) },
    { weight: 1, arbitrary: fc.constantFrom(...RAW_AUTH).map((value) => ({ a: "raw", value }) as const) },
    { weight: 1, arbitrary: fc.constant({ a: "metrics-token" } as const) },
    {
      weight: 1,
      arbitrary: fc.record({
        a: fc.constant("two-headers" as const),
        first: fc.constantFrom<Role>("user", "admin", "agent"),
        second: fc.constantFrom("Bearer x", "Basic y", ""),
      }),
    },
  );
}

// ---- headers ----

export interface HeadersRecipe {
  contentType: string | null;
  contentEncoding: string | null;
  accept: string | null;
  requestId: string | null;
  timeoutMs: string | null;
  user: string | null;
  range: string | null;
  upgrade: string | null;
  origin: string | null;
  /** Headers added as they are (appended: a name twice is a duplicate header). */
  extra: [string, string][];
  /** Many headers, or one huge one. */
  bulk: { count: number; size: number } | null;
}

const CONTENT_TYPES = [
  "application/json",
  "application/json; charset=utf-8",
  "application/json;charset=UTF-8",
  "application/json; charset=utf-16",
  "application/json; charset=latin1",
  "Application/JSON",
  "application/vnd.orchard+json",
  "application/json-patch+json",
  "application/jsonx",
  "application/json, text/plain",
  "text/plain",
  "text/json",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=x",
  "application/octet-stream",
  "",
  ";",
  "*/*",
  "application/",
  "+json",
];

/**
 * Header text: printable ASCII with tabs and control characters, not CR, LF or NUL (which no
 * client can send). Non-ASCII values are a few constants: workerd warns on each one it sees.
 */
const headerText = (maxLength: number) =>
  fc.string({
    unit: fc
      .oneof(
        { weight: 20, arbitrary: fc.integer({ min: 0x20, max: 0x7e }) },
        { weight: 1, arbitrary: fc.constantFrom(0x01, 0x07, 0x09, 0x1b, 0x7f) },
      )
      .map((code) => String.fromCharCode(code)),
    maxLength,
  });

const optional = <T>(arb: fc.Arbitrary<T>, weightAbsent = 3): fc.Arbitrary<T | null> =>
  fc.oneof({ weight: weightAbsent, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: arb });

export function headersArb({ json, raw }: { json: boolean; raw: boolean }): fc.Arbitrary<HeadersRecipe> {
  const usual = raw ? "application/octet-stream" : "application/json";
  return fc.record({
    contentType: fc.oneof(
      { weight: json || raw ? 6 : 1, arbitrary: fc.constant(usual) },
      { weight: 3, arbitrary: fc.constantFrom<string | null>(null, ...CONTENT_TYPES) },
      { weight: 1, arbitrary: headerText(40) },
    ),
    contentEncoding: optional(
      fc.constantFrom("gzip", "br", "deflate", "gzip, gzip", "identity", "x-garbage"),
      6,
    ),
    accept: optional(
      fc.constantFrom(
        "text/event-stream",
        "application/openmetrics-text; version=1.0.0",
        "application/openmetrics-text; version=9",
        "text/plain;version=0.0.4",
        "*/*",
        "application/json;q=0",
        "x".repeat(9000),
      ),
      4,
    ),
    requestId: optional(
      fc.constantFrom("fuzz-req-1", "a b", "../x", "x".repeat(65), "ünïcode", ":", "=", "dup-id", ""),
      3,
    ),
    timeoutMs: optional(
      fc.constantFrom("1", "0", "-5", "abc", "99999999999999999", " 500 ", "1e3", "2000", "00000001", ""),
      3,
    ),
    user: optional(
      fc.oneof(fc.constantFrom("", "u".repeat(256), "u".repeat(257), "v".repeat(20000)), headerText(30)),
    ),
    range: optional(
      fc.constantFrom(
        "bytes=0-10",
        "bytes=-5",
        "bytes=10-5",
        "bytes=abc",
        "bytes=0-1,5-6",
        "items=1-2",
        "bytes=99999999999999999999-",
      ),
      5,
    ),
    upgrade: optional(fc.constantFrom("websocket", "WebSocket", "h2c", ""), 6),
    origin: optional(fc.constantFrom("https://evil.example", "null", "http://localhost:8787"), 6),
    extra: fc.array(
      fc.tuple(
        fc.constantFrom(
          "Authorization",
          "Content-Type",
          "X-Request-Id",
          "X-Forwarded-For",
          "Cookie",
          "X-Fuzz",
          "Expect",
        ),
        headerText(60),
      ),
      { maxLength: 3 },
    ),
    bulk: optional(
      fc.record({ count: fc.constantFrom(1, 50, 200), size: fc.constantFrom(10, 4096, 16384, 65536) }),
      8,
    ),
  });
}

// ---- bodies ----

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
  if ("v" in value) return value.v;
  if ("str" in value) return value.ch.repeat(value.str);
  if ("arr" in value) return Array.from({ length: value.arr }, () => value.of);
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
