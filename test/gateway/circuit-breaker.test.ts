// The circuit breaker state machine and the pool's set of breakers, driven by a fake clock.
import { describe, expect, it } from "vitest";
import { type BreakerPolicy, CircuitBreaker } from "../../gateway/hub/circuit-breaker.ts";
import { type BreakerChange, CircuitBreakers } from "../../gateway/hub/circuit-breakers.ts";
import { formatModelId } from "../../schema/model-id.ts";

const policy: BreakerPolicy = {
  windowMs: 60_000,
  minCalls: 5,
  failureRate: 0.5,
  cooldownMs: 30_000,
  halfOpenProbes: 1,
};

/** Records `n` outcomes at `now` on an ordinary (closed) breaker. */
function record(breaker: CircuitBreaker, outcome: "success" | "failure", n: number, now: number) {
  const transitions: (string | null)[] = [];
  for (let i = 0; i < n; i++) transitions.push(breaker.record(outcome, breaker.begin(now), now));
  return transitions;
}

describe("CircuitBreaker", () => {
  it("stays closed until BREAKER_MIN_CALLS calls, then opens at the failure rate", () => {
    const breaker = new CircuitBreaker(policy, 0);
    // Four failures: 100% failing, but fewer than the minimum number of calls.
    expect(record(breaker, "failure", 4, 1_000)).toEqual([null, null, null, null]);
    expect(breaker.state(1_000)).toBe("closed");
    expect(breaker.stats(1_000)).toEqual({ failures: 4, successes: 0, calls: 4, failureRate: 1 });
    // The fifth call is a failure too: 5 calls, rate 1 >= 0.5.
    expect(record(breaker, "failure", 1, 1_000)).toEqual(["open"]);
    expect(breaker.state(1_000)).toBe("open");
    expect(breaker.openedAt).toBe(1_000);
    expect(breaker.allows(1_000)).toBe(false);
  });

  it("opens exactly at the threshold rate, not below it", () => {
    const below = new CircuitBreaker(policy, 0);
    record(below, "success", 6, 0);
    record(below, "failure", 5, 0); // 5 of 11 = 0.45
    expect(below.state(0)).toBe("closed");

    const at = new CircuitBreaker(policy, 0);
    record(at, "success", 5, 0);
    expect(record(at, "failure", 5, 0).at(-1)).toBe("open"); // 5 of 10 = 0.5
  });

  it("counts only calls inside the rolling window", () => {
    const breaker = new CircuitBreaker(policy, 0);
    record(breaker, "failure", 4, 0);
    // A minute later the old failures have left the window: one more failure is 1 call of 1.
    expect(record(breaker, "failure", 1, 61_000)).toEqual([null]);
    expect(breaker.stats(61_000)).toMatchObject({ calls: 1, failures: 1 });
    expect(breaker.state(61_000)).toBe("closed");
  });

  it("turns half-open after the cool-down and lets one probe through", () => {
    const breaker = new CircuitBreaker(policy, 0);
    record(breaker, "failure", 5, 1_000);
    expect(breaker.state(30_999)).toBe("open");
    expect(breaker.nextAttemptAt()).toBe(31_000);
    expect(breaker.state(31_000)).toBe("half_open");
    expect(breaker.lastTransitionAt(31_000)).toBe(31_000);
    expect(breaker.allows(31_000)).toBe(true);
    const probe = breaker.begin(31_000);
    expect(probe).not.toBeNull();
    expect(breaker.allows(31_000)).toBe(false); // one probe at a time
  });

  it("closes when the probe succeeds, with fresh counts", () => {
    const breaker = new CircuitBreaker(policy, 0);
    record(breaker, "failure", 5, 0);
    const probe = breaker.begin(30_000);
    expect(breaker.record("success", probe, 30_500)).toBe("closed");
    expect(breaker.state(30_500)).toBe("closed");
    expect(breaker.stats(30_500).calls).toBe(0);
    // One failure right after closing does not re-open it.
    expect(record(breaker, "failure", 1, 30_600)).toEqual([null]);
  });

  it("re-opens when the probe fails, for another cool-down", () => {
    const breaker = new CircuitBreaker(policy, 0);
    record(breaker, "failure", 5, 0);
    const probe = breaker.begin(30_000);
    expect(breaker.record("failure", probe, 31_000)).toBe("open");
    expect(breaker.openedAt).toBe(31_000);
    expect(breaker.state(60_999)).toBe("open");
    expect(breaker.state(61_000)).toBe("half_open");
  });

  it("a cancelled probe (neutral) frees its slot without deciding anything", () => {
    const breaker = new CircuitBreaker(policy, 0);
    record(breaker, "failure", 5, 0);
    const probe = breaker.begin(30_000);
    expect(breaker.record("neutral", probe, 30_100)).toBeNull();
    expect(breaker.state(30_100)).toBe("half_open");
    expect(breaker.allows(30_100)).toBe(true);
  });

  it("needs BREAKER_HALF_OPEN_PROBES successes to close; any probe failure re-opens", () => {
    const breaker = new CircuitBreaker({ ...policy, halfOpenProbes: 2 }, 0);
    record(breaker, "failure", 5, 0);
    const p1 = breaker.begin(30_000);
    const p2 = breaker.begin(30_000);
    expect(breaker.allows(30_000)).toBe(false);
    expect(breaker.record("success", p1, 30_001)).toBeNull();
    expect(breaker.record("success", p2, 30_002)).toBe("closed");

    record(breaker, "failure", 5, 40_000);
    const q1 = breaker.begin(70_000);
    breaker.begin(70_000);
    expect(breaker.record("failure", q1, 70_001)).toBe("open");
  });

  it("ignores late outcomes of calls started before it opened", () => {
    const breaker = new CircuitBreaker(policy, 0);
    const late = breaker.begin(0); // an ordinary call, started while closed
    record(breaker, "failure", 5, 0);
    expect(breaker.record("success", late, 30_000)).toBeNull();
    expect(breaker.state(30_000)).toBe("half_open");
    expect(breaker.allows(30_000)).toBe(true);
  });

  it("round-trips through its stored record", () => {
    const breaker = new CircuitBreaker(policy, 0);
    record(breaker, "success", 2, 500);
    record(breaker, "failure", 5, 1_000);
    const stored = JSON.parse(JSON.stringify(breaker.toRecord("a", "m", 2_000)));
    const restored = new CircuitBreaker(policy, 5_000, stored);
    expect(restored.state(5_000)).toBe("open");
    expect(restored.openedAt).toBe(1_000);
    expect(restored.stats(5_000)).toEqual(breaker.stats(5_000));
    expect(restored.state(31_000)).toBe("half_open");
  });
});

