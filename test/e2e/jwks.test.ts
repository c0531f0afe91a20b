// Identity-provider tokens against the real Worker in workerd (test/helpers/stack.ts) and a real
// JWKS server on this machine (node:http): RS256, ES256 and EdDSA accepted, a rotated key picked up
// after the refetch, the refusals (unknown kid, HS256 made with the public key, alg none, expired,
// nbf, iss/aud), a key server that fails, hangs or drops the connection, and revocation of a
// provider's token.
import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { type CryptoKey, exportJWK, exportSPKI, generateKeyPair, type JWK, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mintToken } from "../../scripts/lib/token.ts";
import { type Stack, startStack } from "../helpers/stack.ts";

type Alg = "RS256" | "ES256" | "EdDSA";
type Mode = "up" | "status-500" | "hang" | "reset";

interface SigningKey {
  kid: string;
  alg: Alg;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
}

const ISSUER = "https://idp.orchard.test/";
const AUDIENCE = "orchard";
const COOLDOWN_MS = 2_000;
const TIMEOUT_MS = 1_000;

/** The provider's JWKS endpoint: what it publishes, how it answers, how often it was asked. */
class KeyServer {
  readonly published = new Map<string, JWK>();
  mode: Mode = "up";
  hits = 0;
  readonly #hanging = new Set<ServerResponse>();
  readonly server: Server = createServer((req, res) => this.#answer(req, res));

  async listen(): Promise<number> {
    this.server.listen(0, "127.0.0.1");
    await once(this.server, "listening");
    return (this.server.address() as AddressInfo).port;
  }

  async key(alg: Alg, kid = `${alg.toLowerCase()}-${crypto.randomUUID().slice(0, 8)}`): Promise<SigningKey> {
    const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
    this.published.set(kid, { ...(await exportJWK(publicKey)), kid, alg, use: "sig" });
    return { kid, alg, privateKey, publicKey };
  }

  #answer(req: IncomingMessage, res: ServerResponse): void {
    if (req.url !== "/.well-known/jwks.json") {
      res.writeHead(404).end();
      return;
    }
    this.hits++;
    if (this.mode === "status-500") res.writeHead(500).end("internal");
    else if (this.mode === "hang") this.#hanging.add(res);
    else if (this.mode === "reset") req.socket.destroy();
    else {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ keys: [...this.published.values()] }));
    }
  }

  async close(): Promise<void> {
    for (const res of this.#hanging) res.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((done) => this.server.close(() => done()));
  }
}

const keys = new KeyServer();
let stack: Stack;
let port: number;
let adminToken: string;

const now = () => Math.floor(Date.now() / 1000);

function sign(key: SigningKey, claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}) {
  const { sub = "idp-user", exp = now() + 300, iss = ISSUER, aud = AUDIENCE, ...rest } = claims;
  return new SignJWT({ role: "user", ...rest })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, ...header })
    .setSubject(sub as string)
    .setIssuer(iss as string)
    .setAudience(aud as string)
    .setExpirationTime(exp as number)
    .sign(key.privateKey);
}

