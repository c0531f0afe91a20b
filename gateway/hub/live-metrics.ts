// Live traffic per registry version, as this hub measures it: requests, errors, latency and
// time-to-first-token percentiles, tokens per second. Accumulated in memory per window and rolled
// up into the registry's metric history (D1) on an alarm at least every minute; a failed write keeps
// its windows for the next alarm (bounded), so a D1 hiccup loses nothing short of MAX_PENDING.
import type { LiveMetricsWindow } from "../registry/hub-store.ts";

/** Latency samples kept per version per window (a uniform reservoir beyond this). */
const MAX_SAMPLES = 512;
/** Versions counted per window; more fold into nothing (counted in `dropped`). */
const MAX_VERSIONS = 128;
/** Closed windows kept while D1 refuses them. */
const MAX_PENDING = 1024;

interface VersionWindow {
  requests: number;
  errors: number;
  latencies: number[];
  ttfts: number[];
  completionTokens: number;
  generationMs: number;
  seen: number;
  /** Successful requests that had a first token: the TTFT reservoir's own count. */
  ttftSeen: number;
}

export interface FinishedRequest {
  modelId: string;
  ok: boolean;
  latencyMs: number;
  ttftMs: number | null;
  completionTokens: number;
  /** From the first chunk to the end: the time the tokens took. */
  generationMs: number;
}

export class LiveMetrics {
  #windowStart: number;
  #versions = new Map<string, VersionWindow>();
  #pending: LiveMetricsWindow[] = [];
  dropped = 0;
  /** The pool's name when a window closes (a hub learns it from storage after it is constructed). */
  readonly #pool: () => string;

  constructor(
    pool: string | (() => string),
    readonly flushIntervalMs: number,
    now: number,
    private readonly random: () => number = Math.random,
  ) {
    this.#pool = typeof pool === "string" ? () => pool : pool;
    this.#windowStart = now;
  }

  record(request: FinishedRequest): void {
    let window = this.#versions.get(request.modelId);
    if (window === undefined) {
      if (this.#versions.size >= MAX_VERSIONS) {
        this.dropped += 1;
        return;
      }
      window = {
        requests: 0,
        errors: 0,
        latencies: [],
        ttfts: [],
        completionTokens: 0,
        generationMs: 0,
        seen: 0,
        ttftSeen: 0,
      };
      this.#versions.set(request.modelId, window);
    }
    window.requests += 1;
    if (!request.ok) window.errors += 1;
    if (request.ok) {
      window.seen += 1;
      this.#sample(window.latencies, request.latencyMs, window.seen);
      if (request.ttftMs !== null) {
        window.ttftSeen += 1;
        this.#sample(window.ttfts, request.ttftMs, window.ttftSeen);
      }
      window.completionTokens += request.completionTokens;
      window.generationMs += request.generationMs;
    }
  }

  /** When the open window should be closed, or null when it holds nothing and nothing waits. */
  nextDue(): number | null {
    return this.#versions.size > 0 || this.#pending.length > 0
      ? this.#windowStart + this.flushIntervalMs
      : null;
  }

  /** Closes the open window when due and returns everything waiting to be written. */
  take(now: number): LiveMetricsWindow[] {
    if (now >= this.#windowStart + this.flushIntervalMs) {
      for (const [modelId, w] of this.#versions) {
        this.#pending.push({
          modelId,
          pool: this.#pool(),
          windowStart: this.#windowStart,
          windowEnd: now,
          requests: w.requests,
          errors: w.errors,
          latencyP50Ms: percentile(w.latencies, 0.5),
          latencyP95Ms: percentile(w.latencies, 0.95),
          ttftP50Ms: percentile(w.ttfts, 0.5),
          tokensPerSecond: w.generationMs > 0 ? (w.completionTokens * 1000) / w.generationMs : null,
        });
      }
      this.#versions.clear();
      this.#windowStart = now;
      if (this.#pending.length > MAX_PENDING) this.#pending.splice(0, this.#pending.length - MAX_PENDING);
    }
    const out = this.#pending;
    this.#pending = [];
    return out;
  }

  /** A write failed: its windows wait for the next alarm. */
  putBack(windows: LiveMetricsWindow[]): void {
    this.#pending = [...windows, ...this.#pending].slice(-MAX_PENDING);
  }

  #sample(into: number[], value: number, seen: number): void {
    if (into.length < MAX_SAMPLES) into.push(value);
    else {
      const slot = Math.floor(this.random() * seen);
      if (slot < MAX_SAMPLES) into[slot] = value;
    }
  }
}

/** Nearest-rank percentile; null for no samples. */
export function percentile(values: readonly number[], q: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? null;
}
