// The request lifecycle without sockets: a Dispatcher over fake agent connections and a fake clock.
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { readConfig } from "../../gateway/config.ts";
import { AgentConnection } from "../../gateway/hub/agent-connection.ts";
import { CANCEL_ACK_GRACE_MS } from "../../gateway/hub/cancellations.ts";
import { CircuitBreakers } from "../../gateway/hub/circuit-breakers.ts";
import { Dispatcher } from "../../gateway/hub/dispatcher.ts";
import type { DispatcherConfig } from "../../gateway/hub/dispatcher-host.ts";
import { HubCounters } from "../../gateway/hub/hub-metrics.ts";
import type { ServedArm } from "../../gateway/hub/inference-job.ts";
import { PoolTelemetry } from "../../gateway/metrics/pool-telemetry.ts";
import { DispatchRequest, isDispatchRequest } from "../../schema/hub.ts";
import { formatModelId } from "../../schema/model-id.ts";
import type { CloseCode, GatewayFrame, GenerateFrame } from "../../schema/protocol.ts";
import { EMPTY_ROUTING_TABLE, type RoutingTable } from "../../schema/registry.ts";
import { helloFrame } from "./helpers.ts";

const defaults = readConfig({});

class FakePool {
  readonly agents = new Map<string, AgentConnection>();
  readonly sent: { agent: AgentConnection; frame: GatewayFrame }[] = [];
  readonly known = new Set<string>();
  clock = 1_000;
  wakeAts: number[] = [];
  readonly closed: { agent: AgentConnection; code: CloseCode }[] = [];
  readonly counters = new HubCounters();
  table: RoutingTable = EMPTY_ROUTING_TABLE;
  readonly finished: { id: string; model: string; outcome: string; rollout: ServedArm | null }[] = [];
  readonly refused: { model: string | undefined; outcome: string; code: string }[] = [];
  readonly telemetry = new PoolTelemetry();
  readonly shed: { arm: string; subject: string }[] = [];
  readonly breakers: CircuitBreakers;
  readonly dispatcher: Dispatcher;

  constructor(config: Partial<DispatcherConfig> = {}) {
    this.breakers = new CircuitBreakers(defaults.breaker);
    this.dispatcher = new Dispatcher({
      config: { ...defaults, queueMax: 2, queueTimeoutMs: 500, ...config },
      breakers: this.breakers,
      counters: this.counters,
      telemetry: this.telemetry,
      refused: (request, outcome, code) => this.refused.push({ model: request.model, outcome, code }),
      connections: () => this.agents.values(),
      connection: (id) => this.agents.get(id),
      knownModels: () => this.known,
      routingTable: () => this.table,
      finished: (job, outcome) =>
        this.finished.push({ id: job.id, model: job.model, outcome, rollout: job.rollout }),
      rolloutAssigned: () => {},
      rolloutShed: (assignment, subject) => this.shed.push({ arm: assignment.arm, subject }),
      send: (agent, frame) => {
        this.sent.push({ agent, frame });
        return true;
      },
      close: (agent, code) => {
        this.closed.push({ agent, code });
        this.lose(agent);
      },
      wakeAt: (at) => this.wakeAts.push(at),
      now: () => this.clock,
    });
  }

  connect(id: string, { capacity = 1, models = ["m"], ready = true } = {}): AgentConnection {
    const agent = new AgentConnection({} as WebSocket, {
      agentId: id,
      name: id,
      pool: "default",
      sessionId: crypto.randomUUID(),
      connectedAt: this.clock,
      tokenExpiresAt: null,
    });
    if (ready) {
      agent.applyHello(
        helloFrame(id, {
          capacity,
          models: models.map((name) => ({ name, engine: "synthetic", loaded: true })),
        }),
        { protocol: 2, capabilities: ["duplicate_answer"] },
        this.clock,
      );
      for (const m of models) this.known.add(m);
    }
    this.agents.set(id, agent);
    return agent;
  }

  lose(agent: AgentConnection): void {
    agent.lost = true;
    if (this.agents.get(agent.id) === agent) this.agents.delete(agent.id);
    this.dispatcher.agentLost(agent, `agent ${agent.id} gone`);
  }

  /** Generate frames sent so far, by agent id. */
  generates(): [string, GenerateFrame][] {
    return this.sent.flatMap(({ agent, frame }) =>
      frame.type === "generate" ? [[agent.id, frame] as [string, GenerateFrame]] : [],
    );
  }

  submit(id: string, signal = new AbortController().signal) {
    return this.dispatcher.submit(dispatchRequest(id), signal);
  }
}

const done = {
  type: "done",
  finishReason: "stop",
  usage: { promptTokens: 1, completionTokens: 1 },
  timings: { firstTokenMs: 1, totalMs: 1 },
} as const;

