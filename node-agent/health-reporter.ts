// The periodic `health` frame: in-flight count, the recent decode rate (tokens per second), the
// engine's models and the host's facts (and, with `artifacts`, the artifact cache), every
// healthIntervalMs from the hub's `welcome` on.
import type { DoneFrame, HostFacts } from "../schema/protocol.ts";
import { sendFrame } from "./agent-frames.ts";
import type { CacheReport } from "./artifacts/artifact-cache.ts";
import type { Link } from "./connection.ts";
import type { Engine } from "./engines/engine.ts";

/** What a finished generation's `done` frame says, which is all the decode rate needs. */
export type FinishedGeneration = Pick<DoneFrame, "finishReason" | "usage" | "timings">;

/** How far back tokensPerSecond looks, and the width of the buckets it sums over. */
export const TOKEN_RATE_WINDOW_MS = 60_000;
const TOKEN_RATE_BUCKET_MS = 5_000;

/**
 * The decode rate of recent successful generations: tokens after the first over the time from
 * the first token to the end, summed over the generations that ended (stop or length) in the last
 * windowMs. Prompt processing (time to first token) is left out, as are cancelled and failed
 * generations and those with a single token (no decode time to measure). Sums are kept per
 * bucket, so memory stays constant at any request rate.
 */
export class DecodeRate {
  private readonly buckets: { start: number; tokens: number; ms: number }[] = [];

  constructor(
    private readonly now: () => number = () => performance.now(),
    private readonly windowMs = TOKEN_RATE_WINDOW_MS,
    private readonly bucketMs = TOKEN_RATE_BUCKET_MS,
  ) {}

  record({ finishReason, usage, timings }: FinishedGeneration): void {
    if (finishReason === "cancelled" || timings.firstTokenMs === null) return;
    const tokens = usage.completionTokens - 1;
    const ms = timings.totalMs - timings.firstTokenMs;
    if (tokens < 1 || !(ms > 0)) return;
    const start = Math.floor(this.now() / this.bucketMs) * this.bucketMs;
    let bucket = this.buckets.at(-1);
    if (bucket?.start !== start) {
      bucket = { start, tokens: 0, ms: 0 };
      this.buckets.push(bucket);
    }
    bucket.tokens += tokens;
    bucket.ms += ms;
    this.prune();
  }

  /** Tokens per second, rounded to 0.01; 0 when no generation in the window qualifies. */
  perSecond(): number {
    this.prune();
    let tokens = 0;
    let ms = 0;
    for (const bucket of this.buckets) {
      tokens += bucket.tokens;
      ms += bucket.ms;
    }
    return ms > 0 ? Math.round((tokens / (ms / 1000)) * 100) / 100 : 0;
  }

  private prune(): void {
    // A bucket counts while any part of it lies inside the window: at most one bucket's width more.
    const oldest = this.now() - this.windowMs - this.bucketMs;
    while (this.buckets[0] && this.buckets[0].start <= oldest) this.buckets.shift();
  }
}

export interface HealthReporterOptions {
  engine: Engine;
  /** The host's facts; awaited, so a sampler can read the OS afresh for each report. */
  hostFacts: () => HostFacts | Promise<HostFacts>;
  inFlight: () => number;
  now?: () => number;
}

export class HealthReporter {
  private timer: NodeJS.Timeout | undefined;
  private readonly rate: DecodeRate;

  constructor(private readonly options: HealthReporterOptions) {
    this.rate = new DecodeRate(options.now);
  }

  /** A generation ended with `done`: counted in tokensPerSecond while it is recent. */
  generationFinished(generation: FinishedGeneration): void {
    this.rate.record(generation);
  }

  /**
   * Reports on `link` every `intervalMs`; replaces any earlier schedule. The decode rate carries
   * over a reconnect: it describes the engine, not the link.
   * `cache`: what to report as health.cache (only when the hub agreed to `artifacts`).
   */
  start(link: Link, intervalMs: number, cache?: () => Promise<CacheReport> | undefined): void {
    this.stop();
    this.timer = setInterval(() => void this.report(link, cache), intervalMs);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async report(link: Link, cacheReport?: () => Promise<CacheReport> | undefined): Promise<void> {
    const [models, cache, host] = await Promise.all([
      // models are optional in health; a failing engine must not stop the report
      this.options.engine.listModels().then(
        (list) => list.slice(0, 256),
        () => undefined,
      ),
      Promise.resolve(cacheReport?.()).catch(() => undefined), // optional too
      this.options.hostFacts(),
    ]);
    sendFrame(link, {
      type: "health",
      inFlight: this.options.inFlight(),
      queued: 0, // the agent refuses work beyond capacity instead of queueing it; the hub queues
      tokensPerSecond: this.rate.perSecond(),
      ...(models ? { models } : {}),
      host,
      ...(cache ? { cache } : {}),
    });
  }
}
