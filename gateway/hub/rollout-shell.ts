// The hub's side of rollouts, as one part the AgentHub shell drives: per-arm statistics of the
// requests rollouts assigned (rollout-stats.ts), the recent requests feedback refers to
// (recent-requests.ts), and their persistence in the hub's storage on the flush cycle (one alarm,
// at most every ROLLOUT_FLUSH_MS while something changed), restored on wake. Never a storage
// write, nor a D1 write, per request.
import type { RequestOutcome } from "../../schema/hub.ts";
import type { RoutingTable } from "../../schema/registry.ts";
import { type Arm, subjectSampleHash } from "../../schema/rollouts.ts";
import { describeError, log } from "../log.ts";
import type { InferenceJob } from "./inference-job.ts";
import { RECENT_KEY_PREFIX, RecentRequests } from "./recent-requests.ts";
import { RolloutStats, type RolloutStatsReport, type StoredRolloutStats } from "./rollout-stats.ts";
import { type RolloutAssignment, rolloutIds } from "./routing-table.ts";

/** Changed statistics and feedback reach storage this long after the first change at most. */
export const ROLLOUT_FLUSH_MS = 5_000;
/** Statistics of a rollout the routing table no longer carries are kept this long, then dropped. */
export const ROLLOUT_STATS_RETENTION_MS = 60 * 60_000;
export const STATS_KEY_PREFIX = "rollout-stats:";
/** A failed restore is tried again on the flush cycle after this long. */
const RESTORE_RETRY_MS = 5_000;

/** AgentHub RPC recordFeedback's answer. */
export type FeedbackResult =
  | { status: "recorded"; rollout: { id: string; arm: Arm } | null }
  | { status: "not_found" }
  | { status: "forbidden" }
  | { status: "duplicate" };

/** Outcomes an arm is judged on: the rest (cancelled, queue_full, ...) are not the version's doing. */
const JUDGED: Partial<Record<RequestOutcome, boolean>> = { ok: true, upstream_error: false, timeout: false };

export class HubRollouts {
  readonly #stats = new RolloutStats();
  readonly #recent = new RecentRequests();
  /** When the first unwritten change happened (hub clock); null when everything is written. */
  #dirtySince: number | null = null;
  /** False until what storage holds was read: nothing is written over it before. */
  #restored = false;
  #restoreRetryAt: number | null = null;

  constructor(
    private readonly storage: DurableObjectStorage,
    private readonly table: () => RoutingTable,
    /** Asks for the hub's alarm no later than `at` (once per flush cycle, not per request). */
    private readonly wakeAt: (at: number) => void,
  ) {}