describe("Dispatcher", () => {
  it("counts a rollout arm shed by its open breakers as that arm's error, served by the other arm", async () => {
    const pool = new FakePool();
    pool.table = tableOf(1, { active: "1.0.0", rollout: { share: 1, phase: 0 } });
    pool.connect("a1", { capacity: 2, models: ["m:1.0.0", "m:2.0.0"] });
    // The canary version failed on the only agent that has it: its breaker opened.
    for (let i = 0; i < defaults.breaker.minCalls; i++) {
      const model = formatModelId("m", "2.0.0");
      pool.breakers.settle(pool.breakers.admit("a1", model, pool.clock), "model_failure", pool.clock);
    }
    void pool.submit("r1");
    expect(pool.generates().map(([, frame]) => frame.model)).toEqual(["m:1.0.0"]);
    expect(pool.shed).toEqual([{ arm: "b", subject: "end-user" }]);
    // A capacity shortage is not the version's fault: nothing is shed when b merely has no agent.
    pool.breakers.reset({ agentId: "a1" }, pool.clock);
    pool.connect("a2", { capacity: 2, models: ["m:1.0.0"] });
    pool.agents.get("a1")?.setModels([{ name: "m:1.0.0", engine: "synthetic", loaded: true }]);
    void pool.submit("r2");
    expect(pool.shed).toHaveLength(1);
  });

  it("answers unknown and unavailable models before queueing anything", async () => {
    const pool = new FakePool();
    expect(((await pool.submit("r1")) as Response).status).toBe(404);
    pool.known.add("m");
    const unavailable = (await pool.submit("r2")) as Response;
    expect(unavailable.status).toBe(503);
    expect(unavailable.headers.get("Retry-After")).toBe("1");
    expect(pool.counters.snapshot().requests).toMatchObject({ model_not_found: 1, no_agent: 1 });
  });

  it("never exceeds capacity, queues FIFO, and rejects past the bound with Retry-After", async () => {
    const pool = new FakePool();
    const a = pool.connect("a", { capacity: 1 });
    const first = pool.submit("r1");
    pool.submit("r2");
    pool.submit("r3");
    const full = (await pool.submit("r4")) as Response;
    expect(full.status).toBe(429);
    expect(Number(full.headers.get("Retry-After"))).toBeGreaterThanOrEqual(1);
    expect(pool.generates().map(([, f]) => f.id)).toEqual(["r1"]);

    pool.dispatcher.onDone(a, { ...done, id: "r1" });
    expect((await first).status).toBe(200);
    expect(pool.generates().map(([, f]) => f.id)).toEqual(["r1", "r2"]);
  });

  it("expires queued requests at their deadline with 504", async () => {
    const pool = new FakePool();
    pool.connect("a", { capacity: 1 });
    pool.submit("running");
    const waiting = pool.submit("waiting");
    expect(pool.wakeAts).toContain(1_500);
    pool.dispatcher.expire(1_499);
    pool.dispatcher.expire(1_500);
    expect((await waiting).status).toBe(504);
  });

  it("retries on other agents up to DISPATCH_MAX_ATTEMPTS, then fails with the agent's error", async () => {
    const pool = new FakePool();
    const a = pool.connect("a");
    const b = pool.connect("b");
    const response = pool.submit("r1");
    const [[firstId]] = pool.generates() as [[string, GenerateFrame]];
    const first = firstId === "a" ? a : b;
    const second = first === a ? b : a;
    const busy = { type: "error", id: "r1", code: "ENGINE_ERROR", message: "oops", retryable: true } as const;
    pool.dispatcher.onError(first, busy);
    expect(pool.generates().map(([id]) => id)).toEqual([first.id, second.id]);
    // Late frames from the first agent no longer count.
    pool.dispatcher.onChunk(first, { type: "chunk", id: "r1", text: "stale", tokens: 1 });
    pool.dispatcher.onError(second, busy);
    // Every agent was tried: the third attempt may go back to one of them.
    expect(pool.generates()).toHaveLength(3);
    const [thirdId] = pool.generates()[2] as [string, GenerateFrame];
    pool.dispatcher.onError(thirdId === "a" ? a : b, busy);
    const failed = await response;
    expect(failed.status).toBe(502);
    expect(await failed.json()).toMatchObject({
      code: "UPSTREAM_ERROR",
      message: expect.stringContaining("after 3 attempts"),
    });
    expect(pool.counters.snapshot().retries).toBe(2);
  });

  it("holds an unanswered request for the reconnecting session of the same agent", async () => {
    const pool = new FakePool();
    const old = pool.connect("a");
    const response = pool.submit("r1");
    const fresh = pool.connect("a", { ready: false }); // upgrade done, no hello yet
    pool.lose(old);
    expect(pool.dispatcher.queue.size).toBe(1);
    fresh.applyHello(
      helloFrame("a", { models: [{ name: "m", engine: "synthetic", loaded: true }] }),
      { protocol: 2, capabilities: ["duplicate_answer"] },
      pool.clock,
    );
    pool.dispatcher.pump();
    expect(pool.generates().at(-1)?.[1].id).toBe("r1");
    pool.dispatcher.onChunk(fresh, { type: "chunk", id: "r1", text: "hi", tokens: 1 });
    expect((await response).status).toBe(200);
  });

  it("answers a request that is not streamed once, at done, with the whole body", async () => {
    const pool = new FakePool();
    const a = pool.connect("a");
    let settled = false;
    const response = Promise.resolve(
      pool.dispatcher.submit(dispatchRequest("r1", { stream: false }), new AbortController().signal),
    ).then((r) => {
      settled = true;
      return r;
    });
    pool.dispatcher.onChunk(a, { type: "chunk", id: "r1", text: "he", tokens: 1 });
    pool.dispatcher.onChunk(a, { type: "chunk", id: "r1", text: "llo", tokens: 1 });
    await Promise.resolve();
    expect(settled).toBe(false);
    pool.dispatcher.onDone(a, { ...done, id: "r1" });
    const answer = await response;
    expect(answer.headers.get("Content-Type")).toBe("application/json");
    expect(answer.headers.get("X-Orchard-Model")).toBe("m");
    expect(await answer.json()).toMatchObject({ text: "hello", model_name: "m", request_id: "r1" });
  });

  it("a request that is not streamed and fails after its first chunk gets an error status", async () => {
    const pool = new FakePool();
    const a = pool.connect("a");
    const response = pool.dispatcher.submit(
      dispatchRequest("r1", { stream: false }),
      new AbortController().signal,
    );
    pool.dispatcher.onChunk(a, { type: "chunk", id: "r1", text: "he", tokens: 1 });
    pool.lose(a);
    const answer = await response;
    expect(answer.status).toBe(502);
    expect(await answer.json()).toMatchObject({ code: "UPSTREAM_ERROR" });
  });

  it("ends a started stream with an error event when the agent is lost", async () => {
    const pool = new FakePool();
    const a = pool.connect("a");
    const response = pool.submit("r1");
    pool.dispatcher.onChunk(a, { type: "chunk", id: "r1", text: "hi", tokens: 1 });
    pool.lose(a);
    const lines = await sseEvents(response);
    expect(lines.map((l) => l.type)).toEqual(["chunk", "error"]);
    expect(lines[1]).toMatchObject({ code: "UPSTREAM_ERROR" });
  });

  it("a caller who leaves frees the slot and the agent gets cancel; a queued one just leaves", async () => {
    const pool = new FakePool();
    const a = pool.connect("a", { capacity: 1 });
    const running = new AbortController();
    const queued = new AbortController();
    pool.submit("r1", running.signal);
    pool.submit("r2", queued.signal);
    queued.abort();
    expect(pool.dispatcher.queue.size).toBe(0);
    running.abort();
    expect(pool.sent.at(-1)?.frame).toEqual({ type: "cancel", id: "r1", reason: "client_disconnected" });
    expect(pool.counters.snapshot().requests.cancelled).toBe(2);
    expect(pool.generates().map(([, f]) => f.id)).toEqual(["r1"]);
    // The agent counts the cancelled generation until it answers: so does the hub.
    expect(a.inFlight).toBe(1);
    pool.submit("r3");
    expect(pool.generates().map(([, f]) => f.id)).toEqual(["r1"]);
    pool.dispatcher.onDone(a, { ...done, id: "r1", finishReason: "cancelled" });
    expect(pool.generates().map(([, f]) => f.id)).toEqual(["r1", "r3"]);
  });
});

