// The periodic `health` frame: in-flight count, tokens per second since the previous report, the
// engine's models and the host's facts (and, with `artifacts`, the artifact cache), every
// healthIntervalMs from the hub's `welcome` on.
import type { HostFacts } from "../schema/protocol.ts";
import { sendFrame } from "./agent-frames.ts";
import type { CacheReport } from "./artifacts/artifact-cache.ts";
import type { Link } from "./connection.ts";
import type { Engine } from "./engines/engine.ts";

export interface HealthReporterOptions {
  engine: Engine;
  hostFacts: () => HostFacts;
  inFlight: () => number;
}

export class HealthReporter {
  private timer: NodeJS.Timeout | undefined;
  private tokens = 0;
  private since = performance.now();

  constructor(private readonly options: HealthReporterOptions) {}

  countTokens(count: number): void {
    this.tokens += count;
  }

  /**
   * Reports on `link` every `intervalMs`, counting tokens afresh; replaces any earlier schedule.
   * `cache`: what to report as health.cache (only when the hub agreed to `artifacts`).
   */
  start(link: Link, intervalMs: number, cache?: () => Promise<CacheReport> | undefined): void {
    this.stop();
    this.tokens = 0;
    this.since = performance.now();
    this.timer = setInterval(() => void this.report(link, cache), intervalMs);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async report(link: Link, cacheReport?: () => Promise<CacheReport> | undefined): Promise<void> {
    const now = performance.now();
    const seconds = (now - this.since) / 1000;
    const tokensPerSecond = seconds > 0 ? Math.round((this.tokens / seconds) * 100) / 100 : 0;
    this.tokens = 0;
    this.since = now;
    const models = await this.options.engine.listModels().then(
      (list) => list.slice(0, 256),
      () => undefined, // models are optional in health; a failing engine must not stop the report
    );
    const cache = await Promise.resolve(cacheReport?.()).catch(() => undefined); // optional too
    sendFrame(link, {
      type: "health",
      inFlight: this.options.inFlight(),
      queued: 0, // the agent refuses work beyond capacity instead of queueing it; the hub queues
      tokensPerSecond,
      ...(models ? { models } : {}),
      host: this.options.hostFacts(),
      ...(cache ? { cache } : {}),
    });
  }
}
