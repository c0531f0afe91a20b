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

export class PolicyCache {
  #entries: readonly SourcedEntry[] = [];
  #fetchedAt = Number.NEGATIVE_INFINITY;
  #inFlight: Promise<readonly SourcedEntry[]> | null = null;

  constructor(private readonly now: () => number = Date.now) {}

  /** The admins' lines, from D1 when the copy is older than `ttlMs`. */
  async entries(db: D1Database, ttlMs: number): Promise<readonly SourcedEntry[]> {
    if (this.now() - this.#fetchedAt < ttlMs) return this.#entries;
    // Concurrent requests of an isolate share one read.
    this.#inFlight ??= this.#refresh(db).finally(() => {
      this.#inFlight = null;
    });
    return this.#inFlight;
  }

  /** This isolate changed the table: its next read goes to D1. */
  invalidate(): void {
    this.#fetchedAt = Number.NEGATIVE_INFINITY;
  }

  async #refresh(db: D1Database): Promise<readonly SourcedEntry[]> {
    try {
      this.#entries = await readAdminEntries(db);
    } catch (err) {
      log("error", "injection policy: D1 did not answer; keeping the lines read before", describeError(err));
    }
    // A failed read is not retried by every request either: once per TTL.
    this.#fetchedAt = this.now();
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