const cancels = (pool: FakePool) =>
  pool.sent.flatMap(({ agent, frame }) => (frame.type === "cancel" ? [{ agent: agent.id, ...frame }] : []));

/** A /generate request; streamed unless `stream` is false. */
function dispatchRequest(
  id: string,
  {
    model = "m",
    stream = true,
    maxTokens = 4,
  }: { model?: string; stream?: boolean; maxTokens?: number } = {},
): DispatchRequest {
  return {
    requestId: id,
    model,
    prompt: "p",
    params: { maxTokens },
    response: { api: "generate", stream, includeUsage: false, requestId: id, receivedAt: 0 },
    subject: "end-user",
    caller: "test-user",
  };
}

/** A /generate stream's SSE messages as {type: the event, ...its data}, an error's fields flattened. */
async function sseEvents(response: Response | Promise<Response>) {
  const text = await (await response).text();
  return text
    .split("\n\n")
    .filter((block) => block !== "")
    .map((block) => {
      const [eventLine = "", dataLine = ""] = block.split("\n");
      const data = JSON.parse(dataLine.slice("data: ".length));
      return { type: eventLine.slice("event: ".length), ...data, ...data.error, raw: `${block}\n\n` };
    });
}

describe("Dispatcher deadlines", () => {
  it("passes the request deadline to the agent: REQUEST_TIMEOUT_MS, or the caller's, capped", () => {
    const pool = new FakePool({ requestTimeoutMs: 10_000, requestTimeoutMaxMs: 20_000 });
    pool.connect("a", { capacity: 3 });
    pool.submit("r1");
    const request = (id: string, timeoutMs: number): DispatchRequest => ({
      ...dispatchRequest(id),
      timeoutMs,
    });
    pool.dispatcher.submit(request("r2", 500), new AbortController().signal);
    pool.dispatcher.submit(request("r3", 60_000), new AbortController().signal);
    expect(pool.generates().map(([, f]) => f.deadline)).toEqual([11_000, 1_500, 21_000]);
  });

  it("first-chunk timeout: cancel `deadline` to the agent, retry on another, agent failure counted", async () => {
    const pool = new FakePool({ firstChunkTimeoutMs: 1_000 });
    const a = pool.connect("a");
    const b = pool.connect("b");
    const response = pool.submit("r1");
    const [[firstId]] = pool.generates() as [[string, GenerateFrame]];
    const [first, second] = firstId === "a" ? [a, b] : [b, a];
    expect(pool.dispatcher.nextDeadline(pool.clock)).toBe(2_000);
    pool.dispatcher.expire(1_999);
    expect(cancels(pool)).toEqual([]);
    pool.clock = 2_000;
    pool.dispatcher.expire(2_000);
    expect(cancels(pool)).toEqual([{ agent: first.id, type: "cancel", id: "r1", reason: "deadline" }]);
    expect(pool.generates().map(([id]) => id)).toEqual([first.id, second.id]);
    expect([...first.requests]).toEqual([]);
    expect([...first.releasing.keys()]).toEqual(["r1"]); // until it answers the cancel
    expect(pool.breakers.status(2_000).find((r) => r.agentId === first.id && r.model === null)).toMatchObject(
      {
        failures: 1,
      },
    );
    pool.dispatcher.onChunk(second, { type: "chunk", id: "r1", text: "hi", tokens: 1 });
    pool.dispatcher.onDone(second, { ...done, id: "r1" });
    expect((await response).status).toBe(200);
  });

  it("first-chunk timeout on every attempt ends with 504 GATEWAY_TIMEOUT", async () => {
    const pool = new FakePool({ firstChunkTimeoutMs: 1_000, dispatchMaxAttempts: 2 });
    pool.connect("a");
    pool.connect("b");
    const response = pool.submit("r1");
    pool.clock = 2_000;
    pool.dispatcher.expire(2_000);
    pool.clock = 3_000;
    pool.dispatcher.expire(3_000);
    const failed = await response;
    expect(failed.status).toBe(504);
    expect(await failed.json()).toMatchObject({ code: "GATEWAY_TIMEOUT" });
    expect(cancels(pool).map((c) => c.reason)).toEqual(["deadline", "deadline"]);
    expect(pool.counters.snapshot().requests.timeout).toBe(1);
  });

  it("idle timeout mid-stream: cancel `deadline`, error event GATEWAY_TIMEOUT, agent failure counted", async () => {
    const pool = new FakePool({ idleChunkTimeoutMs: 1_000 });
    const a = pool.connect("a");
    const response = pool.submit("r1");
    pool.dispatcher.onChunk(a, { type: "chunk", id: "r1", text: "one", tokens: 1 });
    pool.clock = 1_900;
    pool.dispatcher.onChunk(a, { type: "chunk", id: "r1", text: "two", tokens: 1 });
    pool.dispatcher.expire(2_000); // 100 ms after the last chunk: fine
    expect(cancels(pool)).toEqual([]);
    pool.dispatcher.expire(2_900);
    expect(cancels(pool)).toEqual([{ agent: "a", type: "cancel", id: "r1", reason: "deadline" }]);
    const events = await sseEvents(response);
    expect(events.map((e) => e.type)).toEqual(["chunk", "chunk", "error"]);
    expect(events[2]).toMatchObject({ code: "GATEWAY_TIMEOUT" });
    expect(pool.breakers.agentState("a", 2_900)).toBe("closed");
    expect(pool.breakers.status(2_900)[0]).toMatchObject({ model: null, failures: 1 });
  });

  it("request deadline: 504 before the first chunk, an error event after it; neither is an agent failure", async () => {
    const pool = new FakePool({ requestTimeoutMs: 1_000, firstChunkTimeoutMs: 5_000 });
    const a = pool.connect("a", { capacity: 2 });
    const early = pool.submit("early");
    const late = pool.submit("late");
    pool.dispatcher.onChunk(a, { type: "chunk", id: "late", text: "x", tokens: 1 });
    pool.dispatcher.expire(2_000);
    expect(cancels(pool).map((c) => [c.id, c.reason])).toEqual([
      ["early", "deadline"],
      ["late", "deadline"],
    ]);
    const before = await early;
    expect(before.status).toBe(504);
    expect(await before.json()).toMatchObject({ code: "GATEWAY_TIMEOUT" });
    expect((await sseEvents(late)).at(-1)).toMatchObject({ type: "error", code: "GATEWAY_TIMEOUT" });
    expect(pool.breakers.status(2_000).every((r) => r.failures === 0)).toBe(true);
    expect(a.requests.size).toBe(0);
  });

  it("a queued request whose deadline passes leaves with 504 GATEWAY_TIMEOUT", async () => {
    const pool = new FakePool({ requestTimeoutMs: 300, queueTimeoutMs: 5_000 });
    pool.connect("a");
    pool.submit("running");
    const queued = pool.submit("queued");
    expect(pool.dispatcher.nextDeadline(pool.clock)).toBe(1_300);
    pool.dispatcher.expire(1_300);
    const response = await queued;
    expect(response.status).toBe(504);
    expect(await response.json()).toMatchObject({ code: "GATEWAY_TIMEOUT" });
  });
});