describe("CircuitBreakers", () => {
  const ticket = (breakers: CircuitBreakers, agentId: string, model: string, now: number) =>
    breakers.admit(agentId, formatModelId(model), now);

  it("model failures open only the agent+model breaker; the agent serves its other models", () => {
    const breakers = new CircuitBreakers(policy);
    for (let i = 0; i < 5; i++) breakers.settle(ticket(breakers, "a", "m1", 0), "model_failure", 0);
    expect(breakers.allows("a", formatModelId("m1"), 0)).toBe(false);
    expect(breakers.isOpen("a", formatModelId("m1"), 0)).toBe(true);
    expect(breakers.allows("a", formatModelId("m2"), 0)).toBe(true);
    expect(breakers.allows("b", formatModelId("m1"), 0)).toBe(true);
    expect(breakers.agentState("a", 0)).toBe("closed");
  });

  it("agent failures open the agent breaker for every model", () => {
    const breakers = new CircuitBreakers(policy);
    for (let i = 0; i < 5; i++) breakers.settle(ticket(breakers, "a", `m${i}`, 0), "agent_failure", 0);
    expect(breakers.agentState("a", 0)).toBe("open");
    expect(breakers.allows("a", formatModelId("m1"), 0)).toBe(false);
    expect(breakers.allows("a", formatModelId("never-used"), 0)).toBe(false);
    // The per-model breakers saw neither a success nor a failure.
    const rows = breakers.status(0).filter((r) => r.model !== null);
    expect(rows.every((r) => r.state === "closed" && r.calls === 0)).toBe(true);
  });

  it("a cancel (neutral) is not a failure", () => {
    const breakers = new CircuitBreakers(policy);
    for (let i = 0; i < 10; i++) breakers.settle(ticket(breakers, "a", "m", 0), "neutral", 0);
    expect(breakers.status(0).map((r) => [r.model, r.state, r.calls])).toEqual([
      [null, "closed", 0],
      ["m", "closed", 0],
    ]);
  });

  it("reports transitions at once and count changes on flush; drops idle breakers of gone agents", () => {
    const changes: BreakerChange[] = [];
    const breakers = new CircuitBreakers(policy, (c) => changes.push(c));
    breakers.settle(ticket(breakers, "a", "m", 0), "success", 0);
    expect(changes).toEqual([]);
    expect(breakers.dirty).toBe(true);
    expect(breakers.flush(0, () => true).map((c) => c.record?.model)).toEqual([null, "m"]);
    expect(breakers.dirty).toBe(false);
    for (let i = 0; i < 5; i++) breakers.settle(ticket(breakers, "b", "m", 0), "agent_failure", 0);
    expect(changes).toEqual([
      {
        key: expect.any(String),
        record: expect.objectContaining({ agentId: "b", state: "open" }),
        transition: true,
      },
    ]);
    // Long after, "a" is gone and idle: dropped. "b" is half-open, not idle: kept.
    const later = breakers.flush(120_000, () => false);
    expect(later.filter((c) => c.record === null).length).toBe(3); // a, a+m, b+m
    expect(breakers.status(120_000).map((r) => [r.agentId, r.model, r.state])).toEqual([
      ["b", null, "half_open"],
    ]);
  });

  it("status rows have the documented shape", () => {
    const breakers = new CircuitBreakers(policy);
    for (let i = 0; i < 5; i++) breakers.settle(ticket(breakers, "a", "m", 1_000), "agent_failure", 1_000);
    expect(breakers.status(2_000)[0]).toEqual({
      agentId: "a",
      model: null,
      state: "open",
      failures: 5,
      successes: 0,
      calls: 5,
      failureRate: 1,
      openedAt: 1_000,
      lastTransitionAt: 1_000,
      nextAttemptAt: 31_000,
    });
  });

  it("resets all, one agent's, or one agent+model breaker; null for ones that do not exist", () => {
    const breakers = new CircuitBreakers(policy);
    for (const agent of ["a", "b"]) {
      for (let i = 0; i < 5; i++) breakers.settle(ticket(breakers, agent, "m", 0), "model_failure", 0);
    }
    expect(breakers.reset({ agentId: "a", model: "m" }, 1)).toBe(1);
    expect(breakers.allows("a", formatModelId("m"), 1)).toBe(true);
    expect(breakers.reset({ agentId: "b" }, 1)).toBe(2);
    expect(breakers.reset({ agentId: "nobody" }, 1)).toBeNull();
    expect(breakers.reset({ agentId: "a", model: "other" }, 1)).toBeNull();
    expect(breakers.reset({}, 1)).toBe(4);
  });

  it("restores from stored records and skips malformed ones", () => {
    const changes: BreakerChange[] = [];
    const source = new CircuitBreakers(policy, (c) => changes.push(c));
    source.settle(ticket(source, "a", "m", 0), "success", 0);
    for (let i = 0; i < 5; i++) source.settle(ticket(source, "a", "m", 0), "agent_failure", 0);
    changes.push(...source.flush(0, () => true));
    const records = changes.map((c) => JSON.parse(JSON.stringify(c.record)));
    const restored = new CircuitBreakers(policy);
    expect(restored.restore([...records, { agentId: 5 }, null], 10)).toBe(records.length);
    expect(restored.status(10)).toEqual(source.status(10));
    expect(restored.agentState("a", 10)).toBe("open");
    expect(restored.nextHalfOpenAt(10)).toBe(30_000);
  });
});
