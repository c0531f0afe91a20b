// CORS for browser clients (CORS_ORIGINS, CORS_CREDENTIALS) and the security headers every answer
// carries, without overriding the CSP a route sets for itself (/dashboard, /docs).
import { afterEach, describe, expect, it, vi } from "vitest";
import { parseCors } from "../../gateway/security/config.ts";
import { bearer, gatewayFetch, postJson, TestAgent, trackedAgents, uniqueId } from "./helpers.ts";
import { answer, fetchWithVars } from "./security-helpers.ts";

afterEach(() => vi.restoreAllMocks());

const APP = "https://app.example";
const LIST = { CORS_ORIGINS: `${APP}, https://ops.example:8443` };

function preflight(vars: Record<string, string>, origin: string, headers = "authorization, content-type") {
  return fetchWithVars(vars, "/v1/chat/completions", {
    method: "OPTIONS",
    headers: {
      Origin: origin,
      "Access-Control-Request-Method": "POST",
      "Access-Control-Request-Headers": headers,
    },
  });
}

const vary = (response: Response) => (response.headers.get("Vary") ?? "").split(/,\s*/);

describe("parseCors", () => {
  it("reads a list of origins, '*', or nothing", () => {
    expect(parseCors("", "true")).toEqual({ origins: new Set(), anyOrigin: false, credentials: false });
    const list = parseCors(" https://a.example,https://b.example:8443  http://localhost:5173 ", "true");
    expect([...list.origins]).toEqual([
      "https://a.example",
      "https://b.example:8443",
      "http://localhost:5173",
    ]);
    expect(list.credentials).toBe(true);
  });

  it("refuses credentials with '*' and origins that are not origins, logging both", () => {
    const errors = vi.spyOn(console, "error");
    expect(parseCors("*", "true")).toEqual({ origins: new Set(), anyOrigin: true, credentials: false });
    const list = parseCors("https://ok.example, ftp//nope, https://x.example/path, *, null", "false");
    expect([...list.origins]).toEqual(["https://ok.example"]);
    expect(errors.mock.calls.map(([l]) => String(l)).join("\n")).toMatch(
      /CORS_CREDENTIALS is refused[\s\S]*not an origin/,
    );
  });
});

describe("CORS", () => {
  it("is off without CORS_ORIGINS: no Access-Control headers, a preflight is not answered as one", async () => {
    const response = await preflight({ CORS_ORIGINS: "" }, APP);
    expect(response.status).toBe(405);
    expect(response.headers.get("Access-Control-Allow-Origin")).toBeNull();
    const health = await fetchWithVars({ CORS_ORIGINS: "" }, "/health", { headers: { Origin: APP } });
    expect([...health.headers.keys()].filter((k) => k.startsWith("access-control"))).toEqual([]);
  });

  it("answers a preflight from a listed origin with 204, before auth, allowing only the allowed headers", async () => {
    const response = await preflight(
      LIST,
      APP,
      "Authorization, Content-Type, X-Request-Id, X-Orchard-User, X-Orchard-Timeout-Ms, X-Evil, Cookie",
    );
    expect(response.status).toBe(204);
    expect(response.headers.get("Access-Control-Allow-Origin")).toBe(APP);
    expect(response.headers.get("Access-Control-Allow-Methods")).toBe("GET, HEAD, POST, PUT, DELETE, PATCH");
    expect(response.headers.get("Access-Control-Allow-Headers")).toBe(
      "authorization, content-type, x-request-id, x-orchard-user, x-orchard-timeout-ms",
    );
    expect(response.headers.get("Access-Control-Max-Age")).toBe("600");
    expect(response.headers.get("Access-Control-Allow-Credentials")).toBeNull();
    expect(vary(response)).toEqual(expect.arrayContaining(["Origin", "Access-Control-Request-Headers"]));
    expect(await response.text()).toBe("");
  });

  it("a preflight from another origin gets no Allow-Origin, so the browser refuses", async () => {
    const response = await preflight(LIST, "https://evil.example");
    expect(response.status).toBe(204);
    expect(response.headers.get("Access-Control-Allow-Origin")).toBeNull();
    expect(response.headers.get("Access-Control-Allow-Methods")).toBeNull();
    expect(vary(response)).toContain("Origin");
  });

  it("an actual request from a listed origin gets Allow-Origin and the exposed headers, errors too", async () => {
    const ok = await fetchWithVars(LIST, "/health", { headers: { Origin: "https://ops.example:8443" } });
    expect(ok.headers.get("Access-Control-Allow-Origin")).toBe("https://ops.example:8443");
    const exposed = (ok.headers.get("Access-Control-Expose-Headers") ?? "").split(", ");
    expect(exposed).toEqual(
      expect.arrayContaining([
        "X-Request-Id",
        "X-Orchard-Model",
        "X-Orchard-Variant",
        "RateLimit",
        "RateLimit-Policy",
        "Retry-After",
      ]),
    );
    expect(vary(ok)).toContain("Origin");
    const unauthorized = await fetchWithVars(LIST, "/v1/models", { headers: { Origin: APP } });
    expect(unauthorized.status).toBe(401);
    expect(unauthorized.headers.get("Access-Control-Allow-Origin")).toBe(APP);
  });

  it("another origin's request gets no CORS headers but Vary: Origin (caches must not mix them)", async () => {
    const response = await fetchWithVars(LIST, "/health", { headers: { Origin: "https://evil.example" } });
    expect(response.status).toBe(200);
    expect(response.headers.get("Access-Control-Allow-Origin")).toBeNull();
    expect(response.headers.get("Access-Control-Expose-Headers")).toBeNull();
    expect(vary(response)).toContain("Origin");
  });

  it("credentials only with listed origins; '*' allows any origin without them and without Vary", async () => {
    const withCredentials = await preflight({ ...LIST, CORS_CREDENTIALS: "true" }, APP);
    expect(withCredentials.headers.get("Access-Control-Allow-Credentials")).toBe("true");
    const any = { CORS_ORIGINS: "*", CORS_CREDENTIALS: "true" };
    const star = await preflight(any, "https://anyone.example");
    expect(star.headers.get("Access-Control-Allow-Origin")).toBe("*");
    expect(star.headers.get("Access-Control-Allow-Credentials")).toBeNull();
    expect(vary(star)).not.toContain("Origin");
    const actual = await fetchWithVars(any, "/health", { headers: { Origin: "https://anyone.example" } });
    expect(actual.headers.get("Access-Control-Allow-Origin")).toBe("*");
    expect(actual.headers.get("Access-Control-Allow-Credentials")).toBeNull();
  });

  it("a bare OPTIONS (no preflight headers) is not a preflight", async () => {
    const response = await fetchWithVars(LIST, "/health", { method: "OPTIONS", headers: { Origin: APP } });
    expect(response.status).toBe(405);
  });
});

