// One arm's statistics in a rollout (a canary step's baseline or canary, an A/B test's a or b), as
// a hub accumulates them on the request path and persists them: counts, streaming moments of
// log(latency), log(TTFT), log(tokens/s) and feedback score, DDSketches for latency and TTFT
// percentiles, and a distinct-subject sample for the sample-ratio check. Everything merges, so the
// controller can add up the same arm's statistics from several hubs. Plain JSON, bounded size.
import { z } from "zod";
import { DDSketch, DDSketchJson } from "./ddsketch.ts";
import { DistinctSample, DistinctSampleJson } from "./distinct-sample.ts";
import { Moments, MomentsJson } from "./moments.ts";

export const ARM_STATS_VERSION = 1;

/**
 * Latency and TTFT moments are of log(max(ms, 1)): durations are log-normal-ish, so a location shift
 * of log latency is a latency ratio; the 1 ms floor keeps a 0 ms timer reading (Workers' clock is
 * coarse) from becoming −∞. The sketches keep the raw milliseconds.
 */
export const LOG_FLOOR_MS = 1;

export interface ArmObservation {
  /** subjectSampleHash(id, subject) from schema/rollouts.ts. */
  subjectHash: number;
  /** false = an error (counted for the error rate). */
  ok: boolean;
  /** The whole request, >= 0. */
  latencyMs: number;
  /** Time to first token; null when none. */
  ttftMs: number | null;
  /** Completion tokens / generation seconds; null when not measurable. */
  tokensPerSecond: number | null;
}

const DurationJson = z.object({ logMoments: MomentsJson, sketch: DDSketchJson });

export const ArmStatsJson = z.object({
  version: z.literal(ARM_STATS_VERSION),
  requests: z.number().int().nonnegative(),
  errors: z.number().int().nonnegative(),
  latency: DurationJson,
  ttft: DurationJson,
  tokensPerSecond: z.object({ logMoments: MomentsJson }),
  feedback: z.object({ moments: MomentsJson }),
  subjects: DistinctSampleJson,
});
export type ArmStatsJson = z.infer<typeof ArmStatsJson>;

export class ArmStats {
  #requests = 0;
  #errors = 0;
  /** Of successful requests only: an error's latency measures how fast it failed, not the model. */
  readonly latencyLog = new Moments();
  readonly latencySketch = new DDSketch();
  readonly ttftLog = new Moments();
  readonly ttftSketch = new DDSketch();
  readonly tokensPerSecondLog = new Moments();
  readonly feedback = new Moments();
  readonly subjects = new DistinctSample();

  static empty(): ArmStats {
    return new ArmStats();
  }

  /** Validates and rebuilds; throws an Error naming what is malformed. */
  static fromJSON(json: unknown): ArmStats {
    const parsed = ArmStatsJson.safeParse(json);
    if (!parsed.success) throw new Error(`malformed ArmStats JSON: ${z.prettifyError(parsed.error)}`);
    const data = parsed.data;
    if (data.errors > data.requests) throw new Error("malformed ArmStats JSON: more errors than requests");
    const stats = new ArmStats();
    stats.#requests = data.requests;
    stats.#errors = data.errors;
    try {
      stats.latencyLog.merge(Moments.fromJSON(data.latency.logMoments));
      stats.latencySketch.merge(DDSketch.fromJSON(data.latency.sketch));
      stats.ttftLog.merge(Moments.fromJSON(data.ttft.logMoments));
      stats.ttftSketch.merge(DDSketch.fromJSON(data.ttft.sketch));
      stats.tokensPerSecondLog.merge(Moments.fromJSON(data.tokensPerSecond.logMoments));
      stats.feedback.merge(Moments.fromJSON(data.feedback.moments));
      stats.subjects.merge(DistinctSample.fromJSON(data.subjects));
    } catch (error) {
      throw new Error(`malformed ArmStats JSON: ${(error as Error).message}`);
    }
    return stats;
  }

  get requests(): number {
    return this.#requests;
  }

  get errors(): number {
    return this.#errors;
  }

  get feedbackCount(): number {
    return this.feedback.n;
  }

  /** One finished request. Constant work apart from a rare sketch collapse or sample thinning. */
  record(o: ArmObservation): void {
    this.#requests += 1;
    this.subjects.add(o.subjectHash);
    if (!o.ok) {
      this.#errors += 1;
      return;
    }
    if (Number.isFinite(o.latencyMs) && o.latencyMs >= 0) {
      this.latencyLog.add(Math.log(Math.max(o.latencyMs, LOG_FLOOR_MS)));
      this.latencySketch.add(o.latencyMs);
    }
    if (o.ttftMs !== null && Number.isFinite(o.ttftMs) && o.ttftMs >= 0) {
      this.ttftLog.add(Math.log(Math.max(o.ttftMs, LOG_FLOOR_MS)));
      this.ttftSketch.add(o.ttftMs);
    }
    if (o.tokensPerSecond !== null && Number.isFinite(o.tokensPerSecond) && o.tokensPerSecond > 0) {
      this.tokensPerSecondLog.add(Math.log(o.tokensPerSecond));
    }
  }

  /** A user's rating of one response: 1 = thumbs up, 0 = thumbs down; out of range is an Error. */
  recordFeedback(score: number): void {
    if (!(score >= 0 && score <= 1)) throw new Error(`feedback score must be in [0, 1], got ${score}`);
    this.feedback.add(score);
  }

  /** Adds the same arm's statistics from another hub. */
  merge(other: ArmStats): void {
    this.#requests += other.#requests;
    this.#errors += other.#errors;
    this.latencyLog.merge(other.latencyLog);
    this.latencySketch.merge(other.latencySketch);
    this.ttftLog.merge(other.ttftLog);
    this.ttftSketch.merge(other.ttftSketch);
    this.tokensPerSecondLog.merge(other.tokensPerSecondLog);
    this.feedback.merge(other.feedback);
    this.subjects.merge(other.subjects);
  }

  toJSON(): ArmStatsJson {
    return {
      version: ARM_STATS_VERSION,
      requests: this.#requests,
      errors: this.#errors,
      latency: { logMoments: this.latencyLog.toJSON(), sketch: this.latencySketch.toJSON() },
      ttft: { logMoments: this.ttftLog.toJSON(), sketch: this.ttftSketch.toJSON() },
      tokensPerSecond: { logMoments: this.tokensPerSecondLog.toJSON() },
      feedback: { moments: this.feedback.toJSON() },
      subjects: this.subjects.toJSON(),
    };
  }
}
