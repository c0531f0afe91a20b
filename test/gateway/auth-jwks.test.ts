// Identity-provider tokens (JWT_JWKS_URL) through the real Worker. workerd tests cannot open a port,
// so the provider is a test double behind the Worker's outbound fetch (the Worker runs in this
// isolate): it serves real key sets of keys made here, counts its fetches and can fail on demand.
// test/e2e/jwks.test.ts does the same against a real HTTP server. Also: the minimum secret length.
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { type CryptoKey, exportJWK, exportSPKI, generateKeyPair, type JWK, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import worker from "../../gateway/index.ts";
import { BASE, bearer, sleep } from "./helpers.ts";

type Alg = "RS256" | "ES256" | "EdDSA";

interface SigningKey {
  kid: string;
  alg: Alg;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
}

type Mode = "up" | "down" | "status-500" | "hang" | "not-json";

/** A provider's JWKS endpoint: the keys it publishes, and how it answers. */
class IdentityProvider {
  static #count = 0;
  readonly url = `https://idp-${++IdentityProvider.#count}.test/.well-known/jwks.json`;
  readonly published = new Map<string, JWK>();
  hits = 0;
  mode: Mode = "up";

  async key(alg: Alg, kid = `${alg.toLowerCase()}-${crypto.randomUUID().slice(0, 8)}`): Promise<SigningKey> {
    const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
    const key = { kid, alg, privateKey, publicKey };
    this.published.set(kid, { ...(await exportJWK(publicKey)), kid, alg, use: "sig" });
    return key;
  }

  withdraw(kid: string): void {
    this.published.delete(kid);
  }

  async answer(signal: AbortSignal | null | undefined): Promise<Response> {
    this.hits++;
    if (this.mode === "down") throw new TypeError("Network connection lost.");
    if (this.mode === "status-500") return new Response("oops", { status: 500 });
    if (this.mode === "not-json") return new Response("<html>", { headers: { "Content-Type": "text/html" } });
    if (this.mode === "hang") {
      return new Promise((_, reject) => signal?.addEventListener("abort", () => reject(signal.reason)));
    }
    return Response.json({ keys: [...this.published.values()] });
  }
}

const providers = new Map<string, IdentityProvider>();
const realFetch = globalThis.fetch;

beforeAll(() => {
  vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
    const request = new Request(input as RequestInfo, init);
    const provider = providers.get(request.url);
    return provider === undefined ? realFetch(request) : provider.answer(init?.signal ?? request.signal);
  });
});
afterAll(() => vi.restoreAllMocks());

function provider(): IdentityProvider {
  const p = new IdentityProvider();
  providers.set(p.url, p);
  return p;
}

interface Claims {
  sub?: string;
  role?: unknown;
  exp?: number;
  nbf?: number;
  iss?: string;
  aud?: string;
  [claim: string]: unknown;
}

const now = () => Math.floor(Date.now() / 1000);

function sign(key: SigningKey, claims: Claims = {}, header: Record<string, unknown> = {}): Promise<string> {
  const { sub = "idp-user", exp = now() + 300, ...rest } = claims;
  return new SignJWT({ role: "user", ...rest })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, ...header })
    .setSubject(sub)
    .setExpirationTime(exp)
    .sign(key.privateKey);
}

