// Revoking tokens before they expire (POST /tokens/revoke, GET /tokens/revoked, DELETE
// /tokens/revoked/{id}) through the real Worker, and the per-isolate deny-list copy that enforces
// it: two TokenDenyList instances on the same D1 stand for two isolates, with their own clocks.
import { env } from "cloudflare:workers";
import { SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { TokenDenyList } from "../../gateway/middleware/auth/token-deny-list.ts";
import { MAX_REVOCATIONS } from "../../gateway/routes/tokens.ts";
import {
  AuditList,
  TokenRevocationLifted,
  TokenRevocationList,
  TokenRevokeResponse,
} from "../../schema/api.ts";
import { bearer, gatewayFetch, sleep, uniqueId } from "./helpers.ts";

/** A user token with a jti (the suite's helper mints none). */
async function tokenWith({ sub, jti, role = "user" }: { sub: string; jti?: string; role?: string }) {
  const jwt = new SignJWT({ role })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(sub)
    .setExpirationTime("5m");
  if (jti !== undefined) jwt.setJti(jti);
  return { Authorization: `Bearer ${await jwt.sign(new TextEncoder().encode(env.JWT_SECRET))}` };
}

async function admin(method: string, path: string, body?: unknown, sub = "sec-admin"): Promise<Response> {
  const headers: Record<string, string> = await bearer({ role: "admin", sub });
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return gatewayFetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

/** GET /models: role user, D1 only. */
const asCaller = (headers: Record<string, string>) => gatewayFetch("/models", { headers });

async function code(response: Response): Promise<string> {
  return ((await response.json()) as { error: { code: string } }).error.code;
}

async function auditOf(target: string) {
  const response = await admin("GET", `/audit?target=${encodeURIComponent(target)}`);
  expect(response.status).toBe(200);
  return AuditList.parse(await response.json()).events;
}

describe("POST /tokens/revoke by jti", () => {
  it("refuses that token at once (even though it verified and was cached), only that one, until lifted", async () => {
    const sub = uniqueId("holder");
    const jti = crypto.randomUUID();
    const leaked = await tokenWith({ sub, jti });
    const sibling = await tokenWith({ sub, jti: crypto.randomUUID() });
    expect((await asCaller(leaked)).status).toBe(200); // now in the verified-token cache

    const revoked = await admin("POST", "/tokens/revoke", { jti, reason: "pasted in a public issue" });
    expect(revoked.status).toBe(201);
    const body = TokenRevokeResponse.parse(await revoked.json());
    expect(body).toEqual({
      id: expect.any(Number),
      jti,
      sub: null,
      reason: "pasted in a public issue",
      until: null,
      revokedAt: expect.any(String),
      revokedBy: "sec-admin",
      replaced: false,
      effectiveWithinMs: 5000,
    });

    const refused = await asCaller(leaked);
    expect(refused.status).toBe(401);
    expect(refused.headers.get("X-Error-Code")).toBe("TOKEN_REVOKED");
    expect(await refused.json()).toMatchObject({
      error: { code: "TOKEN_REVOKED", message: "this token has been revoked" },
    });
    // Under /v1 too, in OpenAI's shape.
    const openai = await gatewayFetch("/v1/models", { headers: leaked });
    expect(openai.status).toBe(401);
    expect(await openai.json()).toMatchObject({
      error: { code: "TOKEN_REVOKED", type: "authentication_error" },
    });
    expect((await asCaller(sibling)).status).toBe(200);

    const listed = TokenRevocationList.parse(await (await admin("GET", "/tokens/revoked")).json());
    expect(listed.revocations.find((r) => r.id === body.id)).toMatchObject({ jti, sub: null });

    const lifted = await admin("DELETE", `/tokens/revoked/${body.id}`);
    expect(lifted.status).toBe(200);
    expect(TokenRevocationLifted.parse(await lifted.json()).lifted).toMatchObject({ id: body.id, jti });
    expect((await asCaller(leaked)).status).toBe(200);
    const after = TokenRevocationList.parse(await (await admin("GET", "/tokens/revoked")).json());
    expect(after.revocations.some((r) => r.id === body.id)).toBe(false);
    expect(await code(await admin("DELETE", `/tokens/revoked/${body.id}`))).toBe("REVOCATION_NOT_FOUND");

    const trail = await auditOf(`token:${jti}`);
    expect(trail.map((e) => e.action)).toEqual(["token.restore", "token.revoke"]);
    expect(trail[1]).toMatchObject({
      actor: "sec-admin",
      actorRole: "admin",
      requestId: revoked.headers.get("X-Request-Id"),
      detail: { reason: "pasted in a public issue", until: null, replaced: false },
    });
    expect(trail[0]?.detail).toMatchObject({ revocation: { id: body.id, jti } });
  });

  it("a repeated revoke replaces the first (200, replaced), one row in force", async () => {
    const jti = crypto.randomUUID();
    const first = TokenRevokeResponse.parse(await (await admin("POST", "/tokens/revoke", { jti })).json());
    const again = await admin("POST", "/tokens/revoke", { jti, reason: "second look" }, "other-admin");
    expect(again.status).toBe(200);
    const second = TokenRevokeResponse.parse(await again.json());
    expect(second).toMatchObject({
      id: first.id,
      replaced: true,
      reason: "second look",
      revokedBy: "other-admin",
    });
    const listed = TokenRevocationList.parse(await (await admin("GET", "/tokens/revoked?limit=500")).json());
    expect(listed.revocations.filter((r) => r.jti === jti)).toHaveLength(1);
  });
});

describe("POST /tokens/revoke by sub", () => {
  it("refuses every token of the subject, whatever its jti or role, and lapses by itself at until", async () => {
    const sub = uniqueId("fired");
    const tokens = [
      await tokenWith({ sub }),
      await tokenWith({ sub, jti: crypto.randomUUID() }),
      await tokenWith({ sub, role: "admin" }),
    ];
    const bystander = await tokenWith({ sub: uniqueId("bystander") });
    for (const t of tokens) expect((await asCaller(t)).status).toBe(200);

    const until = new Date(Date.now() + 1500).toISOString();
    const revoked = await admin("POST", "/tokens/revoke", { sub, until });
    expect(revoked.status).toBe(201);
    expect(TokenRevokeResponse.parse(await revoked.json())).toMatchObject({ sub, jti: null, until });
    for (const t of tokens) {
      const refused = await asCaller(t);
      expect(refused.status).toBe(401);
      expect(await refused.json()).toMatchObject({
        error: { code: "TOKEN_REVOKED", message: "this token's subject has been revoked" },
      });
    }
    expect((await asCaller(bystander)).status).toBe(200);

    await sleep(Date.parse(until) - Date.now() + 50);
    // Lapsed: served again without anyone lifting it, and no longer listed.
    for (const t of tokens) expect((await asCaller(t)).status).toBe(200);
    const listed = TokenRevocationList.parse(await (await admin("GET", "/tokens/revoked?limit=500")).json());
    expect(listed.revocations.some((r) => r.sub === sub)).toBe(false);
    expect((await auditOf(`subject:${sub}`)).map((e) => e.action)).toEqual(["token.revoke"]);
  });
});

describe("/tokens input and access", () => {
  it("refuses bad bodies with INVALID_REQUEST naming the field, and a non-admin with 403", async () => {
    for (const [body, param] of [
      [{}, "jti"],
      [{ jti: "a", sub: "b" }, "jti"],
      [{ jti: "" }, "jti"],
      [{ sub: "x".repeat(129) }, "sub"],
      [{ jti: "a", reason: "r".repeat(257) }, "reason"],
      [{ jti: "a", until: "tomorrow" }, "until"],
      [{ jti: "a", until: new Date(Date.now() - 1000).toISOString() }, "until"],
      [{ jti: "a", extra: true }, "extra"],
    ] as const) {
      const response = await admin("POST", "/tokens/revoke", body);
      expect(response.status, JSON.stringify(body)).toBe(400);
      const error = ((await response.json()) as { error: { code: string; message: string } }).error;
      expect(error.code).toBe("INVALID_REQUEST");
      expect(error.message.startsWith(`${param}:`), error.message).toBe(true);
    }
    expect(await code(await admin("DELETE", "/tokens/revoked/abc"))).toBe("INVALID_REQUEST");
    expect(await code(await admin("DELETE", "/tokens/revoked/0"))).toBe("INVALID_REQUEST");
    expect(await code(await admin("DELETE", "/tokens/revoked/99999999"))).toBe("REVOCATION_NOT_FOUND");
    expect(await code(await admin("GET", "/tokens/revoked?limit=0"))).toBe("INVALID_REQUEST");
    expect(await code(await admin("GET", "/tokens/revoked?bogus=1"))).toBe("INVALID_REQUEST");

    const user = await bearer({ role: "user" });
    for (const [method, path] of [
      ["POST", "/tokens/revoke"],
      ["GET", "/tokens/revoked"],
      ["DELETE", "/tokens/revoked/1"],
    ] as const) {
      const response = await gatewayFetch(path, { method, headers: user });
      expect(response.status, `${method} ${path}`).toBe(403);
      expect((await gatewayFetch(path, { method })).status).toBe(401);
    }
  });

  it("pages the list newest first with limit and before", async () => {
    const ids: number[] = [];
    for (let i = 0; i < 3; i++) {
      const response = await admin("POST", "/tokens/revoke", { jti: uniqueId("page") });
      ids.push(TokenRevokeResponse.parse(await response.json()).id);
    }
    const first = TokenRevocationList.parse(await (await admin("GET", "/tokens/revoked?limit=2")).json());
    expect(first.revocations.map((r) => r.id)).toEqual([ids[2], ids[1]]);
    expect(first.nextBefore).toBe(ids[1]);
    const second = TokenRevocationList.parse(
      await (await admin("GET", `/tokens/revoked?limit=1&before=${first.nextBefore}`)).json(),
    );
    expect(second.revocations.map((r) => r.id)).toEqual([ids[0]]);
  });
});

/** D1 that counts the statements it is asked to prepare, and can be made to fail. */
function countingDb() {
  const counter = { prepared: 0, failing: false };
  const db = new Proxy(env.DB, {
    get(target, key) {
      if (key === "prepare") {
        return (sql: string) => {
          if (counter.failing) throw new Error("D1_ERROR: simulated outage");
          counter.prepared++;
          return target.prepare(sql);
        };
      }
      const value = Reflect.get(target, key);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { db, counter };
}

/** A clock a test moves by hand. */
function clock(start = Date.now()) {
  const c = { t: start, now: () => c.t };
  return c;
}

describe("the deny-list copy of each isolate", () => {
  const TTL = 5_000;

  it("another isolate enforces a revocation once its copy is older than the refresh interval, and a restore likewise", async () => {
    const sub = uniqueId("cross");
    const token = { jti: undefined, sub };
    const timeA = clock();
    const isolateA = new TokenDenyList({ now: timeA.now });
    const { db, counter } = countingDb();
    expect(await isolateA.find(db, token, TTL)).toBeUndefined();

    const revoked = TokenRevokeResponse.parse(await (await admin("POST", "/tokens/revoke", { sub })).json());
    expect(revoked.effectiveWithinMs).toBe(TTL);
    // Isolate A's copy predates the revocation and is still trusted: the documented latency.
    timeA.t += TTL - 1;
    expect(await isolateA.find(db, token, TTL)).toBeUndefined();
    // Past the interval A reads D1 before answering.
    timeA.t += 2;
    expect(await isolateA.find(db, token, TTL)).toMatchObject({ id: revoked.id, kind: "sub" });
    // A new isolate has no copy and reads at once.
    const isolateB = new TokenDenyList();
    expect(await isolateB.find(db, token, TTL)).toMatchObject({ id: revoked.id });

    expect((await admin("DELETE", `/tokens/revoked/${revoked.id}`)).status).toBe(200);
    expect(await isolateA.find(db, token, TTL)).toBeDefined();
    timeA.t += TTL + 1;
    expect(await isolateA.find(db, token, TTL)).toBeUndefined();

    // With nothing changed, a refresh reads one row (the revision), not the list.
    const before = counter.prepared;
    timeA.t += TTL + 1;
    await isolateA.find(db, token, TTL);
    expect(counter.prepared - before).toBe(1);
  });

  it("refreshes in the background past half the interval, so a busy isolate never waits", async () => {
    const jti = crypto.randomUUID();
    const token = { jti, sub: uniqueId("busy") };
    const time = clock();
    const isolate = new TokenDenyList({ now: time.now });
    const { db } = countingDb();
    await isolate.find(db, token, TTL);
    await admin("POST", "/tokens/revoke", { jti });

    const background: Promise<unknown>[] = [];
    time.t += TTL * 0.4;
    expect(await isolate.find(db, token, TTL, (p) => background.push(p))).toBeUndefined();
    expect(background).toHaveLength(0);
    time.t += TTL * 0.2;
    // Served from the copy at once, a refresh started beside it (only one at a time).
    expect(await isolate.find(db, token, TTL, (p) => background.push(p))).toBeUndefined();
    expect(await isolate.find(db, token, TTL, (p) => background.push(p))).toBeUndefined();
    expect(background).toHaveLength(1);
    await Promise.all(background);
    expect(await isolate.find(db, token, TTL)).toMatchObject({ kind: "jti" });
  });

  it("when D1 fails: a recent copy still serves; no copy, or one past the stale limit, is AUTH_UNAVAILABLE", async () => {
    const token = { jti: undefined, sub: uniqueId("outage") };
    const { db, counter } = countingDb();
    counter.failing = true;
    await expect(new TokenDenyList().find(db, token, TTL)).rejects.toMatchObject({
      code: "AUTH_UNAVAILABLE",
      status: 503,
    });

    const time = clock();
    const isolate = new TokenDenyList({ now: time.now, staleLimitMs: 10_000 });
    counter.failing = false;
    await isolate.find(db, token, TTL);
    counter.failing = true;
    time.t += TTL + 9_000;
    expect(await isolate.find(db, token, TTL)).toBeUndefined();
    time.t += 2_000;
    await expect(isolate.find(db, token, TTL)).rejects.toMatchObject({ code: "AUTH_UNAVAILABLE" });
    counter.failing = false;
    expect(await isolate.find(db, token, TTL)).toBeUndefined();
  });

  it(`refuses more than ${MAX_REVOCATIONS} revocations in force with TOO_MANY_REVOCATIONS`, async () => {
    const until = Date.now() + 60_000;
    const prefix = uniqueId("bulk");
    // Filled in one statement (the API would take 10,000 requests); removed again below.
    await env.DB.prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
       INSERT INTO token_revocations (kind, value, until, revoked_at, revoked_by)
       SELECT 'jti', ?2 || i, ?3, ?4, 'bulk-test' FROM n`,
    )
      .bind(MAX_REVOCATIONS, prefix, until, Date.now())
      .run();
    try {
      const response = await admin("POST", "/tokens/revoke", { jti: uniqueId("one-too-many") });
      expect(response.status).toBe(409);
      expect(await code(response)).toBe("TOO_MANY_REVOCATIONS");
    } finally {
      await env.DB.prepare("DELETE FROM token_revocations WHERE revoked_by = 'bulk-test'").run();
    }
    expect((await admin("POST", "/tokens/revoke", { jti: uniqueId("room-again") })).status).toBe(201);
  });
});
