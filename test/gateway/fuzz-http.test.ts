// Property-based fuzzing of every HTTP route the app serves (issue 12, docs/fuzzing.md). Routes come
// from app.routes at run time, so a route added later is fuzzed too; bodies start from the
// OpenAPI examples and are mutated. Every answer is judged by fuzz-oracle.ts; a serving agent
// answers what reaches the hub, and a well-behaved caller runs beside the fuzzing throughout.
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { app } from "../../gateway/index.ts";
import { errorCodesOf, OPERATIONS } from "../../gateway/openapi/document.ts";
import type { OperationSpec } from "../../gateway/openapi/operation.ts";
import { type ErrorCode, Limits } from "../../schema/api.ts";
import {
  type BodyRecipe,
  bodyArb,
  type Framing,
  framingArb,
  type Json,
  renderBody,
} from "./fuzz-body-arbitraries.ts";
import {
  captureConsole,
  FUZZ_RUNS,
  FUZZ_VERBOSE,
  forgotten,
  fuzz,
  print,
  renderAuth,
  type Sent,
  ServingAgent,
  send,
  since,
  timeoutFor,
  WellBehavedCaller,
} from "./fuzz-harness.ts";
import {
  type AuthRecipe,
  authArb,
  type HeadersRecipe,
  HOSTILE_SEGMENTS,
  headersArb,
  methodArb,
  PARAM_PATTERN,
  paramNames,
  plausibleValue,
  type QueryRecipe,
  queryArb,
  type Role,
  renderQuery,
  renderSegment,
  type SegmentRecipe,
  segmentArb,
} from "./fuzz-http-arbitraries.ts";
import { judge } from "./fuzz-oracle.ts";
import { uniqueId } from "./helpers.ts";

const FILE = "test/gateway/fuzz-http.test.ts";

/** A model only the serving agent serves: what the well-behaved caller asks for. */
const GOOD_MODEL = uniqueId("fuzz-good");
/** A model the serving agent serves that fuzzed inference bodies may name, so some reach it. */
const FUZZ_MODEL = uniqueId("fuzz-served");
/** The subject of the fuzzed requests' valid tokens. */
const CALLER = "fuzz-http-caller";
/** Longest a request may take: the test bindings' queue and first-chunk timeouts are shorter. */
const BOUND_MS = 10_000;
const VALID_USER: Extract<AuthRecipe, { a: "jwt" }> = {
  a: "jwt",
  role: "user",
  sub: "caller",
  exp: "valid",
  key: "main",
  scheme: "Bearer",
  suffix: "",
};

/**
 * Codes routes answer with that their documentation misses, in files another engineer is changing
 * right now; each is a reported bug, excused from the documented-code check only (and only that
 * code on that route), with a regression test below that fails until the document lists it.
 */
const UNDOCUMENTED: Record<string, ErrorCode[]> = {};

interface Route {
  method: string;
  /** Hono's path (`/models/:name`) and the OpenAPI form (`/models/{name}`). */
  path: string;
  template: string;
  op: OperationSpec | undefined;
}

const toTemplate = (path: string) => path.replace(PARAM_PATTERN, "{$1}");

/** Every method and path the app serves, once each (middleware entries say ALL). */
function servedRoutes(): Route[] {
  const seen = new Map<string, Route>();
  for (const { method, path } of app.routes) {
    if (method === "ALL") continue;
    const template = toTemplate(path);
    const op = OPERATIONS.find((o) => o.method.toUpperCase() === method && o.path === template);
    seen.set(`${method} ${path}`, { method, path, template, op });
  }
  return [...seen.values()];
}

const ROUTES = servedRoutes();

function roleFor(op: OperationSpec | undefined): Role | null {
  switch (op?.access) {
    case "public":
      return null;
    case "user":
      return "user";
    case "agent":
      return "agent";
    default:
      // admin, agent_or_admin, admin_or_metrics_token, and routes the document does not know yet.
      return "admin";
  }
}

