// What a pool remembers across evictions and redeploys: its circuit breakers, request counters and
// known models, with when each reaches storage (breaker transitions at once, the rest on the flush
// cycle) and how a wake reads them back. A failed read does not stop the pool: it serves, keeps
// counting, and tries again later, writing no counters over what storage holds until it succeeded.
import type { GatewayConfig } from "../config.ts";
import { describeError, log } from "../log.ts";
import { type BreakerChange, CircuitBreakers } from "./circuit-breakers.ts";
import { HubCounters, METRICS_STORAGE_KEY } from "./hub-metrics.ts";
import { FLUSH_INTERVAL_MS, HubStorage } from "./hub-storage.ts";
import { KnownModels } from "./known-models.ts";

/** A failed restore is tried again after this long, doubling up to the maximum. */
const RESTORE_RETRY_MS = 1_000;
const RESTORE_RETRY_MAX_MS = 30_000;

export class HubState {
  readonly breakers: CircuitBreakers;
  readonly counters: HubCounters;
  readonly #knownModels = new KnownModels();
  readonly #storage: HubStorage;
  #flushedAt = 0;
  /** False until stored state was read: counters are not written over what storage holds. */
  #restored = false;
  #retryAt: number | null = null;
  #retryMs = RESTORE_RETRY_MS;

  /** `onDirty`: something now waits for the flush cycle (the owner makes sure an alarm comes). */
  constructor(storage: DurableObjectStorage, policy: GatewayConfig["breaker"], onDirty: () => void) {
    this.#storage = new HubStorage(storage);
    this.breakers = new CircuitBreakers(
      policy,
      (change) => {
        log("info", "circuit breaker changed", {
          key: change.key,
          state: change.record?.state,
          openedAt: change.record?.openedAt,
        });
        this.#persistBreakers([change]);
      },
      onDirty,
    );
    this.counters = new HubCounters(onDirty);
  }

  /**
   * Reads breakers, counters and known models; on failure, the next attempt is due at
   * `retryAt` (the owner's alarm calls this again then). Never throws. Returns the stored alarm.
   */
  async restore(): Promise<number | null> {
    try {
      const stored = await this.#storage.load();
      const now = Date.now();
      const restored = this.breakers.restore(stored.breakers, now);
      if (restored > 0) log("info", "circuit breakers restored", { count: restored });
      this.#knownModels.restore(stored.knownModels, stored.legacyKnownModels, now);
      if (stored.legacyKnownModels !== undefined) this.#storage.dropLegacyKnownModels();
      this.counters.restore(stored.metrics);
      this.#restored = true;
      this.#retryAt = null;
      this.#flushedAt = now;
      return stored.alarm;
    } catch (err) {
      this.#retryAt = Date.now() + this.#retryMs;
      log("error", "hub restore failed; serving without stored breakers and counters until it succeeds", {
        retryInMs: this.#retryMs,
        ...describeError(err),
      });
      this.#retryMs = Math.min(this.#retryMs * 2, RESTORE_RETRY_MAX_MS);
      return null;
    }
  }

  /**
   * The known models, to read. Writes go through announceModels(), which persists a first sighting
   * at once; announcing on the list itself would skip that.
   */
  get knownModels(): Pick<KnownModels, "has" | "firstSeenAt"> {
    return this.#knownModels;
  }

  /** Agents announced these models: a model seen for the first time is written at once. */
  announceModels(models: Iterable<string>, now: number): void {
    const first = this.#knownModels.announce(models, now);
    if (Object.keys(first.puts).length > 0) this.#storage.write(first.puts, [], "known models");
  }

  /** Whether a failed restore is due to be tried again at `now`. */
  restoreDue(now: number): boolean {
    return !this.#restored && this.#retryAt !== null && this.#retryAt <= now;
  }

  /** When this state next needs the hub awake (a flush, a restore retry), or null. */
  nextDue(): number | null {
    const dirty = this.breakers.dirty || this.counters.dirty || this.#knownModels.dirty;
    const flushAt = dirty ? this.#flushedAt + FLUSH_INTERVAL_MS : null;
    if (flushAt === null) return this.#retryAt;
    return this.#retryAt === null ? flushAt : Math.min(flushAt, this.#retryAt);
  }

  /** On the flush cycle: buffered breaker counts, known models, and (once restored) counters. */
  flushIfDue(now: number, connected: (agentId: string) => boolean): void {
    if (now < this.#flushedAt + FLUSH_INTERVAL_MS) return;
    this.#flushedAt = now;
    this.#persistBreakers(this.breakers.flush(now, connected));
    const models = this.#knownModels.flush(now);
    if (Object.keys(models.puts).length > 0 || models.deletes.length > 0) {
      this.#storage.write(models.puts, models.deletes, "known models");
    }
    if (!this.#restored) return;
    const metrics = this.counters.flush();
    if (metrics !== null) this.#storage.write({ [METRICS_STORAGE_KEY]: metrics }, [], "hub metrics");
  }

  #persistBreakers(changes: BreakerChange[]): void {
    const puts: Record<string, unknown> = {};
    const deletes: string[] = [];
    for (const change of changes) {
      if (change.record === null) deletes.push(change.key);
      else puts[change.key] = change.record;
    }
    this.#storage.write(puts, deletes, "circuit breakers");
  }
}
