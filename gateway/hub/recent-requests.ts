// The requests this hub answered recently, by the id callers know them by (X-Request-Id), so that
// POST /feedback can check who made one and which rollout arm served it. Bounded in count and age.
// Those a rollout arm served are persisted in chunks of CHUNK_SIZE (rewritten on the flush cycle
// when they change, never one storage write per request); the others live in memory only.
import type { Arm } from "../../schema/rollouts.ts";

export const RECENT_REQUESTS_MAX = 20_000;
export const RECENT_REQUEST_TTL_MS = 24 * 60 * 60_000;
/** Persisted requests per storage value (~100 bytes each: well below a value's size limit). */
export const CHUNK_SIZE = 500;
export const RECENT_KEY_PREFIX = "rollout-recent:";

export interface RecentRequest {
  /** The token subject that made it: the only one who may give feedback on it. */
  caller: string;
  /** The arm whose statistics its feedback goes to (null: none, or it went uncounted). */
  rollout: { id: string; phase: number; arm: Arm } | null;
  at: number;
  feedback: boolean;
}

interface Entry extends RecentRequest {
  /** The persisted chunk it is in; -1 when kept in memory only. */
  chunk: number;
}

/** One persisted request: [requestId, caller, rollout id, phase, arm, at, feedback given (0/1)]. */
type StoredEntry = [string, string, string, number, Arm, number, 0 | 1];

export type FeedbackCheck =
  | { status: "ok"; request: RecentRequest }
  | { status: "not_found" }
  | { status: "forbidden" }
  | { status: "duplicate" };

export const chunkKey = (chunk: number) => `${RECENT_KEY_PREFIX}${String(chunk).padStart(10, "0")}`;

export class RecentRequests {
  /** In insertion order, which is age order: the oldest go first. */
  readonly #entries = new Map<string, Entry>();
  readonly #chunks = new Map<number, Set<string>>();
  readonly #dirtyChunks = new Set<number>();
  #nextSeq = 0;

  constructor(
    readonly max = RECENT_REQUESTS_MAX,
    readonly ttlMs = RECENT_REQUEST_TTL_MS,
  ) {}

  get size(): number {
    return this.#entries.size;
  }

  get dirty(): boolean {
    return this.#dirtyChunks.size > 0;
  }

  remember(requestId: string, request: RecentRequest): void {
    this.#forget(requestId);
    const chunk = request.rollout === null ? -1 : Math.floor(this.#nextSeq++ / CHUNK_SIZE);
    this.#entries.set(requestId, { ...request, chunk });
    if (chunk >= 0) this.#join(chunk, requestId);
    if (this.#entries.size > this.max) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#forget(oldest);
    }
  }

  /** Whether `caller` may give feedback on `requestId` now; "ok" marks it given. */
  feedback(requestId: string, caller: string, now: number): FeedbackCheck {
    const entry = this.#entries.get(requestId);
    if (entry === undefined || now - entry.at > this.ttlMs) return { status: "not_found" };
    if (entry.caller !== caller) return { status: "forbidden" };
    if (entry.feedback) return { status: "duplicate" };
    entry.feedback = true;
    if (entry.chunk >= 0) this.#dirtyChunks.add(entry.chunk);
    return { status: "ok", request: entry };
  }

  /** Forgets requests older than the TTL. */
  expire(now: number): void {
    for (const [id, entry] of this.#entries) {
      if (now - entry.at <= this.ttlMs) break;
      this.#forget(id);
    }
  }

  /** The chunks changed since the last call: values to put, and keys of emptied chunks to delete. */
  takeWrites(): { puts: Record<string, StoredEntry[]>; deletes: string[] } {
    const puts: Record<string, StoredEntry[]> = {};
    const deletes: string[] = [];
    for (const chunk of this.#dirtyChunks) {
      const ids = this.#chunks.get(chunk);
      if (ids === undefined || ids.size === 0) {
        this.#chunks.delete(chunk);
        deletes.push(chunkKey(chunk));
        continue;
      }
      const stored: StoredEntry[] = [];
      for (const id of ids) {
        const e = this.#entries.get(id);
        if (e?.rollout) {
          const { rollout } = e;
          stored.push([id, e.caller, rollout.id, rollout.phase, rollout.arm, e.at, e.feedback ? 1 : 0]);
        }
      }
      puts[chunkKey(chunk)] = stored;
    }
    this.#dirtyChunks.clear();
    return { puts, deletes };
  }

  /** A chunk's write failed: written again on the next flush. */
  markDirty(key: string): void {
    const chunk = Number(key.slice(RECENT_KEY_PREFIX.length));
    if (Number.isSafeInteger(chunk)) this.#dirtyChunks.add(chunk);
  }

  /**
   * What storage held (`storage.list({prefix})` entries, in key order), older than anything
   * remembered this wake. Requests past the TTL are dropped (their chunks rewritten or deleted).
   */
  restore(stored: Iterable<[string, unknown]>, now: number): void {
    // Nothing of this wake was written yet (the shell writes only once restored): renumber it after
    // what storage holds.
    const current = [...this.#entries].map(([id, { chunk: _, ...request }]) => [id, request] as const);
    this.#entries.clear();
    this.#chunks.clear();
    this.#dirtyChunks.clear();
    let maxChunk = -1;
    for (const [key, value] of stored) {
      const chunk = Number(key.slice(RECENT_KEY_PREFIX.length));
      if (!Number.isSafeInteger(chunk) || chunk < 0 || !Array.isArray(value)) continue;
      maxChunk = Math.max(maxChunk, chunk);
      for (const [id, caller, rolloutId, phase, arm, at, feedback] of value as StoredEntry[]) {
        if (now - at > this.ttlMs || this.#entries.has(id)) {
          this.#dirtyChunks.add(chunk);
          continue;
        }
        const rollout = { id: rolloutId, phase, arm };
        this.#entries.set(id, { caller, rollout, at, feedback: feedback === 1, chunk });
        this.#join(chunk, id, false);
      }
      if (!this.#chunks.has(chunk)) this.#dirtyChunks.add(chunk);
    }
    this.#nextSeq = (maxChunk + 1) * CHUNK_SIZE;
    for (const [id, request] of current) this.remember(id, request);
    while (this.#entries.size > this.max) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#forget(oldest);
    }
  }

  #join(chunk: number, id: string, dirty = true): void {
    let ids = this.#chunks.get(chunk);
    if (ids === undefined) {
      ids = new Set();
      this.#chunks.set(chunk, ids);
    }
    ids.add(id);
    if (dirty) this.#dirtyChunks.add(chunk);
  }

  #forget(id: string): void {
    const entry = this.#entries.get(id);
    if (entry === undefined) return;
    this.#entries.delete(id);
    if (entry.chunk < 0) return;
    this.#chunks.get(entry.chunk)?.delete(id);
    this.#dirtyChunks.add(entry.chunk);
  }
}