  /** A wake: the statistics and recent requests storage holds. Never throws. */
  async restore(now = Date.now()): Promise<void> {
    try {
      const [stats, recent] = await Promise.all([
        this.storage.list({ prefix: STATS_KEY_PREFIX }),
        this.storage.list({ prefix: RECENT_KEY_PREFIX }),
      ]);
      for (const [key, value] of stats) {
        try {
          this.#stats.restore(key.slice(STATS_KEY_PREFIX.length), value as StoredRolloutStats);
        } catch (err) {
          log("error", "stored rollout statistics unreadable; dropped", { key, ...describeError(err) });
        }
      }
      this.#recent.restore(recent, now);
      this.#restored = true;
      this.#restoreRetryAt = null;
      if (this.#stats.dirty || this.#recent.dirty) this.#touch(now);
    } catch (err) {
      this.#restoreRetryAt = now + RESTORE_RETRY_MS;
      log("error", "rollout statistics restore failed; retrying", describeError(err));
    }
  }

  /** The dispatcher assigned a request (Dispatcher host rolloutAssigned). */
  assigned(assignment: RolloutAssignment, counted: boolean, now: number): void {
    this.#stats.assigned(assignment.id, assignment.phase, assignment.arm, counted);
    this.#touch(now);
  }

  /** The assigned arm's breakers shed a request: an error of that arm (Dispatcher host rolloutShed). */
  shed(assignment: RolloutAssignment, subject: string, now: number): void {
    this.#stats.record(assignment.id, assignment.phase, assignment.arm, {
      subjectHash: subjectSampleHash(assignment.id, subject),
      ok: false,
      latencyMs: 0,
      ttftMs: null,
      tokensPerSecond: null,
    });
    this.#touch(now);
  }

  /** A request ended: remembered for feedback, and observed for its arm when it is judged on it. */
  finished(job: InferenceJob, outcome: RequestOutcome, now: number): void {
    const served = job.rollout;
    const counted = served?.counted === true ? served : null;
    const request = job.request;
    this.#recent.remember(request.requestId, {
      caller: request.caller,
      rollout: counted === null ? null : { id: counted.id, phase: counted.phase, arm: counted.arm },
      at: now,
      feedback: false,
    });
    if (counted === null) return;
    this.#touch(now);
    const ok = JUDGED[outcome];
    if (ok === undefined) return;
    const generationMs = job.firstChunkAt === null ? 0 : now - job.firstChunkAt;
    this.#stats.record(counted.id, counted.phase, counted.arm, {
      subjectHash: subjectSampleHash(counted.id, request.subject),
      ok,
      latencyMs: now - request.response.receivedAt,
      ttftMs:
        job.firstChunkAt !== null && job.dispatchedAt !== null ? job.firstChunkAt - job.dispatchedAt : null,
      tokensPerSecond:
        job.outputTokens >= 1 && generationMs > 0 ? job.outputTokens / (generationMs / 1000) : null,
    });
  }

  /** RPC rolloutStats: this pool's statistics of one rollout (empty when it saw none). */
  report(id: string): RolloutStatsReport {
    return this.#stats.report(id);
  }

  /** RPC recordFeedback: a score in [0, 1] for a request `caller` made. */
  feedback(requestId: string, caller: string, score: number, now: number): FeedbackResult {
    if (!(score >= 0 && score <= 1)) throw new RangeError(`feedback score must be in [0, 1], got ${score}`);
    const check = this.#recent.feedback(requestId, caller, now);
    if (check.status !== "ok") return check;
    const rollout = check.request.rollout;
    this.#touch(now);
    if (rollout === null || !this.#stats.feedback(rollout.id, rollout.phase, rollout.arm, score)) {
      return { status: "recorded", rollout: null };
    }
    return { status: "recorded", rollout: { id: rollout.id, arm: rollout.arm } };
  }

  /** When the flush cycle next has work (hub clock), for the hub's one alarm; never `now` itself. */
  nextDue(now: number): number | null {
    let next = this.#dirtySince === null ? null : this.#dirtySince + ROLLOUT_FLUSH_MS;
    const drop = this.#stats.nextDrop(ROLLOUT_STATS_RETENTION_MS);
    if (drop !== null && (next === null || drop < next)) next = drop;
    if (this.#restoreRetryAt !== null && (next === null || this.#restoreRetryAt < next)) {
      next = this.#restoreRetryAt;
    }
    return next === null ? null : Math.max(now + 1, next);
  }

  /** Whether a failed restore is due to be tried again at `now` (the alarm awaits restore() then). */
  restoreDue(now: number): boolean {
    return !this.#restored && this.#restoreRetryAt !== null && this.#restoreRetryAt <= now;
  }

  /**
   * The flush cycle, as if the clock read `now`: statistics of rollouts gone from the table for an
   * hour dropped, and what changed written once ROLLOUT_FLUSH_MS passed since the first change.
   */
  flushIfDue(now: number): void {
    if (!this.#restored) return;
    const dropped = this.#stats.prune(rolloutIds(this.table()), now, ROLLOUT_STATS_RETENTION_MS);
    if (dropped.length > 0) {
      log("info", "rollout statistics dropped", { rollouts: dropped });
      this.#write(
        {},
        dropped.map((id) => `${STATS_KEY_PREFIX}${id}`),
      );
    }
    if (this.#stats.dirty) this.#touch(now);
    if (this.#dirtySince === null || now < this.#dirtySince + ROLLOUT_FLUSH_MS) return;
    this.#dirtySince = null;
    this.#recent.expire(now);
    const puts: Record<string, unknown> = {};
    for (const [id, stored] of this.#stats.takeDirty()) puts[`${STATS_KEY_PREFIX}${id}`] = stored;
    const recent = this.#recent.takeWrites();
    Object.assign(puts, recent.puts);
    this.#write(puts, recent.deletes);
  }

  #write(puts: Record<string, unknown>, deletes: string[]): void {
    const keys = Object.keys(puts);
    // put() and delete() take at most 128 keys per call.
    for (let i = 0; i < keys.length; i += 128) {
      const batch = keys.slice(i, i + 128);
      this.storage.put(Object.fromEntries(batch.map((k) => [k, puts[k]]))).catch((err: unknown) => {
        log("error", "persisting rollout statistics failed; retried on the next flush", describeError(err));
        for (const key of batch) this.#retry(key);
      });
    }
    for (let i = 0; i < deletes.length; i += 128) {
      const batch = deletes.slice(i, i + 128);
      this.storage.delete(batch).catch((err: unknown) => {
        log("error", "deleting rollout statistics failed", describeError(err));
        for (const key of batch) this.#retry(key);
      });
    }
  }

  /** Something changed: it is written within ROLLOUT_FLUSH_MS. */
  #touch(now: number): void {
    if (this.#dirtySince !== null) return;
    this.#dirtySince = now;
    if (this.#restored) this.wakeAt(now + ROLLOUT_FLUSH_MS);
  }

  #retry(key: string): void {
    if (key.startsWith(STATS_KEY_PREFIX)) this.#stats.markDirty(key.slice(STATS_KEY_PREFIX.length));
    else this.#recent.markDirty(key);
    this.#touch(Date.now());
  }
}