/** GET /models: role user, D1 only. Status and stable code. */
async function asCaller(
  token: string,
): Promise<{ status: number; code: string | null; retryAfter: string | null }> {
  const res = await fetch(`${stack.origin}/models`, {
    headers: { Authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(10_000),
  });
  await res.body?.cancel();
  return {
    status: res.status,
    code: res.headers.get("X-Error-Code"),
    retryAfter: res.headers.get("Retry-After"),
  };
}

const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");

beforeAll(async () => {
  port = await keys.listen();
  stack = await startStack({
    vars: {
      JWT_JWKS_URL: `http://127.0.0.1:${port}/.well-known/jwks.json`,
      JWT_JWKS_COOLDOWN_MS: String(COOLDOWN_MS),
      JWT_JWKS_TIMEOUT_MS: String(TIMEOUT_MS),
      JWT_ISSUER: ISSUER,
      JWT_AUDIENCE: AUDIENCE,
      TOKEN_REVOCATION_REFRESH_MS: "1000",
    },
  });
  adminToken = await mintToken({
    secret: stack.secret,
    role: "admin",
    sub: "e2e-admin",
    issuer: ISSUER,
    audience: AUDIENCE,
  });
});

afterAll(async () => {
  await stack?.stop();
  await keys.close();
});

describe("JWKS through a real key server", () => {
  let rsa: SigningKey;
  let es: SigningKey;
  let ed: SigningKey;

  it("accepts RS256, ES256 and EdDSA tokens, with one fetch of the key set", async () => {
    [rsa, es, ed] = [await keys.key("RS256"), await keys.key("ES256"), await keys.key("EdDSA")];
    for (const key of [rsa, es, ed]) {
      expect(await asCaller(await sign(key, { sub: `e2e-${key.alg}` })), key.alg).toMatchObject({
        status: 200,
      });
    }
    expect(keys.hits).toBe(1);
  });

  it("refuses an unknown kid, HS256 made with the public key, alg none, expired, early, and foreign tokens", async () => {
    const refusals: [string, string, string][] = [
      ["unknown kid", await sign(rsa, {}, { kid: "no-such-kid" }), "UNAUTHORIZED"],
      [
        "HS256 with the public key",
        await new SignJWT({ role: "admin" })
          .setProtectedHeader({ alg: "HS256", kid: rsa.kid })
          .setSubject("mallory")
          .setIssuer(ISSUER)
          .setAudience(AUDIENCE)
          .setExpirationTime("5m")
          .sign(new TextEncoder().encode(await exportSPKI(rsa.publicKey))),
        "UNAUTHORIZED",
      ],
      [
        "alg none",
        `${b64url({ alg: "none", kid: rsa.kid })}.${b64url({ sub: "m", role: "admin", iss: ISSUER, aud: AUDIENCE, exp: now() + 60 })}.`,
        "UNAUTHORIZED",
      ],
      ["expired", await sign(es, { exp: now() - 60 }), "TOKEN_EXPIRED"],
      ["nbf beyond the tolerance", await sign(es, { nbf: now() + 120 }), "UNAUTHORIZED"],
      ["wrong iss", await sign(ed, { iss: "https://elsewhere.test/" }), "UNAUTHORIZED"],
      ["wrong aud", await sign(ed, { aud: "another-service" }), "UNAUTHORIZED"],
    ];
    for (const [what, token, code] of refusals) {
      expect(await asCaller(token), what).toMatchObject({ status: 401, code });
    }
    expect(
      await asCaller(await sign(es, { sub: "skewed", nbf: now() + 10 })),
      "nbf within 30 s",
    ).toMatchObject({
      status: 200,
    });
    expect(await asCaller(await sign(ed, { role: undefined }))).toMatchObject({
      status: 403,
      code: "FORBIDDEN",
    });
  });

  it("picks up a rotated key after the cooldown; a withdrawn key's new tokens are refused", async () => {
    // Let the cooldown since the last fetch pass, so the rotation below starts from a fresh fetch.
    await new Promise((r) => setTimeout(r, COOLDOWN_MS + 100));
    const probe = await keys.key("ES256");
    expect(await asCaller(await sign(probe))).toMatchObject({ status: 200 });
    const hits = keys.hits;
    const fetchedAt = Date.now();

    const rotated = await keys.key("RS256", "rotated-2");
    keys.published.delete(rsa.kid);
    const early = await asCaller(await sign(rotated, { sub: "early" }));
    expect(Date.now() - fetchedAt, "still within the cooldown").toBeLessThan(COOLDOWN_MS);
    expect(early).toMatchObject({ status: 401, code: "UNAUTHORIZED" });
    expect(keys.hits).toBe(hits);

    await new Promise((r) => setTimeout(r, Math.max(0, fetchedAt + COOLDOWN_MS + 100 - Date.now())));
    expect(await asCaller(await sign(rotated, { sub: "later" }))).toMatchObject({ status: 200 });
    expect(keys.hits).toBe(hits + 1);
    expect(await asCaller(await sign(rsa, { sub: "withdrawn" }))).toMatchObject({ status: 401 });
  });

  it("a key server that fails, hangs or drops the connection: 503 AUTH_UNAVAILABLE within the timeout; HS256 tokens unaffected", async () => {
    const own = await mintToken({
      secret: stack.secret,
      role: "user",
      sub: "own",
      issuer: ISSUER,
      audience: AUDIENCE,
    });
    for (const mode of ["status-500", "hang", "reset"] as const) {
      await new Promise((r) => setTimeout(r, COOLDOWN_MS + 100));
      keys.mode = mode;
      const fresh = await keys.key("EdDSA");
      const started = Date.now();
      const answer = await asCaller(await sign(fresh, { sub: `during-${mode}` }));
      expect(answer, mode).toEqual({ status: 503, code: "AUTH_UNAVAILABLE", retryAfter: "5" });
      expect(Date.now() - started, mode).toBeLessThan(TIMEOUT_MS + 1_500);
      expect(await asCaller(own)).toMatchObject({ status: 200 });
      keys.mode = "up";
      expect(await asCaller(await sign(fresh, { sub: `after-${mode}` }))).toMatchObject({ status: 200 });
    }
  });

  it("revokes a provider's token by jti and every token of its subject by sub", async () => {
    const admin = (method: string, path: string, body?: unknown) =>
      fetch(`${stack.origin}${path}`, {
        method,
        headers: { Authorization: `Bearer ${adminToken}`, "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    const jti = crypto.randomUUID();
    const leaked = await sign(es, { sub: "idp-alice", jti });
    const other = await sign(es, { sub: "idp-alice", jti: crypto.randomUUID() });
    expect(await asCaller(leaked)).toMatchObject({ status: 200 });
    const byJti = await admin("POST", "/tokens/revoke", { jti, reason: "e2e" });
    expect(byJti.status).toBe(201);
    expect(await asCaller(leaked)).toMatchObject({ status: 401, code: "TOKEN_REVOKED" });
    expect(await asCaller(other)).toMatchObject({ status: 200 });

    const bySub = await admin("POST", "/tokens/revoke", { sub: "idp-alice" });
    expect(bySub.status).toBe(201);
    const { id } = (await bySub.json()) as { id: number };
    expect(await asCaller(other)).toMatchObject({ status: 401, code: "TOKEN_REVOKED" });
    expect((await admin("DELETE", `/tokens/revoked/${id}`)).status).toBe(200);
    expect(await asCaller(other)).toMatchObject({ status: 200 });

    const trail = (await (await admin("GET", "/audit?actor=e2e-admin")).json()) as {
      events: { action: string }[];
    };
    expect(trail.events.map((e) => e.action)).toEqual(["token.restore", "token.revoke", "token.revoke"]);
  });
});
