// What the AgentHub keeps in Durable Object storage, read once per wake and written in batches:
// circuit breakers (transitions at once, counts on the flush cycle), request counters and the
// known-model list (flush cycle). A failed read is the hub's to retry (on an alarm: a timer inside
// the constructor's blockConcurrencyWhile would hold every event of the pool while it waits).
import { describeError, log } from "../log.ts";
import { BREAKER_KEY_PREFIX } from "./circuit-breakers.ts";
import { METRICS_STORAGE_KEY } from "./hub-metrics.ts";
import { KNOWN_MODEL_KEY_PREFIX, LEGACY_KNOWN_MODELS_KEY } from "./known-models.ts";

/** Buffered counts (breakers, metrics, models) reach storage at least this often while they change. */
export const FLUSH_INTERVAL_MS = 10_000;
/** Storage put() and delete() take at most 128 keys per call. */
const MAX_KEYS_PER_CALL = 128;
/** The pool's name, kept because an object woken by its alarm has no name in its id (measured in workerd). */
export const POOL_NAME_KEY = "pool";

/**
 * The pool this object is: `fromId` (its id's name) when known, stored when storage holds another
 * (or none); otherwise the stored one, or null when neither knows. Once per wake, never per request.
 */
export async function rememberPoolName(
  storage: DurableObjectStorage,
  fromId: string | undefined,
): Promise<string | null> {
  const stored = await storage.get<string>(POOL_NAME_KEY);
  if (fromId === undefined) return typeof stored === "string" && stored !== "" ? stored : null;
  if (stored !== fromId) await storage.put(POOL_NAME_KEY, fromId);
  return fromId;
}

export interface StoredHubState {
  alarm: number | null;
  breakers: unknown[];
  knownModels: [string, unknown][];
  legacyKnownModels: unknown;
  metrics: unknown;
}

export class HubStorage {
  constructor(private readonly storage: DurableObjectStorage) {}

  /** Everything a wake restores. */
  async load(): Promise<StoredHubState> {
    const [alarm, breakers, knownModels, legacyKnownModels, metrics] = await Promise.all([
      this.storage.getAlarm(),
      this.storage.list({ prefix: BREAKER_KEY_PREFIX }),
      this.storage.list({ prefix: KNOWN_MODEL_KEY_PREFIX }),
      this.storage.get(LEGACY_KNOWN_MODELS_KEY),
      this.storage.get(METRICS_STORAGE_KEY),
    ]);
    return {
      alarm,
      breakers: [...breakers.values()],
      knownModels: [...knownModels.entries()],
      legacyKnownModels,
      metrics,
    };
  }

  /** Writes and deletes in batches; failures are logged (the next flush writes the state again). */
  write(puts: Record<string, unknown>, deletes: readonly string[], what: string): void {
    const writes: Promise<unknown>[] = [];
    const entries = Object.entries(puts);
    for (let i = 0; i < entries.length; i += MAX_KEYS_PER_CALL) {
      writes.push(this.storage.put(Object.fromEntries(entries.slice(i, i + MAX_KEYS_PER_CALL))));
    }
    for (let i = 0; i < deletes.length; i += MAX_KEYS_PER_CALL) {
      writes.push(this.storage.delete(deletes.slice(i, i + MAX_KEYS_PER_CALL)));
    }
    for (const write of writes) {
      write.catch((err: unknown) => log("error", `persisting ${what} failed`, describeError(err)));
    }
  }

  /** The whole-list key from before per-model keys; deleted once its content has been rewritten. */
  dropLegacyKnownModels(): void {
    this.storage
      .delete(LEGACY_KNOWN_MODELS_KEY)
      .catch((err: unknown) => log("warn", "deleting the legacy model list failed", describeError(err)));
  }
}
