// The API reference, through the real Worker: /openapi.json covers every route the app serves and
// nothing else, its request examples are bodies the routes accept, its error and answer schemas are
// what the gateway sends, and /docs renders every operation. The document's validation against the
// OpenAPI 3.1 schema runs in Node (test/agent/openapi.test.ts): the validator compiles with `new
// Function`, which workerd forbids.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { app } from "../../gateway/index.ts";
import { OPERATIONS } from "../../gateway/openapi/document.ts";
import type { OperationSpec } from "../../gateway/openapi/operation.ts";
import { ErrorBody, type ErrorCode, OpenAIErrorBody } from "../../schema/api.ts";
import { bearer, gatewayFetch } from "./helpers.ts";

/**
 * Routes of the app that the document leaves out, each with why. None today: the agents' WebSocket
 * upgrade is documented as a GET answered with 101, and /dashboard/ as its redirect.
 */
const NOT_OPERATIONS: readonly string[] = [];

interface Document {
  openapi: string;
  info: { version: string };
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, unknown> };
}

interface Operation {
  operationId: string;
  summary: string;
  requestBody?: { content: Record<string, { example?: unknown }> };
  responses: Record<
    string,
    { content?: Record<string, { schema?: { $ref?: string } }>; "x-error-codes"?: string[] }
  >;
}

async function fetchDocument(): Promise<Document> {
  const response = await gatewayFetch("/openapi.json");
  expect(response.status).toBe(200);
  return (await response.json()) as Document;
}

function documented(document: Document): { method: string; path: string; op: Operation }[] {
  return Object.entries(document.paths).flatMap(([path, item]) =>
    Object.entries(item).map(([method, op]) => ({ method: method.toUpperCase(), path, op })),
  );
}

/** Hono's `/models/:name` (or `:name{regex}`) as OpenAPI writes it: `/models/{name}`. */
const openApiPath = (honoPath: string) => honoPath.replace(/:([A-Za-z0-9_]+)(\{[^}]*\})?/g, "{$1}");

function servedRoutes(): Set<string> {
  return new Set(
    app.routes.filter((r) => r.method !== "ALL").map((r) => `${r.method} ${openApiPath(r.path)}`),
  );
}

const specOf = (operationId: string): OperationSpec => {
  const spec = OPERATIONS.find((o) => o.operationId === operationId);
  if (spec === undefined) throw new Error(`no operation ${operationId}`);
  return spec;
};

describe("GET /openapi.json", () => {
  it("is served without a token, as JSON, the same document every time", async () => {
    const first = await gatewayFetch("/openapi.json");
    expect(first.status).toBe(200);
    expect(first.headers.get("Content-Type")).toMatch(/^application\/json/);
    const text = await first.text();
    const document = JSON.parse(text) as Document;
    expect(document.openapi).toBe("3.1.0");
    expect(document.info.version).toBe(env.ORCHARD_VERSION);
    expect(await (await gatewayFetch("/openapi.json")).text()).toBe(text);
  });

  it("documents every route the app serves", async () => {
    const document = await fetchDocument();
    const inDocument = new Set(documented(document).map(({ method, path }) => `${method} ${path}`));
    const missing = [...servedRoutes()].filter((r) => !inDocument.has(r) && !NOT_OPERATIONS.includes(r));
    expect(missing).toEqual([]);
    expect(inDocument.size).toBeGreaterThanOrEqual(45);
  });

  it("documents no operation the app does not serve", async () => {
    const served = servedRoutes();
    const extra = documented(await fetchDocument())
      .map(({ method, path }) => `${method} ${path}`)
      .filter((r) => !served.has(r));
    expect(extra).toEqual([]);
  });

  it("names each operation once, as the operation list does", async () => {
    const ids = documented(await fetchDocument()).map(({ op }) => op.operationId);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.sort()).toEqual(OPERATIONS.map((o) => o.operationId).sort());
  });
});

/** Codes that mean the gateway refused the body itself (shape, syntax, type, size, a field's limits). */
const BODY_REFUSALS: readonly ErrorCode[] = [
  "INVALID_JSON",
  "INVALID_REQUEST",
  "PAYLOAD_TOO_LARGE",
  "UNSUPPORTED_MEDIA_TYPE",
  "UNSUPPORTED_PARAMETER",
  "METADATA_TOO_LARGE",
  "INVALID_MODEL_NAME",
  "INVALID_VERSION",
  "INVALID_MODEL_ID",
  "INVALID_TAG",
  "INVALID_ALIAS",
  "INVALID_METRICS",
];

/** Path parameters naming nothing: each request gets past its body to a quick 404 (or a 2xx). */
const PATH_VALUES: Record<string, string> = {
  name: "example-missing",
  model_id: "example-missing:1.0.0",
  alias: "stable",
  id: "example-missing",
};

