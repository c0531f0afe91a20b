// The request lifecycle without sockets: a Dispatcher over fake agent connections and a fake clock.
import { describe, expect, it } from "vitest";
import { AgentConnection } from "../../gateway/hub/agent-connection.ts";
import type { DispatchRequest } from "../../gateway/hub/dispatch.ts";
import { Dispatcher } from "../../gateway/hub/dispatcher.ts";
import type { GatewayFrame, GenerateFrame } from "../../schema/protocol.ts";
import { helloFrame } from "./helpers.ts";

class FakePool {
  readonly agents = new Map<string, AgentConnection>();
  readonly sent: { agent: AgentConnection; frame: GatewayFrame }[] = [];
  readonly known = new Set<string>();
  clock = 1_000;
  wakeAts: number[] = [];
  readonly dispatcher = new Dispatcher({
    queueMax: 2,
    queueTimeoutMs: 500,
    defaultModel: undefined,
    connections: () => this.agents.values(),
    connection: (id) => this.agents.get(id),
    knownModels: () => this.known,
    send: (agent, frame) => {
      this.sent.push({ agent, frame });
      return true;
    },
    wakeAt: (at) => this.wakeAts.push(at),
    now: () => this.clock,
  });

  connect(id: string, { capacity = 1, models = ["m"], ready = true } = {}): AgentConnection {
    const agent = new AgentConnection({} as WebSocket, {
      agentId: id,
      name: id,
      pool: "default",
      sessionId: crypto.randomUUID(),
      connectedAt: this.clock,
    });
    if (ready) {
      agent.applyHello(
        helloFrame(id, {
          capacity,
          models: models.map((name) => ({ name, engine: "synthetic", loaded: true })),
        }),
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
    const request: DispatchRequest = { requestId: id, model: "m", prompt: "p", params: { maxTokens: 4 } };
    return this.dispatcher.submit(request, signal);
  }
}

const done = {
  type: "done",
  finishReason: "stop",
  usage: { promptTokens: 1, completionTokens: 1 },
  timings: { firstTokenMs: 1, totalMs: 1 },
} as const;

describe("Dispatcher", () => {
  it("answers unknown and unavailable models before queueing anything", async () => {
    const pool = new FakePool();
    expect(((await pool.submit("r1")) as Response).status).toBe(404);
    pool.known.add("m");
    const unavailable = (await pool.submit("r2")) as Response;
    expect(unavailable.status).toBe(503);
    expect(unavailable.headers.get("Retry-After")).toBe("1");
    expect(pool.dispatcher.metrics.requests).toMatchObject({ model_not_found: 1, no_agent: 1 });
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
    expect(pool.wakeAts).toEqual([1_500]);
    pool.dispatcher.expire(1_499);
    pool.dispatcher.expire(1_500);
    expect((await waiting).status).toBe(504);
  });

  it("retries once on another session, then fails with the agent's error", async () => {
    const pool = new FakePool();
    const a = pool.connect("a");
    const b = pool.connect("b");
    const response = pool.submit("r1");
    const [[firstId]] = pool.generates() as [[string, GenerateFrame]];
    const first = firstId === "a" ? a : b;
    const second = first === a ? b : a;
    const busy = { type: "error", id: "r1", code: "AGENT_BUSY", message: "busy", retryable: true } as const;
    pool.dispatcher.onError(first, busy);
    expect(pool.generates().map(([id]) => id)).toEqual([first.id, second.id]);
    // Late frames from the first agent no longer count.
    pool.dispatcher.onChunk(first, { type: "chunk", id: "r1", text: "stale", tokens: 1 });
    pool.dispatcher.onError(second, busy);
    const failed = await response;
    expect(failed.status).toBe(502);
    expect(await failed.json()).toMatchObject({ code: "UPSTREAM_ERROR" });
    expect(pool.dispatcher.metrics.retries).toBe(1);
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
      pool.clock,
    );
    pool.dispatcher.pump();
    expect(pool.generates().at(-1)?.[1].id).toBe("r1");
    pool.dispatcher.onChunk(fresh, { type: "chunk", id: "r1", text: "hi", tokens: 1 });
    expect((await response).status).toBe(200);
  });

  it("ends a started stream with an error event when the agent is lost", async () => {
    const pool = new FakePool();
    const a = pool.connect("a");
    const response = pool.submit("r1");
    pool.dispatcher.onChunk(a, { type: "chunk", id: "r1", text: "hi", tokens: 1 });
    pool.lose(a);
    const lines = (await (await response).text())
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
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
    expect(a.inFlight).toBe(0);
    expect(pool.dispatcher.metrics.requests.cancelled).toBe(2);
    expect(pool.generates().map(([, f]) => f.id)).toEqual(["r1"]);
  });
});