describe("Dispatcher backpressure", () => {
  it("bounds the queue per model, not per pool", async () => {
    const pool = new FakePool();
    pool.connect("a", { capacity: 1, models: ["m", "n"] });
    const submit = (id: string, model: string) =>
      pool.dispatcher.submit(dispatchRequest(id, { model, maxTokens: 1 }), new AbortController().signal);
    submit("running", "m");
    submit("m1", "m");
    submit("m2", "m");
    expect(((await submit("m3", "m")) as Response).status).toBe(429);
    submit("n1", "n");
    submit("n2", "n");
    expect(pool.dispatcher.queue.countsByModel()).toEqual({ m: 2, n: 2 });
    expect(((await submit("n3", "n")) as Response).status).toBe(429);
  });

  it("computes Retry-After from the queue ahead and recent service times", async () => {
    const pool = new FakePool({ queueMax: 4 });
    const a = pool.connect("a", { capacity: 1 });
    // Two requests of 3 s each: the service time settles near 3 s.
    for (const id of ["s1", "s2"]) {
      pool.submit(id);
      pool.clock += 3_000;
      pool.dispatcher.onDone(a, { ...done, id });
    }
    pool.submit("running");
    for (const id of ["q1", "q2", "q3", "q4"]) pool.submit(id);
    const full = (await pool.submit("rejected")) as Response;
    expect(full.status).toBe(429);
    // 4 queued ahead / (1 slot per 3 s) = 12 s.
    expect(full.headers.get("Retry-After")).toBe("12");
  });

  it("never sends an agent more than its capacity, however many arrive at once", () => {
    const pool = new FakePool({ queueMax: 100 });
    const agents = [pool.connect("a", { capacity: 3 }), pool.connect("b", { capacity: 2 })];
    /** Generate frames sent minus requests the agent finished, per agent, checked after every step. */
    const finished = new Map<string, number>();
    const check = () => {
      for (const agent of agents) {
        const sent = pool.generates().filter(([id]) => id === agent.id).length;
        expect(sent - (finished.get(agent.id) ?? 0)).toBeLessThanOrEqual(agent.capacity);
      }
    };
    for (let i = 0; i < 40; i++) {
      pool.submit(`r${i}`);
      check();
    }
    expect(agents.map((a) => a.inFlight)).toEqual([3, 2]);
    while (agents.some((a) => a.inFlight > 0)) {
      for (const agent of agents) {
        const [id] = [...agent.requests];
        if (id === undefined) continue;
        pool.dispatcher.onDone(agent, { ...done, id });
        finished.set(agent.id, (finished.get(agent.id) ?? 0) + 1);
        check();
      }
    }
    expect(pool.generates()).toHaveLength(40);
  });

  it("ends a stream whose caller does not read with SLOW_CONSUMER and cancels the agent", async () => {
    const pool = new FakePool({ streamBufferMaxBytes: 1_000 });
    const a = pool.connect("a");
    // 20 one-token chunks: within max_tokens, so only the unread bytes stop the stream.
    const response = pool.dispatcher.submit(
      dispatchRequest("r1", { stream: true, maxTokens: 32 }),
      new AbortController().signal,
    );
    for (let i = 0; i < 20; i++) {
      pool.dispatcher.onChunk(a, { type: "chunk", id: "r1", text: "x".repeat(100), tokens: 1 });
    }
    expect(cancels(pool)).toEqual([{ agent: "a", type: "cancel", id: "r1", reason: "slow_consumer" }]);
    const events = await sseEvents(response);
    expect(events.at(-1)).toMatchObject({ type: "error", code: "SLOW_CONSUMER" });
    // What was buffered stays within the bound (the final error event aside).
    const chunkBytes = events.slice(0, -1).reduce((n, e) => n + e.raw.length, 0);
    expect(chunkBytes).toBeLessThanOrEqual(1_000);
    expect(a.requests.size).toBe(0);
    expect(pool.breakers.status(pool.clock).every((r) => r.failures === 0)).toBe(true);
  });
});