interface RequestRecipe {
  method: string;
  segments: SegmentRecipe[];
  query: QueryRecipe;
  auth: AuthRecipe;
  headers: HeadersRecipe;
  body: BodyRecipe;
  framing: Framing;
  /** Inference bodies: name the model the serving agent serves instead of the example's. */
  servedModel: boolean;
}

type Part = Exclude<keyof RequestRecipe, "servedModel">;
const PARTS: readonly Part[] = ["method", "segments", "query", "auth", "headers", "body", "framing"];

/** The request a well-behaved client would send: what a fuzzed one differs from in a part or two. */
function plainRequest(route: Route): Omit<RequestRecipe, "servedModel"> {
  const op = route.op;
  const role = roleFor(op);
  return {
    method: route.method,
    segments: paramNames(route.path).map((name) => ({ value: plausibleValue(name), mode: "encoded" })),
    query: [],
    auth:
      role === null
        ? { a: "none" }
        : { a: "jwt", role, sub: "caller", exp: "valid", key: "main", scheme: "Bearer", suffix: "" },
    headers: {
      contentType: op?.body ? "application/json" : op?.rawBody ? op.rawBody.contentType : null,
      contentEncoding: null,
      accept: null,
      requestId: null,
      timeoutMs: null,
      user: null,
      range: null,
      upgrade: route.path === "/agents/connect" ? "websocket" : null,
      origin: null,
      extra: [],
      bulk: null,
    },
    body: op?.body
      ? { t: "json", base: "example", mutations: [], encoding: { e: "utf8" } }
      : op?.rawBody
        ? { t: "bytes", bytes: [1, 2, 3] }
        : { t: "none" },
    framing: { f: "buffer" },
  };
}

/**
 * Requests that differ from a plain one in one or two parts (most), in none, or in every part:
 * a request broken everywhere stops at the first check, so most break only a little.
 */
function requestArb(route: Route): fc.Arbitrary<RequestRecipe> {
  const op = route.op;
  const plain = plainRequest(route);
  const fuzzed = fc.record({
    method: methodArb(route.method),
    segments: fc.tuple(...paramNames(route.path).map(segmentArb)),
    query: queryArb(Object.keys(op?.params?.query?.shape ?? {})),
    auth: authArb(roleFor(op)),
    headers: headersArb({ json: op?.body !== undefined, raw: op?.rawBody !== undefined }),
    body: bodyArb({
      example: op?.body?.example,
      maxBytes: op?.body?.maxBytes ?? Limits.maxBodyBytes,
      limits: [
        Limits.maxPromptChars,
        Limits.maxMessages,
        Limits.maxTokens,
        Limits.maxStopChars,
        64,
        128,
        256,
      ],
    }),
    framing: framingArb,
  });
  const parts = fc.oneof(
    { weight: 1, arbitrary: fc.constant<Part[]>([]) },
    { weight: 5, arbitrary: fc.subarray([...PARTS], { minLength: 1, maxLength: 1 }) },
    { weight: 3, arbitrary: fc.subarray([...PARTS], { minLength: 2, maxLength: 2 }) },
    { weight: 2, arbitrary: fc.constant<Part[]>([...PARTS]) },
  );
  return fc
    .record({
      fuzzed,
      parts,
      servedModel: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, fc.constant(false)),
    })
    .map(({ fuzzed, parts, servedModel }) => {
      const recipe: RequestRecipe = { ...plain, servedModel };
      for (const part of parts) (recipe as unknown as Record<Part, unknown>)[part] = fuzzed[part];
      return recipe;
    });
}

function exampleFor(route: Route, servedModel: boolean): unknown {
  const example = route.op?.body?.example;
  if (!servedModel || typeof example !== "object" || example === null || !("model" in example))
    return example;
  return { ...example, model: FUZZ_MODEL };
}

const MAX_BULK_BYTES = 1024 * 1024;