/** The Worker with these vars; GET /models needs role user and only D1 (no hub). */
async function call(vars: Record<string, string>, token: string, path = "/models"): Promise<Response> {
  const ctx = createExecutionContext();
  const response = await worker.fetch(
    new Request(`${BASE}${path}`, { headers: { Authorization: `Bearer ${token}` } }),
    { ...env, ...vars } as Env,
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return response;
}

async function expectRefused(response: Response, status: number, code: string): Promise<void> {
  expect(response.status).toBe(status);
  const body = (await response.json()) as { error: { code: string; message: string } };
  expect(body.error.code).toBe(code);
  // Nothing of jose's or the provider's own words reaches the caller.
  expect(body.error.message).not.toMatch(/jose|ERR_|idp-\d|Network|Expected 200|Timeout|stack|\.ts/i);
}

const b64url = (value: unknown) =>
  btoa(JSON.stringify(value)).replaceAll("=", "").replaceAll("+", "-").replaceAll("/", "_");

describe("JWKS key source", () => {
  it("accepts RS256, ES256 and EdDSA tokens from the provider's key set, fetched once", async () => {
    const idp = provider();
    const vars = { JWT_JWKS_URL: idp.url };
    const keys = [await idp.key("RS256"), await idp.key("ES256"), await idp.key("EdDSA")];
    for (const key of keys) {
      const response = await call(vars, await sign(key, { sub: `user-${key.alg}` }));
      expect(response.status, key.alg).toBe(200);
    }
    // The first token fetched the set; the others found their keys in it.
    expect(idp.hits).toBe(1);
    // A key published later is fetched for once its kid appears (cooldown 0 here), then served.
    const later = await idp.key("ES256");
    const cooled = { ...vars, JWT_JWKS_COOLDOWN_MS: "0" };
    for (const i of [1, 2, 3])
      expect((await call(cooled, await sign(later, { sub: `many-${i}` }))).status).toBe(200);
    expect(idp.hits).toBe(2);
  });

  it("picks up a rotated key (new kid) after the cooldown, and refuses new tokens of a withdrawn one", async () => {
    const idp = provider();
    const vars = { JWT_JWKS_URL: idp.url, JWT_JWKS_COOLDOWN_MS: "2000" };
    const old = await idp.key("RS256", "2026-01");
    expect((await call(vars, await sign(old))).status).toBe(200);
    expect(idp.hits).toBe(1);
    const fetchedAt = Date.now();

    // The provider rotates: a new key published, the old one withdrawn.
    const rotated = await idp.key("RS256", "2026-02");
    idp.withdraw(old.kid);
    const early = await call(vars, await sign(rotated, { sub: "early" }));
    // Within the cooldown an unknown kid does not refetch: refused, and no fetch.
    expect(Date.now() - fetchedAt, "still within the cooldown").toBeLessThan(2000);
    await expectRefused(early, 401, "UNAUTHORIZED");
    expect(idp.hits).toBe(1);
    await sleep(Math.max(0, fetchedAt + 2100 - Date.now()));
    expect((await call(vars, await sign(rotated, { sub: "later" }))).status).toBe(200);
    expect(idp.hits).toBe(2);
    // The refetched set no longer has the old key: a token it signs now is refused.
    await expectRefused(await call(vars, await sign(old, { sub: "new-token-old-key" })), 401, "UNAUTHORIZED");
  });

  it("refuses an unknown kid, alg none, HS256 signed with the public key, and an alg outside the allow-list", async () => {
    const idp = provider();
    const vars = { JWT_JWKS_URL: idp.url };
    const rsa = await idp.key("RS256");
    expect((await call(vars, await sign(rsa))).status).toBe(200);
    const hits = idp.hits;

    const unknown = await sign(rsa, {}, { kid: "nobody-has-this-kid" });
    await expectRefused(await call(vars, unknown), 401, "UNAUTHORIZED");

    const claims = { sub: "mallory", role: "admin", exp: now() + 300 };
    const none = `${b64url({ alg: "none", kid: rsa.kid })}.${b64url(claims)}.`;
    await expectRefused(await call(vars, none, "/tokens/revoked"), 401, "UNAUTHORIZED");

    // The key-confusion attack: the public key (as PEM, and as JWK bytes) used as an HMAC secret.
    const pem = await exportSPKI(rsa.publicKey);
    for (const secret of [pem, JSON.stringify(await exportJWK(rsa.publicKey))]) {
      const confused = await new SignJWT(claims)
        .setProtectedHeader({ alg: "HS256", kid: rsa.kid })
        .sign(new TextEncoder().encode(secret));
      await expectRefused(await call(vars, confused, "/tokens/revoked"), 401, "UNAUTHORIZED");
    }
    // Those were refused on their alg, before any key lookup: no fetch for them.
    expect(idp.hits).toBe(hits);

    // The allow-list is per source: an RS256 key is refused when the provider may only use ES256.
    const esOnly = { JWT_JWKS_URL: idp.url, JWT_JWKS_ALGORITHMS: "ES256" };
    await expectRefused(await call(esOnly, await sign(rsa, { sub: "rs-not-allowed" })), 401, "UNAUTHORIZED");
  });

  it("refuses HS* and none in JWT_JWKS_ALGORITHMS, and a plain-http URL, as a configuration error (500)", async () => {
    const idp = provider();
    const key = await idp.key("ES256");
    const token = await sign(key);
    const refused: Record<string, string>[] = [
      { JWT_JWKS_URL: idp.url, JWT_JWKS_ALGORITHMS: "ES256,HS256" },
      { JWT_JWKS_URL: idp.url, JWT_JWKS_ALGORITHMS: "none" },
      { JWT_JWKS_URL: "http://idp.example.com/jwks.json" },
      { JWT_JWKS_URL: "not a url" },
    ];
    for (const vars of refused) {
      const errors = vi.spyOn(console, "error");
      const response = await call(vars, token);
      expect(response.status, JSON.stringify(vars)).toBe(500);
      expect(await response.json()).toEqual({
        error: { code: "INTERNAL", message: "internal error", requestId: expect.any(String) },
      });
      expect(errors.mock.calls.some(([line]) => /JWT_JWKS_(URL|ALGORITHMS)/.test(String(line)))).toBe(true);
      errors.mockRestore();
    }
  });

  it("exp is exact; nbf is honoured with JWT_CLOCK_TOLERANCE_S (default 30 s)", async () => {
    const idp = provider();
    const vars = { JWT_JWKS_URL: idp.url };
    const key = await idp.key("ES256");
    await expectRefused(await call(vars, await sign(key, { exp: now() - 120 })), 401, "TOKEN_EXPIRED");
    // Expired 5 s ago: inside the tolerance, but the tolerance is for nbf only.
    await expectRefused(await call(vars, await sign(key, { exp: now() - 5 })), 401, "TOKEN_EXPIRED");

    await expectRefused(await call(vars, await sign(key, { nbf: now() + 120 })), 401, "UNAUTHORIZED");
    expect((await call(vars, await sign(key, { sub: "skewed", nbf: now() + 10 }))).status).toBe(200);
    const strict = { ...vars, JWT_CLOCK_TOLERANCE_S: "0" };
    await expectRefused(
      await call(strict, await sign(key, { sub: "strict", nbf: now() + 10 })),
      401,
      "UNAUTHORIZED",
    );
    // The same for the gateway's own HS256 tokens.
    const own = await new SignJWT({ role: "user" })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("own-skewed")
      .setNotBefore(now() + 10)
      .setExpirationTime("5m")
      .sign(new TextEncoder().encode(env.JWT_SECRET));
    expect((await call({}, own)).status).toBe(200);
    await expectRefused(await call({ JWT_CLOCK_TOLERANCE_S: "0" }, own), 401, "UNAUTHORIZED");
  });

  it("checks iss and aud when set", async () => {
    const idp = provider();
    const vars = { JWT_JWKS_URL: idp.url, JWT_ISSUER: "https://idp.test/", JWT_AUDIENCE: "orchard" };
    const key = await idp.key("RS256");
    const good = { iss: "https://idp.test/", aud: "orchard" };
    expect((await call(vars, await sign(key, { sub: "iss-ok", ...good }))).status).toBe(200);
    await expectRefused(
      await call(vars, await sign(key, { ...good, iss: "https://evil.test/" })),
      401,
      "UNAUTHORIZED",
    );
    await expectRefused(
      await call(vars, await sign(key, { ...good, aud: "someone-else" })),
      401,
      "UNAUTHORIZED",
    );
    await expectRefused(await call(vars, await sign(key, { sub: "no-iss" })), 401, "UNAUTHORIZED");
  });

  it("maps the role claim (JWT_ROLE_CLAIM): a string, the best role of an array, a dotted path; none is 403", async () => {
    const idp = provider();
    const key = await idp.key("ES256");
    const base = { JWT_JWKS_URL: idp.url };
    await expectRefused(await call(base, await sign(key, { role: undefined })), 403, "FORBIDDEN");
    await expectRefused(await call(base, await sign(key, { role: "superuser" })), 403, "FORBIDDEN");

    const groups = { ...base, JWT_ROLE_CLAIM: "https://orchard.test/roles" };
    const admin = await sign(key, {
      sub: "grouped-admin",
      role: undefined,
      "https://orchard.test/roles": ["staff", "user", "admin"],
    });
    expect((await call(groups, admin, "/tokens/revoked")).status).toBe(200);
    const userOnly = await sign(key, {
      sub: "grouped-user",
      role: "admin",
      "https://orchard.test/roles": ["user"],
    });
    // The configured claim counts, not `role`.
    await expectRefused(await call(groups, userOnly, "/tokens/revoked"), 403, "FORBIDDEN");
    expect((await call(groups, userOnly)).status).toBe(200);

    const keycloak = { ...base, JWT_ROLE_CLAIM: "realm_access.roles" };
    const nested = await sign(key, { sub: "kc-admin", role: undefined, realm_access: { roles: ["admin"] } });
    expect((await call(keycloak, nested, "/tokens/revoked")).status).toBe(200);
  });

  it("a provider that is down, failing, slow or not serving JSON answers 503 AUTH_UNAVAILABLE, never hangs, and is logged", async () => {
    for (const mode of ["down", "status-500", "hang", "not-json"] as const) {
      const idp = provider();
      const key = await idp.key("RS256");
      idp.mode = mode;
      const errors = vi.spyOn(console, "error");
      const started = Date.now();
      const response = await call({ JWT_JWKS_URL: idp.url, JWT_JWKS_TIMEOUT_MS: "300" }, await sign(key));
      const tookMs = Date.now() - started;
      await expectRefused(response, 503, "AUTH_UNAVAILABLE");
      expect(response.headers.get("Retry-After")).toBe("5");
      expect(tookMs, mode).toBeLessThan(mode === "hang" ? 2_000 : 1_000);
      expect(
        errors.mock.calls.some(([line]) => String(line).includes(idp.url)),
        mode,
      ).toBe(true);
      errors.mockRestore();
      // The provider back: the next request fetches again and is served.
      idp.mode = "up";
      expect((await call({ JWT_JWKS_URL: idp.url }, await sign(key, { sub: `back-${mode}` }))).status).toBe(
        200,
      );
    }
  });

  it("the gateway's own tokens keep working while the provider is down", async () => {
    const idp = provider();
    idp.mode = "down";
    const vars = { JWT_JWKS_URL: idp.url };
    const own = (await bearer({ sub: "own-while-down" })).Authorization.slice("Bearer ".length);
    expect((await call(vars, own)).status).toBe(200);
    const rotated = JSON.parse(env.JWT_SECRETS) as Record<string, string>;
    const [kid, secret] = Object.entries(rotated)[0] as [string, string];
    const keyed = (await bearer({ sub: "own-kid-while-down", kid, secret })).Authorization.slice(7);
    expect((await call(vars, keyed)).status).toBe(200);
    expect(idp.hits).toBe(0);
    // An HS256 token whose kid JWT_SECRETS does not know goes to the JWKS and meets its allow-list.
    const strayKid = (await bearer({ sub: "stray", kid: "not-a-secret-kid" })).Authorization.slice(7);
    await expectRefused(await call(vars, strayKid), 401, "UNAUTHORIZED");
    expect(idp.hits).toBe(0);
  });
});

describe("minimum secret length (32 bytes)", () => {
  const ownToken = async (secret: string, kid?: string) =>
    (await bearer({ sub: "len", secret, ...(kid ? { kid } : {}) })).Authorization.slice(7);

  it("refuses a short JWT_SECRET with a clear log line and a plain 500; 32 bytes are enough", async () => {
    const short = "x".repeat(31);
    const errors = vi.spyOn(console, "error");
    const response = await call({ JWT_SECRET: short }, await ownToken(short));
    expect(response.status).toBe(500);
    expect(await response.json()).toEqual({
      error: { code: "INTERNAL", message: "internal error", requestId: expect.any(String) },
    });
    const lines = errors.mock.calls.map(([line]) => String(line));
    expect(lines.some((l) => l.includes("JWT_SECRET is shorter than 32 bytes"))).toBe(true);
    // The log names the problem, never the secret.
    expect(lines.some((l) => l.includes(short))).toBe(false);
    errors.mockRestore();

    const exact = "y".repeat(32);
    expect((await call({ JWT_SECRET: exact }, await ownToken(exact))).status).toBe(200);
    // Bytes, not characters: 16 two-byte characters are 32 bytes; 31 of them plus... fewer are not.
    const wide = "é".repeat(16);
    expect((await call({ JWT_SECRET: wide }, await ownToken(wide))).status).toBe(200);
    const narrow = "é".repeat(15);
    expect((await call({ JWT_SECRET: narrow }, await ownToken(narrow))).status).toBe(500);
  });

  it("refuses a short secret in JWT_SECRETS for every request, not only that kid's", async () => {
    const secrets = JSON.stringify({ good: "g".repeat(40), weak: "too-short" });
    const errors = vi.spyOn(console, "error");
    const response = await call({ JWT_SECRETS: secrets }, await ownToken("g".repeat(40), "good"));
    expect(response.status).toBe(500);
    expect(
      errors.mock.calls.some(([line]) => /JWT_SECRETS: the secret of kid weak is shorter/.test(String(line))),
    ).toBe(true);
    errors.mockRestore();
  });

  it("the test configuration's own secrets are long enough", () => {
    const bytes = (s: string) => new TextEncoder().encode(s).byteLength;
    expect(bytes(env.JWT_SECRET)).toBeGreaterThanOrEqual(32);
    for (const secret of Object.values(JSON.parse(env.JWT_SECRETS) as Record<string, string>)) {
      expect(bytes(secret)).toBeGreaterThanOrEqual(32);
    }
  });
});
