// ChunkCoalescer: the first visible text at once, the rest batched by time and size.
import { afterEach, describe, expect, it, vi } from "vitest";
import { ChunkCoalescer as ChunkCoalescerFromAgent } from "../../node-agent/agent.ts";
import { ChunkCoalescer } from "../../node-agent/chunk-coalescer.ts";

describe("ChunkCoalescer", () => {
  it("is still exported from agent.ts, and what it exports coalesces", () => {
    expect(ChunkCoalescerFromAgent).toBe(ChunkCoalescer);
    vi.useFakeTimers();
    const emitted: Array<[string, number]> = [];
    const coalescer = new ChunkCoalescerFromAgent((t, n) => emitted.push([t, n]), {
      flushMs: 16,
      now: () => Date.now(),
    });
    coalescer.push({ text: "a", tokens: 1 });
    coalescer.push({ text: "b", tokens: 1 });
    expect(emitted).toEqual([["a", 1]]);
    vi.advanceTimersByTime(16);
    expect(emitted).toEqual([
      ["a", 1],
      ["b", 1],
    ]);
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  function harness(options: { flushMs?: number; maxBytes?: number } = {}) {
    vi.useFakeTimers();
    const emitted: Array<[string, number]> = [];
    const coalescer = new ChunkCoalescer((t, n) => emitted.push([t, n]), {
      ...options,
      now: () => Date.now(),
    });
    return { emitted, coalescer };
  }

  it("sends the first visible text at once and batches the rest for flushMs", () => {
    const { emitted, coalescer } = harness({ flushMs: 16 });
    coalescer.push({ text: "", tokens: 1 });
    expect(emitted).toEqual([]);
    coalescer.push({ text: "a", tokens: 1 });
    expect(emitted).toEqual([["a", 2]]);
    coalescer.push({ text: "b", tokens: 1 });
    vi.advanceTimersByTime(10);
    coalescer.push({ text: "c", tokens: 1 });
    expect(emitted).toHaveLength(1);
    vi.advanceTimersByTime(6);
    expect(emitted).toEqual([
      ["a", 2],
      ["bc", 2],
    ]);
    vi.advanceTimersByTime(100);
    expect(emitted).toHaveLength(2);
  });

  it("flushes on size, and on elapsed time even when timers cannot run", () => {
    const { emitted, coalescer } = harness({ flushMs: 16, maxBytes: 10 });
    coalescer.push({ text: "first", tokens: 1 });
    coalescer.push({ text: "12345", tokens: 1 });
    coalescer.push({ text: "67890", tokens: 1 });
    expect(emitted.at(-1)).toEqual(["1234567890", 2]);
    coalescer.push({ text: "late", tokens: 1 });
    vi.setSystemTime(Date.now() + 20); // the clock moves but no timer has fired yet
    coalescer.push({ text: "r", tokens: 1 });
    expect(emitted.at(-1)).toEqual(["later", 2]);
  });

  it("flush() empties the buffer and discard() drops it", () => {
    const { emitted, coalescer } = harness();
    coalescer.push({ text: "a", tokens: 1 });
    coalescer.push({ text: "b", tokens: 1 });
    coalescer.flush();
    coalescer.flush();
    coalescer.push({ text: "c", tokens: 1 });
    coalescer.discard();
    vi.advanceTimersByTime(100);
    expect(emitted).toEqual([
      ["a", 1],
      ["b", 1],
    ]);
  });
});