describe("request examples", () => {
  it("each parses with the zod schema its route validates with", async () => {
    const withBodies = documented(await fetchDocument()).filter(
      ({ op }) => op.requestBody?.content["application/json"],
    );
    expect(withBodies.length).toBeGreaterThanOrEqual(12);
    for (const { op } of withBodies) {
      const example = op.requestBody?.content["application/json"]?.example;
      expect(example, op.operationId).toBeDefined();
      const parsed = specOf(op.operationId).body?.schema.safeParse(example);
      expect(parsed?.error?.issues ?? [], op.operationId).toEqual([]);
    }
  });

  it("each is accepted by the running route (whatever it then says about what it names)", async () => {
    const document = await fetchDocument();
    const withBodies = documented(document).filter(({ op }) => op.requestBody?.content["application/json"]);
    const headers = {
      "Content-Type": "application/json",
      "X-Orchard-Timeout-Ms": "2000",
      ...(await bearer({ role: "admin", sub: "openapi-examples" })),
    };
    const refusals: string[] = [];
    for (const { method, path, op } of withBodies) {
      const url = path.replace(/\{([^}]+)\}/g, (_, name: string) =>
        encodeURIComponent(PATH_VALUES[name] ?? name),
      );
      const body = JSON.stringify(op.requestBody?.content["application/json"]?.example);
      const response = await gatewayFetch(url, { method, headers, body });
      const code = response.headers.get("X-Error-Code");
      if (code !== null && (BODY_REFUSALS as string[]).includes(code)) {
        refusals.push(`${method} ${url}: ${response.status} ${await response.text()}`);
      } else await response.body?.cancel();
    }
    expect(refusals).toEqual([]);
  });

  it("the registration example registers a version", async () => {
    const op = (await fetchDocument()).paths["/models/register"]?.post;
    const response = await gatewayFetch("/models/register", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...(await bearer({ role: "admin" })) },
      body: JSON.stringify(op?.requestBody?.content["application/json"]?.example),
    });
    expect([201, 409]).toContain(response.status);
    if (response.status === 409) expect(response.headers.get("X-Error-Code")).toBe("VERSION_EXISTS");
  });
});

describe("answers", () => {
  it("errors have the documented shape: ErrorBody, and OpenAI's under /v1", async () => {
    const document = await fetchDocument();
    for (const [path, body] of [
      ["/models", ErrorBody],
      ["/v1/models", OpenAIErrorBody],
    ] as const) {
      const documented401 = document.paths[path]?.get?.responses["401"];
      expect(documented401?.["x-error-codes"]).toContain("UNAUTHORIZED");
      const ref = documented401?.content?.["application/json"]?.schema?.$ref;
      expect(ref).toBe(`#/components/schemas/${body === ErrorBody ? "ErrorBody" : "OpenAIErrorBody"}`);
      const response = await gatewayFetch(path);
      expect(response.status).toBe(401);
      expect(body.safeParse(await response.json()).success).toBe(true);
    }
  });

  it("an error a route answers with is one its status lists", async () => {
    const document = await fetchDocument();
    const response = await gatewayFetch("/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...(await bearer()) },
      body: JSON.stringify({ prompt: "" }),
    });
    expect(response.status).toBe(400);
    const code = response.headers.get("X-Error-Code");
    expect(document.paths["/generate"]?.post?.responses["400"]?.["x-error-codes"]).toContain(code);
  });

  it("live answers parse with the schemas the document gives them", async () => {
    const admin = await bearer({ role: "admin" });
    for (const [path, operationId] of [
      ["/health", "getHealth"],
      ["/models", "listModels"],
      ["/agents", "listAgents"],
      ["/circuit-breaker/status", "getBreakers"],
      ["/deployments", "listDeployments"],
      ["/ab-tests", "listAbTests"],
    ] as const) {
      const response = await gatewayFetch(path, { headers: admin });
      expect(response.status, path).toBe(200);
      const schema = specOf(operationId).responses["200"]?.json;
      const parsed = schema?.safeParse(await response.json());
      expect(parsed?.error?.issues ?? [], path).toEqual([]);
    }
  });
});

describe("GET /docs", () => {
  it("is one page without scripts or external assets, with landmarks and headings", async () => {
    const response = await gatewayFetch("/docs");
    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Type")).toMatch(/^text\/html/);
    expect(response.headers.get("Content-Security-Policy")).toContain("default-src 'none'");
    const html = await response.text();
    expect(html).toMatch(/^<!doctype html>\n<html lang="en">/);
    for (const landmark of ['<nav aria-label="Operations">', '<main id="main">', "<h1>", '<a class="skip"']) {
      expect(html).toContain(landmark);
    }
    expect(html).not.toMatch(/<script|\ssrc=|href="(https?:)?\/\//i);
    expect(html.length).toBeLessThan(160_000);
  });

  it("names every operation, with its method, path and summary", async () => {
    const html = await (await gatewayFetch("/docs")).text();
    const escapeText = (t: string) =>
      t.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
    const missing = documented(await fetchDocument()).filter(
      ({ method, path, op }) =>
        !html.includes(`${method}</span> <code>${escapeText(path)}</code>`) ||
        !html.includes(escapeText(op.summary)),
    );
    expect(missing.map(({ method, path }) => `${method} ${path}`)).toEqual([]);
  });
});