describe("security headers", () => {
  const agents = trackedAgents();
  const API_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "x-frame-options": "DENY",
  };
  const expectApiHeaders = (response: Response, what: string) => {
    for (const [name, value] of Object.entries(API_HEADERS))
      expect(response.headers.get(name), `${what}: ${name}`).toBe(value);
  };

  it("are on every kind of answer: JSON, errors of each shape, 404, 405", async () => {
    expectApiHeaders(await gatewayFetch("/health"), "/health");
    expectApiHeaders(await gatewayFetch("/v1/models"), "401 on /v1");
    expectApiHeaders(await gatewayFetch("/nowhere"), "404");
    expectApiHeaders(await gatewayFetch("/generate"), "405");
    expectApiHeaders(await postJson("/generate", { prompt: "" }), "400");
    expectApiHeaders(
      await gatewayFetch("/metrics", { headers: await bearer({ role: "admin" }) }),
      "/metrics",
    );
  });

  it("are on answers the hub rendered (their headers are copied, not immutable), streamed or not", async () => {
    const model = uniqueId("sec-headers");
    const agent = await agents.serving(model);
    const whole = postJson("/generate", { prompt: "hi", model });
    await answer(agent, ["hello"]);
    const response = await whole;
    expect(response.status).toBe(200);
    expectApiHeaders(response, "hub JSON");
    const streamed = postJson("/generate", { prompt: "hi", model, stream: true });
    await answer(agent, ["hello"]);
    const stream = await streamed;
    expectApiHeaders(stream, "hub SSE");
    await stream.text();
  });

  it("leave a route's own CSP alone: /dashboard's and /docs'", async () => {
    const dashboard = await gatewayFetch("/dashboard");
    expect(dashboard.headers.get("content-security-policy")).toMatch(
      /^default-src 'none'; script-src 'self'/,
    );
    expect(dashboard.headers.get("x-content-type-options")).toBe("nosniff");
    const docs = await gatewayFetch("/docs");
    expect(docs.headers.get("content-security-policy")).toContain("style-src 'unsafe-inline'");
    expect(docs.headers.get("strict-transport-security")).toBe(API_HEADERS["strict-transport-security"]);
  });

  it("do not break an agent's WebSocket upgrade (a Durable Object's 101)", async () => {
    const agent = agents.adopt(await TestAgent.ready());
    expect(agent.ws.readyState).toBe(WebSocket.OPEN);
    const refused = await TestAgent.upgrade(uniqueId("agent"), undefined, "user");
    expect(refused.status).toBe(403);
    expectApiHeaders(refused, "403 upgrade");
  });
});
