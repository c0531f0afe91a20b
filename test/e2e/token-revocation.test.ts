// Token revocation across isolates, for real: two gateway Workers (two workerd processes, so two
// isolates that share nothing but D1's state on disk) with TOKEN_REVOCATION_REFRESH_MS = 1000. A
// revocation made through gateway A is enforced by gateway B within the refresh interval, and so is
// lifting it; this measures how long B took.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LocalGateway, startLocalGateway } from "../../scripts/lib/local-gateway.ts";
import { mintToken } from "../../scripts/lib/token.ts";

const REFRESH_MS = 1_000;
/** What B may take beyond the interval: a D1 read, the poll's own step, and this busy machine. */
const SLACK_MS = 750;

let stateDir: string;
let secret: string;
let a: LocalGateway;
let b: LocalGateway;

beforeAll(async () => {
  stateDir = mkdtempSync(join(tmpdir(), "orchard-e2e-revocation-"));
  secret = randomBytes(32).toString("hex");
  const vars = { TOKEN_REVOCATION_REFRESH_MS: String(REFRESH_MS) };
  a = await startLocalGateway({ persistDir: stateDir, secret, vars, logLevel: "error" });
  b = await startLocalGateway({ persistDir: stateDir, secret, vars, logLevel: "error" });
});

afterAll(async () => {
  await Promise.all([a?.dispose(), b?.dispose()]);
  if (stateDir) rmSync(stateDir, { recursive: true, force: true });
});

async function status(gateway: LocalGateway, token: string): Promise<number> {
  const res = await fetch(`${gateway.origin}/models`, {
    headers: { Authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(5_000),
  });
  await res.body?.cancel();
  return res.status;
}

/** Polls until `gateway` answers `wanted` for `token`; the time it took, in ms. */
async function until(gateway: LocalGateway, token: string, wanted: number, from: number): Promise<number> {
  const deadline = from + REFRESH_MS * 5;
  for (;;) {
    if ((await status(gateway, token)) === wanted) return Date.now() - from;
    if (Date.now() > deadline) throw new Error(`gateway never answered ${wanted}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe("revocation across isolates", () => {
  it("gateway B refuses a token revoked through gateway A within the refresh interval, and accepts it again once lifted", async () => {
    const jti = crypto.randomUUID();
    const token = await new SignJWT({ role: "user" })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("cross-isolate-user")
      .setJti(jti)
      .setExpirationTime("10m")
      .sign(new TextEncoder().encode(secret));
    const admin = await mintToken({ secret, role: "admin", sub: "e2e-admin" });
    // Both have verified (and cached) the token, and hold a copy of the deny-list.
    expect(await status(a, token)).toBe(200);
    expect(await status(b, token)).toBe(200);

    const revoke = await fetch(`${a.origin}/tokens/revoke`, {
      method: "POST",
      headers: { Authorization: `Bearer ${admin}`, "Content-Type": "application/json" },
      body: JSON.stringify({ jti }),
    });
    const revokedAt = Date.now();
    expect(revoke.status).toBe(201);
    const { id, effectiveWithinMs } = (await revoke.json()) as { id: number; effectiveWithinMs: number };
    expect(effectiveWithinMs).toBe(REFRESH_MS);
    expect(await status(a, token)).toBe(401);
    const refusedAfter = await until(b, token, 401, revokedAt);
    expect(refusedAfter).toBeLessThanOrEqual(REFRESH_MS + SLACK_MS);

    const lift = await fetch(`${a.origin}/tokens/revoked/${id}`, {
      method: "DELETE",
      headers: { Authorization: `Bearer ${admin}` },
    });
    const liftedAt = Date.now();
    expect(lift.status).toBe(200);
    const acceptedAfter = await until(b, token, 200, liftedAt);
    expect(acceptedAfter).toBeLessThanOrEqual(REFRESH_MS + SLACK_MS);
    console.log(
      JSON.stringify({ revokeSeenByOtherIsolateMs: refusedAfter, liftSeenByOtherIsolateMs: acceptedAfter }),
    );
  });
});
