// A closed-loop driver: `concurrency` workers each run one request after another; after a warm-up,
// completions and delivered tokens are counted for a fixed window. Used both by the HTTP load
// generator (bench process) and by the in-process baselines (agent process), so every row is
// measured the same way.

export interface RequestContext {
  /** Report tokens as they arrive (they count toward throughput only inside the window). */
  onTokens(n: number): void;
}

export interface RequestOutcome {
  /** Time to first token, from the request's start. */
  ttftMs?: number;
  tokens: number;
}

export type RequestFn = (ctx: RequestContext) => Promise<RequestOutcome>;

export interface LoopOptions {
  concurrency: number;
  warmupMs: number;
  durationMs: number;
  /** Stop after this many measured completions even if the window is not over. */
  maxRequests?: number;
  /** Expected tokens per request; fewer is counted as an error. */
  expectTokens?: number;
  /** Cap on request starts per second across all workers (an open-loop pace); absent = as fast as possible. */
  ratePerSecond?: number;
}

export interface LoopResult {
  concurrency: number;
  /** Latency (ms) of each request that started after the warm-up and finished inside the window. */
  latencies: number[];
  ttfts: number[];
  completed: number;
  /** Every request finished during the run, warm-up and tail included (for CPU per request). */
  allCompleted: number;
  errors: number;
  /** First few error messages. */
  errorSamples: string[];
  /** Tokens delivered inside the window. */
  tokens: number;
  windowMs: number;
  requestsPerSecond: number;
  tokensPerSecond: number;
}

export async function closedLoop(run: RequestFn, o: LoopOptions): Promise<LoopResult> {
  const started = performance.now();
  const windowStart = started + o.warmupMs;
  let windowEnd = windowStart + o.durationMs;
  let stopped = false;
  let tokens = 0;
  const latencies: number[] = [];
  const ttfts: number[] = [];
  let errors = 0;
  let allCompleted = 0;
  const errorSamples: string[] = [];
  const ctx: RequestContext = {
    onTokens(n) {
      const now = performance.now();
      if (now >= windowStart && now < windowEnd) tokens += n;
    },
  };
  const interval = o.ratePerSecond ? 1000 / o.ratePerSecond : 0;
  let nextStart = started;
  const worker = async () => {
    while (!stopped) {
      if (interval > 0) {
        // Claim the next start slot, then wait for it; latency is timed from the slot on.
        const slot = Math.max(nextStart, performance.now());
        nextStart = slot + interval;
        const wait = slot - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      const t0 = performance.now();
      if (t0 >= windowEnd) break;
      try {
        const out = await run(ctx);
        const t1 = performance.now();
        allCompleted += 1;
        if (o.expectTokens !== undefined && out.tokens !== o.expectTokens) {
          throw new Error(`expected ${o.expectTokens} tokens, got ${out.tokens}`);
        }
        if (t0 >= windowStart && t1 <= windowEnd) {
          latencies.push(t1 - t0);
          if (out.ttftMs !== undefined) ttfts.push(out.ttftMs);
          if (o.maxRequests !== undefined && latencies.length >= o.maxRequests) {
            windowEnd = Math.min(windowEnd, t1);
            stopped = true;
          }
        }
      } catch (err) {
        errors += 1;
        if (errorSamples.length < 5) errorSamples.push(err instanceof Error ? err.message : String(err));
        // A failing target must not spin: back off a little.
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  const windowMs = Math.max(1, Math.min(windowEnd, performance.now()) - windowStart);
  return {
    concurrency: o.concurrency,
    latencies,
    ttfts,
    completed: latencies.length,
    allCompleted,
    errors,
    errorSamples,
    tokens,
    windowMs,
    requestsPerSecond: (latencies.length * 1000) / windowMs,
    tokensPerSecond: (tokens * 1000) / windowMs,
  };
}
