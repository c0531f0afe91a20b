// POST /tokens/revoke, GET /tokens/revoked, DELETE /tokens/revoked/:id (role admin): revoking tokens
// before they expire, by `jti` (one token) or `sub` (every token of a subject). D1 is the source of
// truth; each change bumps the revision every isolate's copy polls (middleware/auth/token-deny-list.ts)
// and writes its audit row, in one batch.
import { and, count, desc, eq, gt, isNull, lt, lte, or, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import {
  type TokenRevocation,
  type TokenRevocationLifted,
  type TokenRevocationList,
  TokenRevocationQuery,
  TokenRevokeRequest,
  type TokenRevokeResponse,
} from "../../schema/api.ts";
import {
  auditLog,
  type TokenRevocationRow,
  tokenRevocationState,
  tokenRevocations,
} from "../../schema/db.ts";
import { readConfig } from "../config.ts";
import { GatewayError } from "../errors.ts";
import { log } from "../log.ts";
import { auditRow, markAudited } from "../middleware/audit/index.ts";
import { auth, tokenDenyList } from "../middleware/auth/index.ts";
import { invalidRequest, jsonBody } from "../middleware/json-body/index.ts";
import type { AppEnv } from "../types.ts";

/** Revocations in force at once. Every isolate holds them all (~200 bytes each: 2 MB at the limit). */
export const MAX_REVOCATIONS = 10_000;

const admin = auth({ role: "admin" });

/** In force at `at`: no end, or an end still to come. */
const inForceAt = (at: Date) => or(isNull(tokenRevocations.until), gt(tokenRevocations.until, at));

export const tokenRoutes = new Hono<AppEnv>()
  .post("/revoke", admin, jsonBody(TokenRevokeRequest), async (c) => {
    const body = c.get("body");
    const now = new Date();
    const until = body.until === undefined ? null : new Date(body.until);
    if (until !== null && until <= now) {
      throw new GatewayError("INVALID_REQUEST", "until: must be in the future", { param: "until" });
    }
    const kind = body.jti !== undefined ? "jti" : "sub";
    const value = (body.jti ?? body.sub) as string;
    const db = drizzle(c.env.DB);
    const same = and(eq(tokenRevocations.kind, kind), eq(tokenRevocations.value, value));
    const [existing, inForce] = await db.batch([
      db
        .select()
        .from(tokenRevocations)
        .where(and(same, inForceAt(now))),
      db.select({ n: count() }).from(tokenRevocations).where(inForceAt(now)),
    ]);
    const replaced = existing[0];
    if (replaced === undefined && (inForce[0]?.n ?? 0) >= MAX_REVOCATIONS) {
      throw new GatewayError(
        "TOO_MANY_REVOCATIONS",
        `at most ${MAX_REVOCATIONS} revocations may be in force; lift some, or give new ones an until`,
      );
    }
    const caller = c.get("caller");
    const fields = { reason: body.reason ?? null, until, revokedAt: now, revokedBy: caller.sub };
    const [, , , , after] = await db.batch([
      // Lapsed revocations deny nothing: pruned here, the audit log keeps them.
      db.delete(tokenRevocations).where(lte(tokenRevocations.until, now)),
      db
        .insert(tokenRevocations)
        .values({ kind, value, ...fields })
        .onConflictDoUpdate({ target: [tokenRevocations.kind, tokenRevocations.value], set: fields }),
      bumpRevision(db, now),
      db.insert(auditLog).values(
        auditRow({
          actor: caller,
          action: "token.revoke",
          target: kind === "jti" ? `token:${value}` : `subject:${value}`,
          requestId: c.get("requestId"),
          at: now,
          detail: {
            reason: fields.reason,
            until: until?.toISOString() ?? null,
            replaced: replaced !== undefined,
          },
        }),
      ),
      db.select().from(tokenRevocations).where(same),
    ]);
    tokenDenyList.invalidate();
    markAudited(c);
    const row = after[0] as TokenRevocationRow;
    log("info", "token revoked", { kind, revocationId: row.id, actor: caller.sub, replaced: !!replaced });
    const answer = {
      ...view(row),
      replaced: replaced !== undefined,
      effectiveWithinMs: readConfig(c.env).tokenRevocationRefreshMs,
    } satisfies TokenRevokeResponse;
    return c.json(answer, replaced === undefined ? 201 : 200);
  })
  .get("/revoked", admin, async (c) => {
    const query = TokenRevocationQuery.safeParse(c.req.query());
    if (!query.success) throw invalidRequest(query.error);
    const { limit, before } = query.data;
    const rows = await drizzle(c.env.DB)
      .select()
      .from(tokenRevocations)
      .where(and(inForceAt(new Date()), before === undefined ? undefined : lt(tokenRevocations.id, before)))
      .orderBy(desc(tokenRevocations.id))
      .limit(limit + 1);
    const page = rows.slice(0, limit);
    const body = {
      revocations: page.map(view),
      nextBefore: rows.length > limit ? (page.at(-1)?.id ?? null) : null,
    } satisfies TokenRevocationList;
    return c.json(body, 200, { "Cache-Control": "no-store" });
  })
  .delete("/revoked/:id", admin, async (c) => {
    const raw = c.req.param("id");
    const id = /^[1-9][0-9]{0,15}$/.test(raw) ? Number(raw) : Number.NaN;
    if (!Number.isSafeInteger(id)) {
      throw new GatewayError("INVALID_REQUEST", "id: a revocation's id (a positive integer)", {
        param: "id",
      });
    }
    const db = drizzle(c.env.DB);
    const row = await db.select().from(tokenRevocations).where(eq(tokenRevocations.id, id)).get();
    if (row === undefined) throw new GatewayError("REVOCATION_NOT_FOUND", `no revocation ${id}`);
    const now = new Date();
    const caller = c.get("caller");
    await db.batch([
      db.delete(tokenRevocations).where(eq(tokenRevocations.id, id)),
      bumpRevision(db, now),
      db.insert(auditLog).values(
        auditRow({
          actor: caller,
          action: "token.restore",
          target: row.kind === "jti" ? `token:${row.value}` : `subject:${row.value}`,
          requestId: c.get("requestId"),
          at: now,
          detail: { revocation: view(row) },
        }),
      ),
    ]);
    tokenDenyList.invalidate();
    markAudited(c);
    log("info", "token revocation lifted", { kind: row.kind, revocationId: id, actor: caller.sub });
    return c.json({ lifted: view(row) } satisfies TokenRevocationLifted);
  });

/** Every change of the list moves its revision, in the change's own batch. */
function bumpRevision(db: ReturnType<typeof drizzle>, now: Date) {
  return db
    .insert(tokenRevocationState)
    .values({ id: 1, revision: 1, updatedAt: now })
    .onConflictDoUpdate({
      target: tokenRevocationState.id,
      set: { revision: sql`${tokenRevocationState.revision} + 1`, updatedAt: now },
    });
}

function view(row: TokenRevocationRow): TokenRevocation {
  return {
    id: row.id,
    jti: row.kind === "jti" ? row.value : null,
    sub: row.kind === "sub" ? row.value : null,
    reason: row.reason,
    until: row.until?.toISOString() ?? null,
    revokedAt: row.revokedAt.toISOString(),
    revokedBy: row.revokedBy,
  };
}
