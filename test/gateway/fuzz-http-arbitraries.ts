// Pure fast-check arbitraries for fuzzing the gateway's HTTP routes (docs/fuzzing.md). Each one
// generates a small, printable recipe (what a counterexample shows and what shrinking works on);
// render*() turns a recipe into the URL and headers a request is made of (bodies: fuzz-body-arbitraries.ts).
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
