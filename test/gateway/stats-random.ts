// Seeded random numbers for the statistics tests and simulations, so every run sees the same
// draws. (node-agent/demo-model.ts has its own mulberry32; gateway tests do not import node-agent.)

/** mulberry32: a small seeded PRNG in [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A standard normal draw (Box–Muller). */
export function normal(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

export function logNormal(random: () => number, mu: number, sigma: number): number {
  return Math.exp(mu + sigma * normal(random));
}

export interface SimulatedArm {
  requests: number;
  errorRate?: number;
  /** Median latency in ms (log-normal, σ = latencySigma). */
  latencyMs?: number;
  latencySigma?: number;
  /** Share of successful requests that are `tailFactor` times slower (a heavy tail). */
  tailShare?: number;
  tailFactor?: number;
  tokensPerSecond?: number;
  /** Probability of a thumbs up; feedback on every `feedbackEvery`-th request. */
  thumbsUp?: number;
  feedbackEvery?: number;
  /** Every request's subject; else one drawn from `subjects` (default a million) named user-<i>. */
  subject?: string;
  subjects?: number;
  subjectHash?: (subject: string) => number;
}

/** Records `arm.requests` simulated requests into `stats` (an ArmStats, duck-typed to avoid an import cycle). */
export function simulateArm(
  stats: {
    record(o: {
      subjectHash: number;
      ok: boolean;
      latencyMs: number;
      ttftMs: number | null;
      tokensPerSecond: number | null;
    }): void;
    recordFeedback(score: number): void;
  },
  random: () => number,
  arm: SimulatedArm,
): void {
  const median = arm.latencyMs ?? 500;
  const sigma = arm.latencySigma ?? 0.4;
  for (let i = 0; i < arm.requests; i++) {
    const subject = arm.subject ?? `user-${Math.floor(random() * (arm.subjects ?? 1_000_000))}`;
    let latencyMs = logNormal(random, Math.log(median), sigma);
    if (random() < (arm.tailShare ?? 0)) latencyMs *= arm.tailFactor ?? 1;
    stats.record({
      subjectHash: arm.subjectHash?.(subject) ?? Math.floor(random() * 2 ** 32),
      ok: random() >= (arm.errorRate ?? 0),
      latencyMs,
      ttftMs: latencyMs / 5,
      tokensPerSecond: logNormal(random, Math.log(arm.tokensPerSecond ?? 50), 0.2),
    });
    if (arm.thumbsUp !== undefined && i % (arm.feedbackEvery ?? 1) === 0) {
      stats.recordFeedback(random() < arm.thumbsUp ? 1 : 0);
    }
  }
}
