// The per-isolate copy of the token deny-list (D1 token_revocations, written by POST /tokens/revoke),
// so the request path looks revocations up in two Maps instead of querying D1. A copy is trusted for
// TOKEN_REVOCATION_REFRESH_MS: past half of it a request refreshes it in the background (one refresh
// at a time per isolate); past all of it a request reads D1 before it is served. A refresh reads one
// row (token_revocation_state.revision) and the whole list only when the revision moved. So every
// isolate enforces a revocation for requests that start at most the refresh interval after it was
// committed. No promise is shared between requests: workerd cancels a continuation whose creating
// request has ended, which would leave the waiting request hanging.
import { eq, gt, isNull, or } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { type TokenRevocationKind, tokenRevocationState, tokenRevocations } from "../../../schema/db.ts";
import { GatewayError } from "../../errors.ts";
import { describeError, log } from "../../log.ts";

/** One revocation as the request path needs it. */
export interface DenyEntry {
  id: number;
  kind: TokenRevocationKind;
  /** Epoch ms when it lapses; null: until lifted. */
  untilMs: number | null;
}

export interface TokenDenyListOptions {
  /**
   * When D1 does not answer, a copy this much older than the refresh interval still serves (logged);
   * older, or none at all, and authenticated requests answer 503 AUTH_UNAVAILABLE.
   */
  staleLimitMs?: number;
  now?: () => number;
}

export class TokenDenyList {
  #byJti = new Map<string, DenyEntry>();
  #bySub = new Map<string, DenyEntry>();
  /** The revision the copy reflects; undefined until the first load. */
  #revision: number | undefined;
  /** When the last successful refresh started: the copy is at least as new as this. */
  #checkedAt = Number.NEGATIVE_INFINITY;
  #refreshing = false;
  readonly #staleLimitMs: number;
  readonly #now: () => number;

  constructor({ staleLimitMs = 60_000, now = Date.now }: TokenDenyListOptions = {}) {
    this.#staleLimitMs = staleLimitMs;
    this.#now = now;
  }

  /**
   * The revocation that denies a token with this `jti` and `sub`, if any. `background` takes the
   * early refresh (the request's waitUntil); without it, only a due refresh happens.
   */
  async find(
    db: D1Database,
    token: { jti: string | undefined; sub: string },
    refreshMs: number,
    background?: (work: Promise<unknown>) => void,
  ): Promise<DenyEntry | undefined> {
    const now = this.#now();
    const age = now - this.#checkedAt;
    if (age > refreshMs) await this.#refreshOrServeStale(db, age, refreshMs);
    else if (age > refreshMs / 2 && !this.#refreshing && background !== undefined) {
      background(
        this.refresh(db).catch((err) =>
          log("warn", "token deny-list: background refresh failed", describeError(err)),
        ),
      );
    }
    const at = this.#now();
    const byJti = token.jti === undefined ? undefined : this.#byJti.get(token.jti);
    if (byJti !== undefined && inForce(byJti, at)) return byJti;
    const bySub = this.#bySub.get(token.sub);
    if (bySub !== undefined && inForce(bySub, at)) return bySub;
    return undefined;
  }

  /** Makes the next find() read D1 first: this isolate has just changed the list. */
  invalidate(): void {
    this.#checkedAt = Number.NEGATIVE_INFINITY;
  }

  /** Reads the revision, and the list when it moved. Exposed for tests. */
  async refresh(db: D1Database): Promise<void> {
    const started = this.#now();
    this.#refreshing = true;
    try {
      const d1 = drizzle(db);
      const revision = await readRevision(d1);
      if (revision !== this.#revision) {
        // Revision and rows in one batch (one transaction), so the rows are those of that revision.
        const [state, rows] = await d1.batch([
          revisionQuery(d1),
          d1
            .select({
              id: tokenRevocations.id,
              kind: tokenRevocations.kind,
              value: tokenRevocations.value,
              until: tokenRevocations.until,
            })
            .from(tokenRevocations)
            .where(or(isNull(tokenRevocations.until), gt(tokenRevocations.until, new Date(started)))),
        ]);
        // A slower refresh that started before the one already applied must not roll the copy back.
        if (started < this.#checkedAt) return;
        const byJti = new Map<string, DenyEntry>();
        const bySub = new Map<string, DenyEntry>();
        for (const row of rows) {
          const entry = { id: row.id, kind: row.kind, untilMs: row.until?.getTime() ?? null };
          (row.kind === "jti" ? byJti : bySub).set(row.value, entry);
        }
        this.#byJti = byJti;
        this.#bySub = bySub;
        this.#revision = state[0]?.revision ?? 0;
      }
      if (started > this.#checkedAt) this.#checkedAt = started;
    } finally {
      this.#refreshing = false;
    }
  }

  async #refreshOrServeStale(db: D1Database, age: number, refreshMs: number): Promise<void> {
    try {
      await this.refresh(db);
    } catch (err) {
      if (this.#revision !== undefined && age <= refreshMs + this.#staleLimitMs) {
        log("warn", "token deny-list: D1 did not answer; serving the last copy", {
          ageMs: age,
          ...describeError(err),
        });
        return;
      }
      log("error", "token deny-list: D1 did not answer and no recent copy exists; refusing tokens", {
        ageMs: Number.isFinite(age) ? age : null,
        ...describeError(err),
      });
      throw new GatewayError("AUTH_UNAVAILABLE", "token revocations cannot be checked right now", {
        retryAfterSeconds: 5,
        cause: err,
      });
    }
  }
}

const inForce = (entry: DenyEntry, nowMs: number) => entry.untilMs === null || entry.untilMs > nowMs;

type Db = ReturnType<typeof drizzle>;

const revisionQuery = (d1: Db) =>
  d1
    .select({ revision: tokenRevocationState.revision })
    .from(tokenRevocationState)
    .where(eq(tokenRevocationState.id, 1));

async function readRevision(d1: Db): Promise<number> {
  const [row] = await revisionQuery(d1);
  return row?.revision ?? 0;
}