describe("Dispatcher breakers and fallbacks", () => {
  it("skips agents whose breaker is open, and answers 503 when every one is", async () => {
    const pool = new FakePool();
    const a = pool.connect("a", { capacity: 10 });
    const b = pool.connect("b", { capacity: 10 });
    for (let i = 0; i < 5; i++)
      pool.breakers.settle(pool.breakers.admit("a", formatModelId("m"), 0), "agent_failure", 0);
    for (let i = 0; i < 5; i++) pool.submit(`r${i}`);
    expect(new Set(pool.generates().map(([id]) => id))).toEqual(new Set(["b"]));
    for (let i = 0; i < 5; i++)
      pool.breakers.settle(pool.breakers.admit("b", formatModelId("m"), 0), "model_failure", 0);
    const rejected = (await pool.submit("r-none")) as Response;
    expect(rejected.status).toBe(503);
    expect(await rejected.json()).toMatchObject({ code: "NO_AGENT_AVAILABLE" });
    expect(a.inFlight + b.inFlight).toBe(5);
  });

  it("a half-open agent takes one probe; its success closes the breaker", async () => {
    const pool = new FakePool({ queueMax: 10 });
    const a = pool.connect("a", { capacity: 10 });
    for (let i = 0; i < 5; i++)
      pool.breakers.settle(pool.breakers.admit("a", formatModelId("m"), 0), "agent_failure", 0);
    pool.clock = 30_000;
    pool.submit("probe");
    pool.submit("waits");
    expect(pool.generates().map(([, f]) => f.id)).toEqual(["probe"]);
    pool.dispatcher.onDone(a, { ...done, id: "probe" });
    expect(pool.breakers.agentState("a", pool.clock)).toBe("closed");
    expect(pool.generates().map(([, f]) => f.id)).toEqual(["probe", "waits"]);
  });

  it("a cancelled probe is not a failure: the breaker stays half-open for the next request", () => {
    const pool = new FakePool();
    pool.connect("a", { capacity: 10 });
    for (let i = 0; i < 5; i++)
      pool.breakers.settle(pool.breakers.admit("a", formatModelId("m"), 0), "agent_failure", 0);
    pool.clock = 30_000;
    const caller = new AbortController();
    pool.submit("probe", caller.signal);
    caller.abort();
    expect(pool.breakers.agentState("a", pool.clock)).toBe("half_open");
    pool.submit("next");
    expect(pool.generates().map(([, f]) => f.id)).toEqual(["probe", "next"]);
  });

  it("wakes queued work when an open breaker turns half-open", () => {
    const pool = new FakePool({ queueTimeoutMs: 60_000 });
    const a = pool.connect("a", { capacity: 1 });
    pool.submit("running");
    pool.submit("queued");
    for (let i = 0; i < 5; i++)
      pool.breakers.settle(pool.breakers.admit("a", formatModelId("m"), 0), "agent_failure", 1_000);
    pool.dispatcher.onDone(a, { ...done, id: "running" });
    expect(pool.generates().map(([, f]) => f.id)).toEqual(["running"]);
    expect(pool.dispatcher.nextDeadline(pool.clock)).toBe(31_000);
    pool.clock = 31_000;
    pool.dispatcher.expire(31_000);
    expect(pool.generates().map(([, f]) => f.id)).toEqual(["running", "queued"]);
  });

  it("serves the first servable MODEL_FALLBACKS model when none of the requested model's agents can", async () => {
    const pool = new FakePool({ modelFallbacks: new Map([["big", ["missing", "small"]]]) });
    const big = pool.connect("big-agent", { models: ["big"], capacity: 1 });
    const small = pool.connect("small-agent", { models: ["small"] });
    const submit = (id: string) =>
      pool.dispatcher.submit(
        dispatchRequest(id, { model: "big", maxTokens: 1 }),
        new AbortController().signal,
      );
    submit("r1");
    const queued = submit("r2"); // merely busy: queued for "big", no fallback
    expect(pool.dispatcher.queue.countsByModel()).toEqual({ big: 1 });
    expect(pool.counters.snapshot().fallbacks).toBe(0);
    pool.lose(big);
    // Nobody serves "big" any more: the queued request goes where a new one would.
    expect(pool.generates().at(-1)).toEqual([
      "small-agent",
      expect.objectContaining({ id: "r2", model: "small" }),
    ]);
    const response = submit("r3");
    expect(pool.dispatcher.queue.countsByModel()).toEqual({ small: 1 });
    pool.dispatcher.onChunk(small, { type: "chunk", id: "r2", text: "hi", tokens: 1 });
    expect((await queued).headers.get("X-Orchard-Fallback")).toBe("big");
    pool.dispatcher.onDone(small, { ...done, id: "r2" });
    expect(pool.generates().at(-1)).toEqual([
      "small-agent",
      expect.objectContaining({ id: "r3", model: "small" }),
    ]);
    pool.dispatcher.onChunk(small, { type: "chunk", id: "r3", text: "hi", tokens: 1 });
    const ok = await response;
    expect(ok.headers.get("X-Orchard-Model")).toBe("small");
    expect(ok.headers.get("X-Orchard-Fallback")).toBe("big");
    expect(pool.counters.snapshot().fallbacks).toBe(2);
  });

  it("frees a cancelled request's slot after CANCEL_ACK_GRACE_MS if the agent never answers", () => {
    const pool = new FakePool({ queueTimeoutMs: 60_000 });
    const a = pool.connect("a", { capacity: 1 });
    const caller = new AbortController();
    pool.submit("r1", caller.signal);
    caller.abort();
    pool.submit("r2");
    expect(pool.dispatcher.nextDeadline(pool.clock)).toBe(1_000 + CANCEL_ACK_GRACE_MS);
    pool.dispatcher.expire(1_000 + CANCEL_ACK_GRACE_MS - 1);
    expect(a.inFlight).toBe(1);
    pool.dispatcher.expire(1_000 + CANCEL_ACK_GRACE_MS);
    expect(pool.generates().map(([, f]) => f.id)).toEqual(["r1", "r2"]);
  });

  it("retries on the same agent, when it is the only one, only after it answered the cancel", () => {
    const pool = new FakePool({ firstChunkTimeoutMs: 1_000 });
    const a = pool.connect("a");
    pool.submit("r1");
    pool.dispatcher.expire(2_000);
    expect(pool.generates()).toHaveLength(1); // the agent would ignore a second generate for r1 now
    pool.dispatcher.onDone(a, { ...done, id: "r1", finishReason: "cancelled" });
    expect(pool.generates().map(([id, f]) => [id, f.id])).toEqual([
      ["a", "r1"],
      ["a", "r1"],
    ]);
  });

  it("cancels, once, a chunk for a request the hub never knew (it restarted)", () => {
    const pool = new FakePool();
    const a = pool.connect("a");
    pool.dispatcher.onChunk(a, { type: "chunk", id: "before-restart", text: "x", tokens: 1 });
    pool.dispatcher.onChunk(a, { type: "chunk", id: "before-restart", text: "y", tokens: 1 });
    expect(cancels(pool)).toEqual([
      { agent: "a", type: "cancel", id: "before-restart", reason: "hub_shutdown" },
    ]);
  });
});

