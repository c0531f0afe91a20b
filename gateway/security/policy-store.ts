// The admins' injection-policy lines in D1 (injection_policies), read by every Worker isolate
// through a short cache: a PUT is seen at once by the isolate that took it and by every other
// within INJECTION_POLICY_CACHE_MS (5 s by default). A D1 that does not answer keeps the lines the
// isolate last read (or none), logged: requests are served under the config's policy meanwhile.
import { and, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { injectionPolicies } from "../../schema/db.ts";
import { describeError, log } from "../log.ts";
import type { InjectionMode, PolicyEntry, PromptRoute, SourcedEntry } from "./injection-policy.ts";

/** A row's route and model are "" for "any": SQLite primary keys over NULLs would not be unique. */
const ANY = "";

/** A refresh older than this is taken as lost (its request was cancelled mid-read): another starts. */
export const REFRESH_GIVE_UP_MS = 10_000;

/**
 * An isolate's copy of the admins' lines. No request ever awaits a read another request started:
 * workerd (like Cloudflare) cancels a request that waits on a promise only another request's I/O
 * can settle ("...detected that your Worker's code had hung"), which the bench saw as 500s on
 * concurrent streams while the copy refreshed. So once a copy exists, the one request that finds it
 * due reads D1 and the others serve the copy meanwhile (stale by at most one read); before the
 * first copy, each request reads for itself, so a new isolate never serves without the admins' lines.
 */
export class PolicyCache {
  #entries: readonly SourcedEntry[] = [];
  #loaded = false;
  #fetchedAt = Number.NEGATIVE_INFINITY;
  /** When the refresh in flight started (null: none); bumped by invalidate() so an older one does not count. */
  #refreshStartedAt: number | null = null;
  #generation = 0;

  constructor(private readonly now: () => number = Date.now) {}

  /** The admins' lines, from D1 when the copy is older than `ttlMs`. */
  async entries(db: D1Database, ttlMs: number): Promise<readonly SourcedEntry[]> {
    const now = this.now();
    if (now - this.#fetchedAt < ttlMs) return this.#entries;
    const refreshing = this.#refreshStartedAt !== null && now - this.#refreshStartedAt < REFRESH_GIVE_UP_MS;
    if (this.#loaded && refreshing) return this.#entries;
    return this.#refresh(db, now);
  }

  /** This isolate changed the table: its next read goes to D1, whatever read was in flight. */
  invalidate(): void {
    this.#fetchedAt = Number.NEGATIVE_INFINITY;
    this.#refreshStartedAt = null;
    this.#generation++;
  }

  async #refresh(db: D1Database, startedAt: number): Promise<readonly SourcedEntry[]> {
    const generation = this.#generation;
    this.#refreshStartedAt = startedAt;
    let read: readonly SourcedEntry[] | undefined;
    try {
      read = await readAdminEntries(db);
    } catch (err) {
      log("error", "injection policy: D1 did not answer; keeping the lines read before", describeError(err));
    }
    // A read that started before an invalidate() is this request's answer, not the isolate's copy.
    if (generation !== this.#generation) return read ?? this.#entries;
    if (read !== undefined) {
      this.#entries = read;
      this.#loaded = true;
    }
    // A failed read is not retried by every request either: once per TTL.
    this.#fetchedAt = startedAt;
    if (this.#refreshStartedAt === startedAt) this.#refreshStartedAt = null;
    return this.#entries;
  }
}

/** The isolate's cache (a copy of D1 rows with a deadline, not state of its own). */
export const policyCache = new PolicyCache();

export async function readAdminEntries(db: D1Database): Promise<SourcedEntry[]> {
  const rows = await drizzle(db).select().from(injectionPolicies).all();
  return rows.map((row) => ({
    mode: row.mode,
    ...(row.route === ANY ? {} : { route: row.route as PromptRoute }),
    ...(row.model === ANY ? {} : { model: row.model }),
    source: "admin" as const,
    updatedAt: row.updatedAt.toISOString(),
    updatedBy: row.updatedBy,
  }));
}

/** Sets (mode) or removes (null) the admin line of one scope. */
export async function writeAdminEntry(
  db: D1Database,
  scope: Pick<PolicyEntry, "route" | "model">,
  mode: InjectionMode | null,
  actor: string,
  at = new Date(),
): Promise<void> {
  const route = scope.route ?? ANY;
  const model = scope.model ?? ANY;
  const d = drizzle(db);
  if (mode === null) {
    await d
      .delete(injectionPolicies)
      .where(and(eq(injectionPolicies.route, route), eq(injectionPolicies.model, model)))
      .run();
  } else {
    await d
      .insert(injectionPolicies)
      .values({ route, model, mode, updatedAt: at, updatedBy: actor })
      .onConflictDoUpdate({
        target: [injectionPolicies.route, injectionPolicies.model],
        set: { mode, updatedAt: at, updatedBy: actor },
      })
      .run();
  }
  policyCache.invalidate();
}
