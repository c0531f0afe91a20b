// Pure scheduling logic: agent choice, availability, the bounded queue, Retry-After.
import { describe, expect, it } from "vitest";
import {
  type AgentLoad,
  ewma,
  hasCandidate,
  modelAvailability,
  pickAgent,
  RETRY_AFTER_MAX_SECONDS,
  RequestQueue,
  retryAfterSeconds,
} from "../../gateway/hub/scheduling.ts";
import { formatModelId, type ModelId } from "../../schema/model-id.ts";

const [m, x, other, nope] = ["m", "x", "other", "nope"].map((name) => formatModelId(name)) as [
  ModelId,
  ModelId,
  ModelId,
  ModelId,
];

const agent = (id: string, over: Partial<AgentLoad> = {}): AgentLoad => ({
  id,
  models: new Set([m]),
  capacity: 2,
  inFlight: 0,
  draining: false,
  latencyMs: null,
  ...over,
});

describe("pickAgent", () => {
  it("picks the least loaded agent by inFlight/capacity", () => {
    const agents = [agent("a", { inFlight: 1, capacity: 2 }), agent("b", { inFlight: 1, capacity: 4 })];
    expect(pickAgent(agents, m)?.id).toBe("b");
  });

  it("breaks load ties by recent latency, then by id", () => {
    expect(pickAgent([agent("a", { latencyMs: 90 }), agent("b", { latencyMs: 40 })], m)?.id).toBe("b");
    expect(pickAgent([agent("b"), agent("a")], m)?.id).toBe("a");
  });

  it("never exceeds capacity", () => {
    expect(pickAgent([agent("a", { inFlight: 2, capacity: 2 })], m)).toBeNull();
  });

  it("skips agents that do not serve the model, are draining, or are excluded", () => {
    const agents = [
      agent(other, { models: new Set([x]) }),
      agent("draining", { draining: true }),
      agent("failed"),
      agent("ok", { inFlight: 1 }),
    ];
    expect(pickAgent(agents, m, new Set(["failed"]))?.id).toBe("ok");
  });
});

describe("modelAvailability", () => {
  it("distinguishes servable, known-but-unavailable and unknown models", () => {
    const busy = agent("a", { inFlight: 2, capacity: 2 });
    expect(modelAvailability(m, [busy], new Set())).toBe("servable");
    expect(modelAvailability(m, [agent("a", { draining: true })], new Set([m]))).toBe("unavailable");
    expect(modelAvailability(m, [], new Set([m]))).toBe("unavailable");
    expect(modelAvailability(nope, [busy], new Set([m]))).toBe("unknown");
  });

  it("hasCandidate ignores load but honours exclusions", () => {
    const busy = agent("a", { inFlight: 2, capacity: 2 });
    expect(hasCandidate([busy], m, new Set())).toBe(true);
    expect(hasCandidate([busy], m, new Set(["a"]))).toBe(false);
  });
});

describe("RequestQueue", () => {
  const item = (model: ModelId, deadline: number) => ({ model, deadline });

  it("is FIFO per model and bounded per model", () => {
    const queue = new RequestQueue<ReturnType<typeof item>>(2);
    const [a, b, c] = [item(m, 10), item(m, 20), item(m, 30)];
    expect(queue.push(a)).toBe(true);
    expect(queue.push(b)).toBe(true);
    expect(queue.push(c)).toBe(false);
    expect(queue.push(item(other, 5))).toBe(true);
    expect(queue.itemsFor(m)).toEqual([a, b]);
    expect(queue.size).toBe(3);
    expect(queue.countsByModel()).toEqual({ m: 2, other: 1 });
  });

  it("puts retries at the head, even when full", () => {
    const queue = new RequestQueue<ReturnType<typeof item>>(1);
    const [a, retry] = [item(m, 10), item(m, 20)];
    queue.push(a);
    queue.pushFront(retry);
    expect(queue.itemsFor(m)).toEqual([retry, a]);
  });

  it("inserts an admitted item by its deadline, even when full", () => {
    const queue = new RequestQueue<ReturnType<typeof item>>(2);
    const [a, b, moved, last] = [item(m, 10), item(m, 30), item(m, 20), item(m, 40)];
    queue.push(a);
    queue.push(b);
    queue.insert(moved);
    queue.insert(last);
    expect(queue.itemsFor(m)).toEqual([a, moved, b, last]);
    queue.insert(item(other, 5));
    expect(queue.countsByModel()).toEqual({ m: 4, other: 1 });
  });

  it("expires items at their deadline and reports the next one", () => {
    const queue = new RequestQueue<ReturnType<typeof item>>(10);
    const [early, late, other] = [item(m, 100), item(m, 300), item(x, 200)];
    for (const i of [early, late, other]) queue.push(i);
    expect(queue.nextDeadline()).toBe(100);
    expect(queue.takeExpired(99)).toEqual([]);
    expect(queue.takeExpired(200)).toEqual([early, other]);
    expect(queue.itemsFor(m)).toEqual([late]);
    expect(queue.models()).toEqual([m]);
    expect(queue.nextDeadline()).toBe(300);
    expect(queue.remove(late)).toBe(true);
    expect(queue.nextDeadline()).toBeNull();
  });
});

describe("retryAfterSeconds", () => {
  it("is at least 1 second", () => {
    expect(retryAfterSeconds({ queued: 0, slots: 4, serviceTimeMs: 10 })).toBe(1);
    expect(retryAfterSeconds({ queued: 1, slots: 0, serviceTimeMs: null })).toBe(1);
  });

  it("grows with the queue and service time, shrinks with slots, and is capped", () => {
    expect(retryAfterSeconds({ queued: 10, slots: 2, serviceTimeMs: 2000 })).toBe(10);
    expect(retryAfterSeconds({ queued: 10, slots: 4, serviceTimeMs: 2000 })).toBe(5);
    expect(retryAfterSeconds({ queued: 1000, slots: 1, serviceTimeMs: 5000 })).toBe(RETRY_AFTER_MAX_SECONDS);
  });
});

describe("ewma", () => {
  it("seeds with the first sample and moves toward new ones", () => {
    expect(ewma(null, 100)).toBe(100);
    expect(ewma(100, 200, 0.5)).toBe(150);
  });
});