/** A routing table for model "m" with `versions` registered, `active` and, optionally, a rollout. */
function tableOf(
  revision: number,
  { active, rollout = null }: { active: string | null; rollout?: { share: number; phase?: number } | null },
  versions = ["1.0.0", "2.0.0"],
): RoutingTable {
  return {
    revision,
    builtAt: revision,
    preparing: {},
    models: {
      m: {
        name: "m",
        active,
        previous: null,
        aliases: {},
        versions: Object.fromEntries(
          versions.map((version) => [
            version,
            {
              version,
              status: version === active ? ("active" as const) : ("registered" as const),
              servedAs: `m:${version}`,
              source: { kind: "agent-local" as const },
              sha256: null,
              size: null,
              parameters: {},
              placement: null,
            },
          ]),
        ),
        warmPrevious: true,
        rollout:
          rollout === null
            ? null
            : {
                id: "dep-q",
                kind: "canary",
                phase: rollout.phase ?? 1,
                arms: { a: { name: "m", version: "1.0.0" }, b: { name: "m", version: "2.0.0" } },
                share: rollout.share,
                labels: { a: "baseline", b: "canary" },
                placement: null,
              },
      },
    },
  };
}

describe("Dispatcher re-routes queued requests", () => {
  const answer = (pool: FakePool, agent: AgentConnection, id: string) => {
    pool.dispatcher.onChunk(agent, { type: "chunk", id, text: "hi", tokens: 1 });
    pool.dispatcher.onDone(agent, { ...done, id });
  };

  it("a rollback: a queued request for the name goes to the version rolled back to; a pinned one stays", async () => {
    const pool = new FakePool();
    pool.table = tableOf(1, { active: "2.0.0" });
    const agent = pool.connect("a", { capacity: 1, models: ["m:1.0.0", "m:2.0.0"] });
    pool.submit("running");
    const byName = pool.submit("by-name");
    pool.clock += 1;
    const pinned = pool.dispatcher.submit(
      dispatchRequest("pinned", { model: "m:2.0.0" }),
      new AbortController().signal,
    );
    expect(pool.dispatcher.queue.countsByModel()).toEqual({ "m:2.0.0": 2 });
    pool.table = tableOf(2, { active: "1.0.0" });
    pool.dispatcher.pump();
    expect(pool.dispatcher.queue.countsByModel()).toEqual({ "m:1.0.0": 1, "m:2.0.0": 1 });
    answer(pool, agent, "running");
    // It keeps its turn: it was queued first.
    expect(pool.generates().map(([, f]) => [f.id, f.model])).toEqual([
      ["running", "m:2.0.0"],
      ["by-name", "m:1.0.0"],
    ]);
    answer(pool, agent, "by-name");
    expect((await byName).headers.get("X-Orchard-Model")).toBe("m:1.0.0");
    answer(pool, agent, "pinned");
    expect((await pinned).headers.get("X-Orchard-Model")).toBe("m:2.0.0");
  });

  it("a canary promoted (or a blue-green switch): a queued arm-a request goes to the new version, with no arm", async () => {
    const pool = new FakePool();
    pool.table = tableOf(1, { active: "1.0.0", rollout: { share: 0 } });
    const agent = pool.connect("a", { capacity: 1, models: ["m:1.0.0", "m:2.0.0"] });
    pool.submit("running");
    const queued = pool.submit("queued");
    expect(pool.dispatcher.queue.countsByModel()).toEqual({ "m:1.0.0": 1 });
    pool.table = tableOf(2, { active: "2.0.0" });
    pool.dispatcher.pump();
    answer(pool, agent, "running");
    expect(pool.generates().at(-1)?.[1]).toMatchObject({ id: "queued", model: "m:2.0.0" });
    answer(pool, agent, "queued");
    const response = await queued;
    expect(response.headers.get("X-Orchard-Model")).toBe("m:2.0.0");
    expect(response.headers.get("X-Orchard-Variant")).toBeNull();
    expect(pool.finished.map((f) => [f.id, f.rollout?.counted ?? null])).toEqual([
      ["running", true],
      ["queued", null],
    ]);
  });

  it("a table change that leaves a queued request's route alone keeps it, and keeps it counted", () => {
    const pool = new FakePool();
    pool.table = tableOf(1, { active: "1.0.0", rollout: { share: 0, phase: 1 } });
    const agent = pool.connect("a", { capacity: 1, models: ["m:1.0.0", "m:2.0.0"] });
    pool.submit("running");
    pool.submit("queued");
    pool.table = tableOf(2, { active: "1.0.0", rollout: { share: 0, phase: 2 } });
    pool.dispatcher.pump();
    answer(pool, agent, "running");
    answer(pool, agent, "queued");
    expect(pool.finished.map((f) => [f.id, f.model, f.rollout])).toEqual([
      ["running", "m:1.0.0", expect.objectContaining({ phase: 1, arm: "a", counted: true })],
      ["queued", "m:1.0.0", expect.objectContaining({ phase: 1, arm: "a", counted: true })],
    ]);
  });

  it("a canary whose only arm-b agent goes: its queued requests are served by arm a, uncounted", async () => {
    const pool = new FakePool();
    pool.table = tableOf(1, { active: "1.0.0", rollout: { share: 1 } });
    const a = pool.connect("a", { capacity: 1, models: ["m:1.0.0"] });
    const b = pool.connect("b", { capacity: 1, models: ["m:2.0.0"] });
    pool.dispatcher.submit(dispatchRequest("pinned-a", { model: "m:1.0.0" }), new AbortController().signal);
    pool.submit("on-b");
    const queued = pool.submit("queued-b");
    expect(pool.dispatcher.queue.countsByModel()).toEqual({ "m:2.0.0": 1 });
    // No table change: the model became unservable.
    pool.lose(b);
    expect(pool.dispatcher.queue.countsByModel()).toEqual({ "m:1.0.0": 1 });
    answer(pool, a, "pinned-a");
    expect(pool.generates().at(-1)).toEqual([
      "a",
      expect.objectContaining({ id: "queued-b", model: "m:1.0.0" }),
    ]);
    answer(pool, a, "queued-b");
    const response = await queued;
    expect(response.headers.get("X-Orchard-Variant")).toBe("baseline");
    expect(pool.finished.find((f) => f.id === "queued-b")?.rollout).toMatchObject({
      arm: "a",
      counted: false,
    });
    // Losing an agent is not the version failing: no arm error.
    expect(pool.shed).toEqual([]);
  });

  it("a queued request nothing else can serve keeps waiting for its model's agent", () => {
    const pool = new FakePool({ queueTimeoutMs: 60_000 });
    const agent = pool.connect("a", { capacity: 1 });
    pool.submit("running");
    pool.submit("queued");
    pool.lose(agent);
    expect(pool.dispatcher.queue.countsByModel()).toEqual({ m: 1 });
    const back = pool.connect("a", { capacity: 1 });
    pool.dispatcher.pump();
    expect(pool.generates().at(-1)).toEqual(["a", expect.objectContaining({ id: "queued", model: "m" })]);
    expect(back.requests.has("queued")).toBe(true);
  });
});