async function headerList(r: RequestRecipe): Promise<[string, string][]> {
  const h = r.headers;
  const list: [string, string][] = [];
  for (const value of await renderAuth(r.auth, CALLER)) list.push(["Authorization", value]);
  const named: [string, string | null][] = [
    ["Content-Type", h.contentType],
    ["Content-Encoding", h.contentEncoding],
    ["Accept", h.accept],
    ["X-Request-Id", h.requestId],
    ["X-Orchard-Timeout-Ms", h.timeoutMs],
    ["X-Orchard-User", h.user],
    ["Range", h.range],
    ["Upgrade", h.upgrade],
    ["Origin", h.origin],
  ];
  for (const [name, value] of named) if (value !== null) list.push([name, value]);
  list.push(...h.extra);
  if (h.bulk !== null) {
    const size = Math.min(h.bulk.size, Math.floor(MAX_BULK_BYTES / h.bulk.count));
    for (let i = 0; i < h.bulk.count; i++) list.push([`X-Fuzz-Bulk-${i}`, "b".repeat(size)]);
  }
  if (r.framing.f === "declared") list.push(["Content-Length", r.framing.length]);
  return list;
}

function decoded(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Sends one fuzzed request to `route` and returns what is wrong with the answer. */
async function exchange(
  route: Route,
  r: RequestRecipe,
  secrets: readonly string[],
): Promise<{ sent: Sent; problems: string[] }> {
  let i = 0;
  const path = route.path.replace(PARAM_PATTERN, () => renderSegment(r.segments[i++] as SegmentRecipe));
  const target = `${path}${renderQuery(r.query)}`;
  const bytes = renderBody(r.body, exampleFor(route, r.servedModel));
  const sent = await send(
    {
      method: r.method,
      target,
      headers: await headerList(r),
      body: bytes,
      ...(r.framing.f === "stream" ? { streamChunks: r.framing.chunks } : {}),
    },
    BOUND_MS,
  );
  if (sent.kind === "unsendable") return { sent, problems: [] };
  if (sent.kind === "timeout") {
    return {
      sent,
      problems: [`no answer (${sent.phase}) within ${BOUND_MS} ms, status ${sent.status ?? "none"}`],
    };
  }
  const echoes = [
    target,
    path,
    decoded(path),
    sent.url.pathname,
    decoded(sent.url.pathname),
    r.method,
    ...r.segments.flatMap((s) => [s.value, renderSegment(s), decoded(renderSegment(s))]),
    ...r.query.flatMap((q) => [q.key, q.value]),
    ...(r.body.t === "json" ? r.body.mutations.flatMap((m) => (m.op === "extra" ? [m.key] : [])) : []),
  ];
  const problems = judge({
    method: r.method,
    template: route.template,
    pathname: sent.url.pathname,
    op: route.op,
    status: sent.status,
    headers: sent.headers,
    text: sent.text,
    elapsedMs: sent.elapsedMs,
    boundMs: BOUND_MS,
    echoes,
    secrets,
    undocumented: UNDOCUMENTED[`${route.method} ${route.template}`] ?? [],
  });
  return { sent, problems };
}

/** Answers per route and status, and their time, printed after the run (visible with --silent=false). */
const tally = new Map<string, { counts: Map<string, number>; totalMs: number; maxMs: number }>();

/** Answers slower than a second, with when and what was asked: to explain a late caller. */
const slow: string[] = [];

/** The gateway's log lines, captured (not printed): the ones around a late answer are printed. */
let console$: ReturnType<typeof captureConsole> | undefined;

/** Every exchange: when it ended, what it was; printed around a late well-behaved answer. */
const history: { at: number; line: string }[] = [];

function count(route: string, sent: Sent, recipe?: unknown): void {
  const line = `${route} -> ${sent.kind === "answered" ? sent.status : sent.kind}: ${JSON.stringify(recipe).slice(0, 300)}`;
  history.push({ at: since(), line });
  if (sent.kind !== "unsendable" && sent.elapsedMs > 1000) {
    slow.push(`${route}: ${sent.elapsedMs} ms, until ${since()} ms: ${JSON.stringify(recipe).slice(0, 400)}`);
  }
  const key = sent.kind === "answered" ? String(sent.status) : sent.kind;
  const entry = tally.get(route) ?? { counts: new Map<string, number>(), totalMs: 0, maxMs: 0 };
  entry.counts.set(key, (entry.counts.get(key) ?? 0) + 1);
  const ms = sent.kind === "unsendable" ? 0 : sent.elapsedMs;
  entry.totalMs += ms;
  entry.maxMs = Math.max(entry.maxMs, ms);
  tally.set(route, entry);
}

function report(): string {
  return [...tally]
    .map(([route, { counts, totalMs, maxMs }]) => {
      const n = [...counts.values()].reduce((a, b) => a + b, 0);
      const answers = [...counts].map(([s, k]) => `${s}×${k}`).join(" ");
      return `  ${route}: ${answers} (mean ${Math.round(totalMs / n)} ms, max ${maxMs} ms)`;
    })
    .join("\n");
}

function failWith(what: string, problems: string[], sent: Sent): never {
  const status = sent.kind === "answered" ? `${sent.status} ${sent.url.pathname}` : sent.kind;
  throw new Error(`${what} -> ${status}\n  - ${problems.join("\n  - ")}`);
}

describe("fuzzing every HTTP route", () => {
  let serving: ServingAgent;
  let caller: WellBehavedCaller;

  beforeAll(async () => {
    console$ = captureConsole();
    serving = await ServingAgent.start([GOOD_MODEL, FUZZ_MODEL]);
    caller = new WellBehavedCaller(GOOD_MODEL, (id) => serving.events.get(id) ?? []);
  });

  afterAll(async () => {
    await caller?.stop();
    serving?.close();
    // Its goodbye is logged by the hub: still into the capture, not into a worker tearing down.
    await forgotten(serving?.id);
    console$?.restore();
  });

  it("finds the app's routes to fuzz, each documented one with its operation", () => {
    expect(ROUTES.length).toBeGreaterThanOrEqual(45);
    expect(ROUTES.filter((r) => r.op?.body !== undefined).length).toBeGreaterThanOrEqual(12);
  });

  for (const route of ROUTES) {
    const name = `${route.method} ${route.template}`;
    it(
      name,
      async () => {
        await fuzz(
          name,
          fc.asyncProperty(requestArb(route), async (r) => {
            const { sent, problems } = await exchange(route, r, [serving.id]);
            count(name, sent, r);
            if (problems.length > 0) failWith(`${r.method} ${route.template}`, problems, sent);
          }),
          { file: FILE },
        );
      },
      timeoutFor(FUZZ_RUNS, 200),
    );
  }

  it(
    "paths no route serves answer 404 or 405 in the documented shape",
    async () => {
      const segment = fc.oneof(
        fc.constantFrom(...HOSTILE_SEGMENTS, "models", "v1", "agents", "generate", "dashboard", "health"),
        fc.webSegment(),
      );
      const anyRoute: Route = { method: "GET", path: "/", template: "/", op: undefined };
      await fuzz(
        "unknown paths",
        fc.asyncProperty(
          fc.array(segment, { minLength: 1, maxLength: 6 }),
          methodArb("GET"),
          authArb("admin"),
          async (segments, method, auth) => {
            const target = `/${segments.join("/")}`;
            const sent = await send(
              {
                method,
                target,
                headers: (await renderAuth(auth, CALLER)).map((v) => ["Authorization", v]),
                body: null,
              },
              BOUND_MS,
            );
            count("unknown paths", sent, { method, target, auth });
            if (sent.kind === "unsendable") return;
            if (sent.kind === "timeout") failWith(`${method} ${target}`, ["no answer in time"], sent);
            const served = ROUTES.some((r) =>
              new RegExp(`^${r.path.replace(PARAM_PATTERN, "[^/]+")}$`).test(sent.url.pathname),
            );
            const problems = judge({
              method,
              template: anyRoute.template,
              pathname: sent.url.pathname,
              op: undefined,
              status: sent.status,
              headers: sent.headers,
              text: sent.text,
              elapsedMs: sent.elapsedMs,
              boundMs: BOUND_MS,
              echoes: [target, sent.url.pathname, decoded(sent.url.pathname), ...segments, method],
              secrets: [serving.id],
            });
            if (!served && method !== "HEAD" && ![404, 405].includes(sent.status)) {
              problems.push(`a path no route serves answered ${sent.status}`);
            }
            if (problems.length > 0) failWith(`${method} ${target}`, problems, sent);
          },
        ),
        { file: FILE, runs: FUZZ_RUNS * 4 },
      );
    },
    timeoutFor(FUZZ_RUNS * 4, 50),
  );

  it("afterwards the gateway still serves, and the caller beside the fuzzing was unaffected", async () => {
    const { calls, failures } = await caller.stop();
    if (failures.length > 0) {
      const windows = failures.map((f) => Number(/from (\d+) ms/.exec(f)?.[1] ?? 0));
      const around = history.filter(({ at }) => windows.some((w) => at >= w - 1000 && at <= w + 6000));
      print(
        `slow answers:\n${slow.join("\n")}\nexchanges around the late answers:\n${around.map((h) => `${h.at} ${h.line}`).join("\n")}`,
      );
    }
    expect(failures).toEqual([]);
    expect(calls).toBeGreaterThan(0);
    expect(serving.socket.closedWith).toBeNull();

    const health = await send({ method: "GET", target: "/health", headers: [], body: null }, BOUND_MS);
    expect(health.kind === "answered" && health.status).toBe(200);
    // A new agent and a new model: the gateway still takes agents and routes to them.
    const model = uniqueId("fuzz-after");
    const fresh = await ServingAgent.start([model]);
    try {
      const auth = await renderAuth(VALID_USER, "after-the-fuzzing");
      const response = await send(
        {
          method: "POST",
          target: "/generate",
          headers: [
            ["Content-Type", "application/json"],
            ...auth.map((v): [string, string] => ["Authorization", v]),
          ],
          body: new TextEncoder().encode(JSON.stringify({ prompt: "after the fuzzing", model })),
        },
        BOUND_MS,
      );
      expect(
        response.kind === "answered" && [response.status, JSON.parse(response.text ?? "{}").text],
      ).toEqual([200, "served:after the fuzzing"]);
    } finally {
      fresh.close();
    }
    if (FUZZ_VERBOSE)
      print(
        `fuzz-http: ${FUZZ_RUNS} runs per route, ${calls} well-behaved calls; answers by route:\n${report()}`,
      );
  });
});

/** An operation by method and path, and one request to it with a valid token of `role`. */
async function askDocumented(method: string, path: string, target: string, role: Role) {
  const op = OPERATIONS.find((o) => o.method.toUpperCase() === method && o.path === path);
  const auth = await renderAuth({ ...VALID_USER, role }, CALLER);
  const sent = await send(
    { method, target, headers: auth.map((v): [string, string] => ["Authorization", v]), body: null },
    BOUND_MS,
  );
  return { documented: op === undefined ? [] : errorCodesOf(op), sent };
}

describe("regressions the fuzzing found", () => {
  it("seed 1081916755 (the harness's own): rendering a body changes neither its recipe nor the values it shares", () => {
    // One value object in two mutations (fast-check reuses constants, SMALL_VALUES are shared):
    // the body's root became that object, the extra key was added to it, and the next body that
    // used it was circular.
    const shared: Json = { a: 1 };
    const recipe: BodyRecipe = {
      t: "json",
      base: "empty-object",
      mutations: [
        { op: "set", path: [], value: { v: shared } },
        { op: "extra", path: [], key: "stream", value: { v: shared } },
      ],
      encoding: { e: "utf8" },
    };
    const text = (bytes: Uint8Array | null) => new TextDecoder().decode(bytes ?? new Uint8Array());
    expect(text(renderBody(recipe, undefined))).toBe('{"a":1,"stream":{"a":1}}');
    expect(text(renderBody(recipe, undefined))).toBe('{"a":1,"stream":{"a":1}}');
    expect(shared).toEqual({ a: 1 });
  });

  it("seed 896602227: GET /deployments?model= and GET /ab-tests?status= answer INVALID_REQUEST, and the document lists it", async () => {
    for (const [path, target] of [
      ["/deployments", "/deployments?model="],
      ["/ab-tests", "/ab-tests?status="],
    ] as const) {
      const { documented, sent } = await askDocumented("GET", path, target, "user");
      expect(sent.kind === "answered" && [sent.status, sent.headers.get("X-Error-Code")]).toEqual([
        400,
        "INVALID_REQUEST",
      ]);
      expect(documented).toContain("INVALID_REQUEST");
    }
  });

  it("seed 1152848944: GET /* (and /%2A) carries one request id, the same in X-Request-Id and the body", async () => {
    for (const [target, requestId] of [
      ["/*", null],
      ["/%2A", null],
      ["/*", "fuzz-star-1"],
    ] as const) {
      const sent = await send(
        {
          method: "GET",
          target,
          headers: requestId === null ? [] : [["X-Request-Id", requestId]],
          body: null,
        },
        BOUND_MS,
      );
      if (sent.kind !== "answered") throw new Error(`GET ${target}: ${sent.kind}`);
      const header = sent.headers.get("X-Request-Id");
      expect(sent.status).toBe(404);
      expect(JSON.parse(sent.text ?? "{}").error.requestId).toBe(header);
      if (requestId !== null) expect(header).toBe(requestId);
    }
  });

  it("seed 1100528108: GET /agents/connect?name= with a control character is 400 INVALID_REQUEST, not a 500", async () => {
    for (const name of ["%00", "x%0Ay", "x%0Dy", "%1B%5B31m"]) {
      const auth = await renderAuth({ ...VALID_USER, role: "agent" }, uniqueId("fuzz-named"));
      const sent = await send(
        {
          method: "GET",
          target: `/agents/connect?name=${name}`,
          headers: [["Upgrade", "websocket"], ...auth.map((v): [string, string] => ["Authorization", v])],
          body: null,
        },
        BOUND_MS,
      );
      expect(sent.kind === "answered" && [sent.status, sent.headers.get("X-Error-Code")], name).toEqual([
        400,
        "INVALID_REQUEST",
      ]);
    }
    // A name in any script still connects.
    const auth = await renderAuth({ ...VALID_USER, role: "agent" }, uniqueId("fuzz-named"));
    const sent = await send(
      {
        method: "GET",
        target: "/agents/connect?name=B%C3%BCro-Mac%20%E6%A8%A1%E5%9E%8B",
        headers: [["Upgrade", "websocket"], ...auth.map((v): [string, string] => ["Authorization", v])],
        body: null,
      },
      BOUND_MS,
    );
    expect(sent.kind === "answered" && sent.status).toBe(101);
  });

  // Found by seed 18011945; operations/security.ts lists the code now.
  it("seed 18011945: GET /security/injection-policy?model= answers INVALID_REQUEST, which the document lists", async () => {
    const { documented, sent } = await askDocumented(
      "GET",
      "/security/injection-policy",
      "/security/injection-policy?model=",
      "admin",
    );
    expect(sent.kind === "answered" && sent.headers.get("X-Error-Code")).toBe("INVALID_REQUEST");
    expect(documented).toContain("INVALID_REQUEST");
  });
});
