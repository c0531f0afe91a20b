// The resilience vars: defaults, validation, and what a malformed value falls back to.
import { describe, expect, it } from "vitest";
import { readConfig } from "../../gateway/config.ts";

describe("readConfig (resilience vars)", () => {
  it("has the documented defaults", () => {
    const config = readConfig({});
    expect(config).toMatchObject({
      dispatchMaxAttempts: 3,
      breaker: { windowMs: 60_000, minCalls: 5, failureRate: 0.5, cooldownMs: 30_000, halfOpenProbes: 1 },
      requestTimeoutMs: 120_000,
      requestTimeoutMaxMs: 600_000,
      firstChunkTimeoutMs: 30_000,
      idleChunkTimeoutMs: 30_000,
      streamBufferMaxBytes: 1024 * 1024,
      queueMax: 64,
    });
    expect(config.modelFallbacks.size).toBe(0);
  });

  it("reads MODEL_FALLBACKS, and ignores it when malformed", () => {
    const ok = readConfig({ MODEL_FALLBACKS: '{"big": ["medium", "small"], "a": ["a", "b"]}' });
    expect([...ok.modelFallbacks]).toEqual([
      ["big", ["medium", "small"]],
      ["a", ["b"]], // a model is never its own fallback
    ]);
    for (const bad of ["{nope", '["a"]', '{"a": "b"}', '{"a": ["bad name!"]}', '{"a": [1]}']) {
      expect(readConfig({ MODEL_FALLBACKS: bad }).modelFallbacks.size, bad).toBe(0);
    }
  });

  it("replaces out-of-range numbers with their defaults", () => {
    const config = readConfig({
      BREAKER_FAILURE_RATE: "1.5",
      BREAKER_MIN_CALLS: "0",
      DISPATCH_MAX_ATTEMPTS: "two",
      STREAM_BUFFER_MAX_BYTES: "-1",
    });
    expect(config.breaker.failureRate).toBe(0.5);
    expect(config.breaker.minCalls).toBe(5);
    expect(config.dispatchMaxAttempts).toBe(3);
    expect(config.streamBufferMaxBytes).toBe(1024 * 1024);
    expect(readConfig({ BREAKER_FAILURE_RATE: "1" }).breaker.failureRate).toBe(1);
  });
});