describe("isDispatchRequest (the hub's check instead of the schema)", () => {
  const valid = dispatchRequest("r1");
  const chat = {
    ...valid,
    prompt: undefined,
    messages: [{ role: "user", content: "hi" }],
    response: { ...valid.response, api: "chat" },
  };
  const cases: [string, unknown][] = [
    ["a /generate request", valid],
    ["a chat request", chat],
    ["with a timeout", { ...valid, timeoutMs: 500 }],
    ["without a model", { ...valid, model: undefined }],
    ["null", null],
    ["no response shape (a Worker of an older version)", { ...valid, response: undefined }],
    ["an unknown api", { ...valid, response: { ...valid.response, api: "embeddings" } }],
    ["stream not a boolean", { ...valid, response: { ...valid.response, stream: "yes" } }],
    ["both prompt and messages", { ...chat, prompt: "p" }],
    ["neither prompt nor messages", { ...valid, prompt: undefined }],
    ["an empty request id", { ...valid, requestId: "" }],
    ["a zero timeout", { ...valid, timeoutMs: 0 }],
    ["no params", { ...valid, params: undefined }],
    ["no subject (a Worker of an older version)", { ...valid, subject: undefined }],
    ["an empty caller", { ...valid, caller: "" }],
    ["a subject too long", { ...valid, subject: "u".repeat(257) }],
  ];
  it.each(cases)("agrees with DispatchRequest on %s", (_, value) => {
    expect(isDispatchRequest(value)).toBe(DispatchRequest.safeParse(value).success);
  });

  it("agrees with DispatchRequest on generated requests, valid and mutated", () => {
    // Valid requests from the schema's own bounds, then each with one field replaced by an
    // arbitrary value (or removed): the hand check must accept and refuse exactly what zod does.
    const text = fc.string({ maxLength: 12 });
    const requestArb = fc.record(
      {
        requestId: fc.string({ minLength: 1, maxLength: 100 }),
        model: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,20}$/),
        prompt: text,
        messages: fc.array(
          fc.record({ role: fc.constantFrom("system", "user", "assistant", "tool"), content: text }),
          { maxLength: 3 },
        ),
        params: fc.record(
          {
            maxTokens: fc.oneof(fc.integer({ min: -2, max: 4096 }), fc.double()),
            temperature: fc.oneof(fc.double({ min: -1, max: 3 }), fc.constant(Number.NaN)),
            topP: fc.double({ min: -0.5, max: 1.5 }),
            seed: fc.oneof(fc.integer(), fc.double(), fc.constant(2 ** 60)),
            stop: fc.array(fc.string({ maxLength: 3 }), { maxLength: 10 }),
          },
          { requiredKeys: ["maxTokens"] },
        ),
        timeoutMs: fc.oneof(fc.integer({ min: -1, max: 10 ** 6 }), fc.constant(1.5)),
        response: fc.record({
          api: fc.constantFrom("generate", "chat", "embeddings"),
          stream: fc.oneof(fc.boolean(), fc.constant("yes")),
          includeUsage: fc.boolean(),
          requestId: fc.oneof(text, fc.constant(null)),
          receivedAt: fc.oneof(fc.integer(), fc.constant(Number.POSITIVE_INFINITY)),
        }),
        subject: fc.string({ minLength: 0, maxLength: 258 }),
        caller: fc.string({ minLength: 0, maxLength: 130 }),
      },
      { requiredKeys: ["requestId", "params", "response", "subject", "caller"] },
    );
    const mutated = fc
      .tuple(
        requestArb,
        fc.constantFrom(
          "requestId",
          "model",
          "prompt",
          "messages",
          "params",
          "timeoutMs",
          "response",
          "subject",
          "caller",
        ),
        fc.anything(),
      )
      .map(([request, key, value]) => ({ ...request, [key]: value }));
    fc.assert(
      fc.property(fc.oneof(requestArb, mutated), (value) => {
        expect(isDispatchRequest(value)).toBe(DispatchRequest.safeParse(value).success);
      }),
      { numRuns: 3_000, seed: 20261201 },
    );
  });

  it("the hub answers a malformed dispatch with 400 INVALID_REQUEST", async () => {
    const response = await env.AGENT_HUB.getByName("default").fetch("https://hub/dispatch", {
      method: "POST",
      body: JSON.stringify({ ...valid, response: undefined }),
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toEqual({ code: "INVALID_REQUEST", message: "malformed dispatch request" });
  });
});
