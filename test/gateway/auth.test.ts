// JWT authentication and roles, through the real Worker (and with altered env for config cases).
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import worker from "../../gateway/index.ts";
import { VerifiedTokens } from "../../gateway/middleware/auth/verified-tokens.ts";
import { BASE, bearer, gatewayFetch, sleep, token } from "./helpers.ts";

const ROTATED = { kid: "2026-rotated", secret: JSON.parse(env.JWT_SECRETS)["2026-rotated"] as string };

async function models(headers: Record<string, string>) {
  return gatewayFetch("/v1/models", { headers });
}

/** Calls the Worker with a modified env (config cases that bindings cannot vary per test). */
async function withEnv(overrides: Partial<Env>, path: string, headers: Record<string, string> = {}) {
  const ctx = createExecutionContext();
  const response = await worker.fetch(
    new Request(`${BASE}${path}`, { headers }),
    { ...env, ...overrides },
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return response;
}

describe("auth", () => {
  it("accepts a valid user token, and an admin where a user is required", async () => {
    expect((await models(await bearer())).status).toBe(200);
    expect((await models(await bearer({ role: "admin" }))).status).toBe(200);
  });

  it("401 UNAUTHORIZED without a bearer token, in the route family's error shape", async () => {
    const openai = await models({});
    expect(openai.status).toBe(401);
    expect(await openai.json()).toEqual({
      error: {
        message: "missing bearer token",
        type: "authentication_error",
        param: null,
        code: "UNAUTHORIZED",
      },
    });
    const own = await gatewayFetch("/agents", { headers: { Authorization: "Basic abc" } });
    expect(own.status).toBe(401);
    expect(await own.json()).toEqual({
      error: {
        code: "UNAUTHORIZED",
        message: "missing bearer token",
        requestId: own.headers.get("X-Request-Id"),
      },
    });
  });

  it("401 TOKEN_EXPIRED for an expired token, 401 UNAUTHORIZED without exp", async () => {
    const expired = await models(await bearer({ expiresIn: -60 }));
    expect(expired.status).toBe(401);
    expect(await expired.json()).toMatchObject({ error: { code: "TOKEN_EXPIRED" } });
    const noExp = await models(await bearer({ expiresIn: null }));
    expect(noExp.status).toBe(401);
    expect(await noExp.json()).toMatchObject({ error: { code: "UNAUTHORIZED" } });
  });

  it("403 FORBIDDEN for the wrong role or none", async () => {
    for (const [path, role] of [
      ["/v1/models", "agent"],
      ["/agents", "user"],
      ["/v1/models", "root"],
    ] as const) {
      const response = await gatewayFetch(path, { headers: await bearer({ role }) });
      expect(response.status, `${role} on ${path}`).toBe(403);
      expect(await response.json()).toMatchObject({ error: { code: "FORBIDDEN" } });
    }
    const noRole = await new SignJWT({})
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("x")
      .setExpirationTime("5m")
      .sign(new TextEncoder().encode(env.JWT_SECRET));
    expect((await models({ Authorization: `Bearer ${noRole}` })).status).toBe(403);
  });

  it("401 for a tampered token, a foreign secret, or alg none", async () => {
    const [header, , signature] = (await token({ role: "user" })).split(".");
    const forged = btoa(JSON.stringify({ sub: "x", role: "admin", exp: Math.floor(Date.now() / 1000) + 60 }))
      .replaceAll("=", "")
      .replaceAll("+", "-")
      .replaceAll("/", "_");
    const tampered = await gatewayFetch("/agents", {
      headers: { Authorization: `Bearer ${header}.${forged}.${signature}` },
    });
    expect(tampered.status).toBe(401);

    expect((await models(await bearer({ secret: "some-other-secret-entirely-0123456789" }))).status).toBe(
      401,
    );

    const none = `${btoa(JSON.stringify({ alg: "none" })).replaceAll("=", "")}.${forged}.`;
    expect((await models({ Authorization: `Bearer ${none}` })).status).toBe(401);
  });

  it("rotation: a token with a kid is verified with JWT_SECRETS[kid] only", async () => {
    expect((await models(await bearer({ kid: ROTATED.kid, secret: ROTATED.secret }))).status).toBe(200);
    expect((await models(await bearer({ kid: ROTATED.kid }))).status).toBe(401);
    expect((await models(await bearer({ kid: "unknown-kid", secret: ROTATED.secret }))).status).toBe(401);
  });

  it("checks iss and aud when configured", async () => {
    const config = { JWT_ISSUER: "https://orchard.test", JWT_AUDIENCE: "orchard" } as unknown as Partial<Env>;
    expect((await withEnv(config, "/v1/models", await bearer())).status).toBe(401);
    const good = await new SignJWT({ role: "user" })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("x")
      .setIssuer("https://orchard.test")
      .setAudience("orchard")
      .setExpirationTime("5m")
      .sign(new TextEncoder().encode(env.JWT_SECRET));
    expect((await withEnv(config, "/v1/models", { Authorization: `Bearer ${good}` })).status).toBe(200);
  });

  it("fails closed with a plain 500 when JWT_SECRET is unset or JWT_SECRETS is malformed; /health still answers", async () => {
    for (const overrides of [{ JWT_SECRET: "" }, { JWT_SECRETS: "{not json" }]) {
      const response = await withEnv(overrides, "/v1/models", await bearer());
      expect(response.status).toBe(500);
      expect(await response.json()).toEqual({
        error: { message: "internal error", type: "server_error", param: null, code: "INTERNAL" },
      });
    }
    expect((await withEnv({ JWT_SECRET: "" }, "/health")).status).toBe(200);
  });
});

describe("verified-token cache", () => {
  it("a token that verified once still expires at its exp", async () => {
    const headers = await bearer({ expiresIn: 2 });
    expect((await models(headers)).status).toBe(200);
    expect((await models(headers)).status).toBe(200); // served from the cache
    const exp = JSON.parse(
      atob((headers.Authorization.split(".")[1] ?? "").replace(/-/g, "+").replace(/_/g, "/")),
    ).exp as number;
    await sleep(exp * 1000 - Date.now() + 50);
    const expired = await models(headers);
    expect(expired.status).toBe(401);
    expect(await expired.json()).toMatchObject({ error: { code: "TOKEN_EXPIRED" } });
  });

  it("a cached token is checked again when the keys change, and its role still is per route", async () => {
    const headers = await bearer({ sub: "cached-user" });
    expect((await withEnv({}, "/v1/models", headers)).status).toBe(200);
    const rotated = { JWT_SECRET: "a-different-secret-of-at-least-32-bytes!!" } as Partial<Env>;
    expect((await withEnv(rotated, "/v1/models", headers)).status).toBe(401);
    expect((await withEnv({ JWT_SECRET: "" }, "/v1/models", headers)).status).toBe(500);
    expect((await withEnv({}, "/v1/models", headers)).status).toBe(200);
    expect((await withEnv({}, "/agents", headers)).status).toBe(403);
  });

  // The cache compares key configurations by identity (a new configuration is a new KeySources).
  const settings = { name: "one configuration" };
  const claims = (exp: number, reuseUntilMs = Number.POSITIVE_INFINITY) => ({
    sub: "x",
    role: "user" as const,
    exp,
    jti: undefined,
    reuseUntilMs,
  });

  it("serves an entry until exp (exclusive, in whole seconds), under the same settings only", () => {
    const cache = new VerifiedTokens(10);
    cache.set("t", settings, claims(100));
    expect(cache.get("t", settings, 99_999)?.sub).toBe("x");
    expect(cache.get("t", { ...settings }, 0)).toBeUndefined();
    expect(cache.get("t", settings, 100_000)).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it("serves a JWKS-verified entry only until its reuse deadline, even before exp", () => {
    const cache = new VerifiedTokens(10);
    cache.set("t", settings, claims(1e10, 5_000));
    expect(cache.get("t", settings, 4_999)?.sub).toBe("x");
    expect(cache.get("t", settings, 5_000)).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it("forgets everything when the settings change, and stays within its bound", () => {
    const cache = new VerifiedTokens(3);
    for (const t of ["a", "b", "c", "d"]) cache.set(t, settings, claims(1e10));
    expect(cache.size).toBe(3);
    expect(cache.get("a", settings, 0)).toBeUndefined();
    expect(cache.get("d", settings, 0)?.sub).toBe("x");
    cache.set("e", { name: "rotated" }, claims(1e10));
    expect(cache.size).toBe(1);
    expect(cache.get("d", settings, 0)).toBeUndefined();
  });
});
