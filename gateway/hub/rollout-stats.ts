// Per-arm statistics of the rollouts this hub splits traffic for, per phase (a canary step starts
// empty so each step is judged on what it saw): the ArmStats of arm a and b, how many requests were
// assigned to each (the sample-ratio check), and how many were served by the other arm because the
// assigned one had no usable agent (left out of the statistics). No I/O: rollout-shell.ts persists
// what `takeDirty` hands it and restores it on wake.
import type { Arm } from "../../schema/rollouts.ts";
import { type ArmObservation, ArmStats, type ArmStatsJson } from "../experiments/stats/arm-stats.ts";

export interface ArmCounts {
  a: number;
  b: number;
}

/** AgentHub RPC rolloutStats(id): one pool's view; the controller merges pools with ArmStats.merge. */
export interface RolloutStatsReport {
  /** By phase (String(phase)): each arm's statistics, and the requests assigned to each in that phase. */
  phases: Record<string, { a: ArmStatsJson; b: ArmStatsJson; assigned: ArmCounts }>;
  /** Requests whose assigned arm had no usable agent while the other had (served by it, not counted). */
  unavailable: number;
  /** Requests assigned to each arm, over all phases. */
  assigned: ArmCounts;
}

/** What storage keeps per rollout: the report, and since when the routing table no longer carries it. */
export interface StoredRolloutStats extends RolloutStatsReport {
  goneSince: number | null;
}

interface Phase {
  a: ArmStats;
  b: ArmStats;
  assigned: ArmCounts;
}

interface Book {
  phases: Map<number, Phase>;
  unavailable: number;
  goneSince: number | null;
}

export class RolloutStats {
  readonly #books = new Map<string, Book>();
  /** Rollouts changed since the last takeDirty(). */
  readonly #dirty = new Set<string>();

  get dirty(): boolean {
    return this.#dirty.size > 0;
  }

  /** A request assigned to `arm`; `counted` false when the other arm served it instead. */
  assigned(id: string, phase: number, arm: Arm, counted: boolean): void {
    const book = this.#book(id);
    this.#phase(book, phase).assigned[arm] += 1;
    if (!counted) book.unavailable += 1;
    this.#dirty.add(id);
  }

  record(id: string, phase: number, arm: Arm, observation: ArmObservation): void {
    this.#phase(this.#book(id), phase)[arm].record(observation);
    this.#dirty.add(id);
  }

  /** A score for a request `arm` served; false when the rollout's statistics are gone. */
  feedback(id: string, phase: number, arm: Arm, score: number): boolean {
    const book = this.#books.get(id);
    if (book === undefined) return false;
    this.#phase(book, phase)[arm].recordFeedback(score);
    this.#dirty.add(id);
    return true;
  }

  report(id: string): RolloutStatsReport {
    const book = this.#books.get(id);
    if (book === undefined) return { phases: {}, unavailable: 0, assigned: { a: 0, b: 0 } };
    const { goneSince: _, ...report } = toStored(book);
    return report;
  }

  /**
   * Marks rollouts the routing table no longer carries (`live`: the ids it does) and drops those
   * gone for `retentionMs`; returns the dropped ids (their storage is the caller's to delete).
   */
  prune(live: ReadonlySet<string>, now: number, retentionMs: number): string[] {
    const dropped: string[] = [];
    for (const [id, book] of this.#books) {
      if (live.has(id)) {
        if (book.goneSince !== null) this.#dirty.add(id);
        book.goneSince = null;
      } else if (book.goneSince === null) {
        book.goneSince = now;
        this.#dirty.add(id);
      } else if (now - book.goneSince >= retentionMs) {
        this.#books.delete(id);
        this.#dirty.delete(id);
        dropped.push(id);
      }
    }
    return dropped;
  }

  /** The earliest moment a gone rollout's statistics are due to be dropped, or null. */
  nextDrop(retentionMs: number): number | null {
    let next: number | null = null;
    for (const book of this.#books.values()) {
      if (book.goneSince === null) continue;
      const at = book.goneSince + retentionMs;
      if (next === null || at < next) next = at;
    }
    return next;
  }

  /** The rollouts changed since the last call, as storage keeps them. */
  takeDirty(): Map<string, StoredRolloutStats> {
    const out = new Map<string, StoredRolloutStats>();
    for (const id of this.#dirty) {
      const book = this.#books.get(id);
      if (book !== undefined) out.set(id, toStored(book));
    }
    this.#dirty.clear();
    return out;
  }

  /** A write of `id` failed: it is written again on the next flush. */
  markDirty(id: string): void {
    if (this.#books.has(id)) this.#dirty.add(id);
  }

  /**
   * What storage held for `id`, added to whatever this wake counted already (a restore that had to
   * be retried). Throws on malformed statistics.
   */
  restore(id: string, stored: StoredRolloutStats): void {
    const book = this.#book(id);
    // Counted this wake before the restore: the sum is what storage must hold now.
    if (book.phases.size > 0 || book.unavailable > 0) this.#dirty.add(id);
    book.unavailable += stored.unavailable;
    if (book.goneSince === null) book.goneSince = stored.goneSince;
    for (const [key, value] of Object.entries(stored.phases)) {
      const phase = this.#phase(book, Number(key));
      phase.a.merge(ArmStats.fromJSON(value.a));
      phase.b.merge(ArmStats.fromJSON(value.b));
      phase.assigned.a += value.assigned.a;
      phase.assigned.b += value.assigned.b;
    }
  }

  #book(id: string): Book {
    let book = this.#books.get(id);
    if (book === undefined) {
      book = { phases: new Map(), unavailable: 0, goneSince: null };
      this.#books.set(id, book);
    }
    return book;
  }

  #phase(book: Book, phase: number): Phase {
    let entry = book.phases.get(phase);
    if (entry === undefined) {
      entry = { a: ArmStats.empty(), b: ArmStats.empty(), assigned: { a: 0, b: 0 } };
      book.phases.set(phase, entry);
    }
    return entry;
  }
}

function toStored(book: Book): StoredRolloutStats {
  const phases: RolloutStatsReport["phases"] = {};
  const assigned: ArmCounts = { a: 0, b: 0 };
  for (const [phase, entry] of book.phases) {
    phases[String(phase)] = { a: entry.a.toJSON(), b: entry.b.toJSON(), assigned: { ...entry.assigned } };
    assigned.a += entry.assigned.a;
    assigned.b += entry.assigned.b;
  }
  return { phases, unavailable: book.unavailable, assigned, goneSince: book.goneSince };
}
