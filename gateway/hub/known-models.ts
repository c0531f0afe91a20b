// Models this pool has seen agents announce, with when: what tells a model nobody serves right now
// (503 NO_AGENT_AVAILABLE) from one nobody ever served (404 MODEL_NOT_FOUND). Bounded in count and
// age, and persisted one key per model (never the whole list per change): a model seen for the
// first time at once, as a restart right after would otherwise turn its 503s into 404s; later
// sightings on the hub's flush cycle.

/** Most models remembered; the least recently announced is forgotten first. */
export const MAX_KNOWN_MODELS = 512;
/** A model no agent announced for this long is forgotten (answers 404 again). */
export const KNOWN_MODEL_TTL_MS = 30 * 24 * 3600_000;
/** lastSeenAt reaches storage at most this often per model (it only matters at day scale). */
const LAST_SEEN_PERSIST_MS = 3600_000;
export const KNOWN_MODEL_KEY_PREFIX = "model:";
/** Before per-model keys, the whole list lived under this key; restore() migrates it. */
export const LEGACY_KNOWN_MODELS_KEY = "knownModels";

export interface KnownModel {
  firstSeenAt: number;
  lastSeenAt: number;
}

export interface KnownModelWrites {
  puts: Record<string, KnownModel>;
  deletes: string[];
}

export class KnownModels {
  /** In order of lastSeenAt, oldest first (re-inserted on every announcement). */
  readonly #models = new Map<string, KnownModel>();
  readonly #persistedAt = new Map<string, number>();
  readonly #dirty = new Set<string>();
  readonly #deleted = new Set<string>();

  has(model: string): boolean {
    return this.#models.has(model);
  }

  firstSeenAt(model: string): number | undefined {
    return this.#models.get(model)?.firstSeenAt;
  }

  get size(): number {
    return this.#models.size;
  }

  /**
   * Agents announced these models now. Returns the writes for models seen for the first time
   * (to be persisted at once); later sightings wait for flush().
   */
  announce(models: Iterable<string>, now: number): KnownModelWrites {
    const first: Record<string, KnownModel> = {};
    for (const model of models) {
      const known = this.#models.get(model);
      this.#models.delete(model);
      this.#models.set(model, { firstSeenAt: known?.firstSeenAt ?? now, lastSeenAt: now });
      this.#deleted.delete(model);
      if (known === undefined) {
        first[KNOWN_MODEL_KEY_PREFIX + model] = { firstSeenAt: now, lastSeenAt: now };
        this.#persistedAt.set(model, now);
        this.#dirty.delete(model);
      } else if (now - (this.#persistedAt.get(model) ?? 0) >= LAST_SEEN_PERSIST_MS) {
        this.#dirty.add(model);
      }
    }
    this.#evict(now);
    return { puts: first, deletes: [] };
  }

  get dirty(): boolean {
    return this.#dirty.size > 0 || this.#deleted.size > 0;
  }

  /** Storage writes for what changed since the last flush (keys with KNOWN_MODEL_KEY_PREFIX). */
  flush(now: number): KnownModelWrites {
    this.#evict(now);
    const puts: Record<string, KnownModel> = {};
    for (const model of this.#dirty) {
      const known = this.#models.get(model);
      if (known === undefined) continue;
      puts[KNOWN_MODEL_KEY_PREFIX + model] = known;
      this.#persistedAt.set(model, now);
    }
    const deletes = [...this.#deleted].map((m) => KNOWN_MODEL_KEY_PREFIX + m);
    this.#dirty.clear();
    this.#deleted.clear();
    return { puts, deletes };
  }

  /** Entries from storage (key -> value), and the legacy whole-list value if one exists. */
  restore(entries: Iterable<[string, unknown]>, legacy: unknown, now: number): void {
    const restored: [string, KnownModel][] = [];
    for (const [key, value] of entries) {
      const model = key.slice(KNOWN_MODEL_KEY_PREFIX.length);
      if (!isKnownModel(value)) continue;
      restored.push([model, value]);
      this.#persistedAt.set(model, value.lastSeenAt);
    }
    if (typeof legacy === "object" && legacy !== null) {
      for (const [model, firstSeenAt] of Object.entries(legacy)) {
        if (typeof firstSeenAt !== "number" || restored.some(([m]) => m === model)) continue;
        restored.push([model, { firstSeenAt, lastSeenAt: now }]);
        this.#dirty.add(model);
      }
    }
    restored.sort((a, b) => a[1].lastSeenAt - b[1].lastSeenAt);
    for (const [model, known] of restored) {
      if (!this.#models.has(model)) this.#models.set(model, known);
    }
    this.#evict(now);
  }

  #evict(now: number): void {
    for (const [model, known] of this.#models) {
      if (this.#models.size <= MAX_KNOWN_MODELS && now - known.lastSeenAt < KNOWN_MODEL_TTL_MS) break;
      this.#models.delete(model);
      this.#persistedAt.delete(model);
      this.#dirty.delete(model);
      this.#deleted.add(model);
    }
  }
}

function isKnownModel(value: unknown): value is KnownModel {
  if (typeof value !== "object" || value === null) return false;
  const { firstSeenAt, lastSeenAt } = value as Record<string, unknown>;
  return typeof firstSeenAt === "number" && typeof lastSeenAt === "number";
}
