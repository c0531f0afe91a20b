// The agent's session against the scripted test hub and engine (scripted-hub.ts): hello and
// welcome, generations and their frames, cancel, deadlines, capacity, errors, load/unload, health
// and backpressure.
import { readFileSync } from "node:fs";
import { availableParallelism, totalmem } from "node:os";
import { afterEach, describe, expect, it, vi } from "vitest";
import { AGENT_VERSION, Agent } from "../../node-agent/agent.ts";
import { EngineError } from "../../node-agent/engines/engine.ts";
import { CancelFrame, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION } from "../../schema/protocol.ts";
import { barrier, cleanUp, generate, ScriptedTestEngine, setup, sleep, TOKEN, text } from "./scripted-hub.ts";

const agentDefaults = () => ({
  engine: new ScriptedTestEngine(),
  gatewayUrl: "ws://127.0.0.1:1/agents/connect",
  token: TOKEN,
  agentId: "mini-01",
});

afterEach(cleanUp);

describe("Agent session", () => {
  it("says hello with its identity, engine, models, capacity and host facts, then logs connected", async () => {
    const { hub, logLines } = await setup();
    const conn = await hub.connection(0);
    expect(conn.authorization).toBe(`Bearer ${TOKEN}`);
    const hello = conn.of("hello")[0];
    expect(hello).toMatchObject({
      type: "hello",
      protocol: PROTOCOL_VERSION,
      minProtocol: MIN_PROTOCOL_VERSION,
      // llama.cpp cannot enforce a JSON schema yet, so structured_output is not offered.
      capabilities: ["load", "duplicate_answer"],
      agentId: "mini-01",
      name: "test-mini",
      agentVersion: AGENT_VERSION,
      engines: ["synthetic"],
      models: [{ name: "test-model", engine: "synthetic", loaded: true }],
      capacity: 2,
      host: { platform: process.platform, arch: process.arch },
    });
    expect(hello?.host.memoryTotalBytes).toBe(totalmem());
    expect(AGENT_VERSION).toMatch(/^\d+\.\d+\.\d+/);
    expect(AGENT_VERSION).toBe(JSON.parse(readFileSync("package.json", "utf8")).version);
    await vi.waitFor(() => expect(logLines.find((l) => l.msg === "connected")).toBeDefined());
    expect(logLines.find((l) => l.msg === "connected")).toMatchObject({
      level: "info",
      agentId: "mini-01",
      sessionId: "session-1",
      pool: "default",
      protocol: PROTOCOL_VERSION,
      capabilities: ["duplicate_answer", "load"],
    });
  });

  it("uses only the capabilities it offered and the hub's welcome names, and logs the negotiated version", async () => {
    const { logLines } = await setup({
      protocol: 1,
      capabilities: ["load", "structured_output", "capability-from-the-future"],
    });
    await vi.waitFor(() => expect(logLines.find((l) => l.msg === "connected")).toBeDefined());
    expect(logLines.find((l) => l.msg === "connected")).toMatchObject({
      protocol: 1,
      capabilities: ["load"],
    });
    expect(logLines.filter((l) => l.level === "warn")).toEqual([]);
  });

  it("with maxProtocol pinned to 1 offers only v1, as an older gateway requires, and treats the session as v1", async () => {
    const { hub, logLines } = await setup({ protocol: 1 }, { maxProtocol: 1 });
    const conn = await hub.connection(0);
    expect(conn.of("hello")[0]).toMatchObject({ protocol: 1, minProtocol: 1 });
    await vi.waitFor(() => expect(logLines.find((l) => l.msg === "connected")).toBeDefined());
    expect(logLines.find((l) => l.msg === "connected")).toMatchObject({ protocol: 1 });
    expect(logLines.filter((l) => l.level === "warn")).toEqual([]);
    expect(() => new Agent({ ...agentDefaults(), maxProtocol: PROTOCOL_VERSION + 1 })).toThrow(
      /maxProtocol must be an integer from 1 to 2/,
    );
  });

  it("coalesces pieces that come fast into few chunks, sends the first at once, and ends with done", async () => {
    const { hub, engine, agent } = await setup();
    const conn = await hub.connection(0);
    const pieces = Array.from({ length: 200 }, (_, i) => `w${i} `);
    engine.script = { pieces };
    conn.send(generate("r1"));
    const done = await conn.waitFor("done", (d) => d.id === "r1");
    const chunks = conn.of("chunk").filter((c) => c.id === "r1");
    expect(chunks.length).toBeGreaterThanOrEqual(2);
    expect(chunks.length).toBeLessThan(pieces.length / 10);
    expect(chunks[0]).toEqual({ type: "chunk", id: "r1", text: "w0 ", tokens: 1 });
    expect(text(conn, "r1")).toBe(pieces.join(""));
    expect(chunks.reduce((n, c) => n + c.tokens, 0)).toBe(200);
    expect(done).toMatchObject({
      finishReason: "stop",
      usage: { promptTokens: 3, completionTokens: 200 },
    });
    expect(done.timings.firstTokenMs).not.toBeNull();
    expect(done.timings.totalMs).toBeGreaterThanOrEqual(done.timings.firstTokenMs ?? 0);
    expect(conn.forId("r1").at(-1)?.type).toBe("done");
    expect(agent.inFlight).toBe(0);
    expect(engine.requests[0]).toEqual({ model: "test-model", prompt: "hi", params: { maxTokens: 64 } });
  });

  it("flushes on the coalescing window when pieces trickle in", async () => {
    const { hub, engine } = await setup({}, { flushMs: 16 });
    const conn = await hub.connection(0);
    const pieces = Array.from({ length: 24 }, (_, i) => `t${i}`);
    engine.script = { pieces, delayMs: 3 };
    conn.send(generate("r2"));
    await conn.waitFor("done", (d) => d.id === "r2");
    const chunks = conn.of("chunk").filter((c) => c.id === "r2");
    expect(chunks.length).toBeGreaterThan(2);
    expect(chunks.length).toBeLessThan(pieces.length);
    expect(text(conn, "r2")).toBe(pieces.join(""));
  });

  it("cancel aborts the engine, answers done/cancelled, and frees the slot", async () => {
    const { hub, engine, agent } = await setup();
    const conn = await hub.connection(0);
    engine.script = { pieces: ["a", "b"], holdUntilAborted: true };
    conn.send(generate("r3"));
    await conn.waitFor("chunk", (c) => c.id === "r3");
    expect(agent.inFlight).toBe(1);
    conn.send({ type: "cancel", id: "r3", reason: "client_disconnected" });
    const done = await conn.waitFor("done", (d) => d.id === "r3");
    expect(engine.signals[0]?.aborted).toBe(true);
    expect(done).toMatchObject({ finishReason: "cancelled", usage: { completionTokens: 2 } });
    expect(agent.inFlight).toBe(0);
    // A cancel for something no longer in flight is ignored.
    conn.send({ type: "cancel", id: "r3", reason: "client_disconnected" });
    await barrier(conn, engine);
    expect(conn.forId("r3").map((f) => f.type)).toEqual(["chunk", "done"]);
    expect(engine.signals).toHaveLength(2);
  });

  it.each(CancelFrame.shape.reason.options)(
    "answers cancel %s with done/cancelled and frees the slot",
    async (reason) => {
      const { hub, engine, agent } = await setup();
      const conn = await hub.connection(0);
      engine.script = { pieces: ["a"], holdUntilAborted: true };
      conn.send(generate("c1"));
      await conn.waitFor("chunk", (c) => c.id === "c1");
      conn.send({ type: "cancel", id: "c1", reason });
      expect(await conn.waitFor("done", (d) => d.id === "c1")).toMatchObject({ finishReason: "cancelled" });
      expect(engine.signals[0]?.aborted).toBe(true);
      expect(agent.inFlight).toBe(0);
      expect(agent.stats.malformedFrames).toBe(0);
    },
  );

  it("stops a generation on a cancel whose reason it does not know (a newer hub's)", async () => {
    const { hub, engine, agent, logLines } = await setup();
    const conn = await hub.connection(0);
    engine.script = { pieces: ["a"], holdUntilAborted: true };
    conn.send(generate("u1"));
    await conn.waitFor("chunk", (c) => c.id === "u1");
    conn.send({ type: "cancel", id: "u1", reason: "reason-from-the-future" });
    expect(await conn.waitFor("done", (d) => d.id === "u1")).toMatchObject({ finishReason: "cancelled" });
    expect(engine.signals[0]?.aborted).toBe(true);
    expect(agent.inFlight).toBe(0);
    expect(agent.stats.malformedFrames).toBe(0);
    expect(logLines.find((l) => l.msg === "cancel with a reason this agent does not know")).toMatchObject({
      id: "u1",
    });
    // A cancel for nothing in flight, with an unknown reason, is just a malformed frame.
    conn.send({ type: "cancel", id: "nobody", reason: "reason-from-the-future" });
    await vi.waitFor(() => expect(agent.stats.malformedFrames).toBe(1));
  });

  it("logs each generation it starts, with the request id", async () => {
    const { hub, logLines } = await setup();
    const conn = await hub.connection(0);
    conn.send(generate("l1"));
    await conn.waitFor("done", (d) => d.id === "l1");
    expect(logLines.find((l) => l.msg === "generation started")).toMatchObject({
      level: "info",
      id: "l1",
      model: "test-model",
      inFlight: 1,
    });
  });

  it("aborts at the request's deadline", async () => {
    const { hub, engine, agent } = await setup();
    const conn = await hub.connection(0);
    engine.script = { pieces: ["x"], holdUntilAborted: true };
    conn.send(generate("r4", { deadline: Date.now() + 60 }));
    const done = await conn.waitFor("done", (d) => d.id === "r4");
    expect(done.finishReason).toBe("cancelled");
    expect(engine.signals[0]?.aborted).toBe(true);
    expect(agent.inFlight).toBe(0);
  });

  it("times the deadline from timeoutMs, not from a hub clock that disagrees with its own", async () => {
    const { hub, engine, agent } = await setup();
    const conn = await hub.connection(0);
    engine.script = { pieces: ["x"], holdUntilAborted: true };
    // The hub's clock is an hour behind: the absolute deadline has long passed by this clock.
    const started = Date.now();
    conn.send(generate("skew", { deadline: Date.now() - 3_600_000, timeoutMs: 150 }));
    const done = await conn.waitFor("done", (d) => d.id === "skew");
    expect(done.finishReason).toBe("cancelled");
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(agent.inFlight).toBe(0);
  });

  it("refuses work beyond capacity with a retryable AGENT_BUSY, and takes work again once a slot frees", async () => {
    const { hub, engine, agent, logLines } = await setup();
    const conn = await hub.connection(0);
    engine.script = { pieces: ["x"], holdUntilAborted: true };
    conn.send(generate("b1"));
    conn.send(generate("b2"));
    conn.send(generate("b3"));
    const busy = await conn.waitFor("error", (e) => e.id === "b3");
    expect(busy).toEqual({
      type: "error",
      id: "b3",
      code: "AGENT_BUSY",
      message: "agent is at capacity",
      retryable: true,
    });
    expect(agent.inFlight).toBe(2);
    expect(agent.stats.refusedBusy).toBe(1);
    expect(logLines.filter((l) => l.msg === "refused a generate beyond capacity")).toEqual([
      expect.objectContaining({ level: "warn", id: "b3", capacity: 2 }),
    ]);
    conn.send({ type: "cancel", id: "b1", reason: "client_disconnected" });
    await conn.waitFor("done", (d) => d.id === "b1");
    engine.script = { pieces: ["ok"] };
    conn.send(generate("b4"));
    await conn.waitFor("done", (d) => d.id === "b4" && d.finishReason === "stop");
  });

  it("maps EngineError codes, and hides unknown errors behind ENGINE_ERROR", async () => {
    const { hub, engine, agent } = await setup();
    const conn = await hub.connection(0);
    engine.script = { error: new EngineError("MODEL_NOT_FOUND", "no model named nope") };
    conn.send(generate("e1"));
    expect(await conn.waitFor("error", (e) => e.id === "e1")).toEqual({
      type: "error",
      id: "e1",
      code: "MODEL_NOT_FOUND",
      message: "no model named nope",
      retryable: false,
    });
    engine.script = { pieces: ["partial"], error: new TypeError("secret internal detail at /src/x.ts:1") };
    conn.send(generate("e2"));
    const err = await conn.waitFor("error", (e) => e.id === "e2");
    expect(err).toMatchObject({ code: "ENGINE_ERROR", retryable: false });
    expect(err.message).not.toMatch(/secret|\/src/);
    expect(text(conn, "e2")).toBe("partial");
    expect(agent.inFlight).toBe(0);
  });

  it("ignores malformed gateway frames without crashing, and counts them", async () => {
    const { hub, engine, agent } = await setup();
    const conn = await hub.connection(0);
    conn.ws.send("not json at all");
    conn.ws.send(JSON.stringify({ type: "generate", id: "m1" }));
    conn.ws.send(JSON.stringify({ type: "teleport" }));
    conn.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    await vi.waitFor(() => expect(agent.stats.malformedFrames).toBe(4));
    engine.script = { pieces: ["still here"] };
    conn.send(generate("m2"));
    await conn.waitFor("done", (d) => d.id === "m2");
    expect(conn.forId("m1")).toEqual([]);
    expect(hub.connections).toHaveLength(1);
  });

  it("answers load and unload with loaded and unloaded, and only logs a failed load", async () => {
    const { hub, engine, logLines } = await setup();
    const conn = await hub.connection(0);
    conn.send({ type: "load", model: "m-a" });
    conn.send({ type: "unload", model: "m-b" });
    conn.send({ type: "load", model: "broken" });
    expect(await conn.waitFor("loaded")).toEqual({
      type: "loaded",
      model: { name: "m-a", engine: "synthetic", loaded: true },
    });
    expect(await conn.waitFor("unloaded")).toEqual({ type: "unloaded", model: "m-b" });
    await vi.waitFor(() => expect(logLines.some((l) => l.msg === "model load failed")).toBe(true));
    expect(logLines.find((l) => l.msg === "model load failed")).toMatchObject({
      level: "warn",
      model: "broken",
      error: "cannot load",
    });
    expect(engine.loaded).toEqual(["m-a"]);
    await barrier(conn, engine);
    expect(conn.of("error")).toEqual([]);
    expect(conn.of("loaded")).toHaveLength(1);
  });

  it("loads and unloads versioned model ids, and refuses text that is no model id before the engine sees it", async () => {
    const { hub, engine, agent, logLines } = await setup();
    const conn = await hub.connection(0);
    conn.send({ type: "load", model: "m-a:1:2" });
    conn.send({ type: "unload", model: "m-b:1:2" });
    conn.send({ type: "load", model: "m-a:1.2.0" });
    conn.send({ type: "unload", model: "m-b:3" });
    expect(await conn.waitFor("loaded")).toEqual({
      type: "loaded",
      model: { name: "m-a:1.2.0", engine: "synthetic", loaded: true },
    });
    expect(await conn.waitFor("unloaded")).toEqual({ type: "unloaded", model: "m-b:3" });
    expect(engine.loaded).toEqual(["m-a:1.2.0"]);
    expect(engine.unloaded).toEqual(["m-b:3"]);
    expect(logLines.filter((l) => l.level === "warn")).toEqual([
      expect.objectContaining({
        msg: "model load failed",
        model: "m-a:1:2",
        error: expect.stringMatching(/not a model id/),
      }),
      expect.objectContaining({
        msg: "model unload failed",
        model: "m-b:1:2",
        error: expect.stringMatching(/not a model id/),
      }),
    ]);
    expect(agent.stats.malformedFrames).toBe(0);
  });

  it("sends health with in-flight count, the decode rate of finished generations, and host facts", async () => {
    const { hub, engine } = await setup({ healthIntervalMs: 40 });
    const conn = await hub.connection(0);
    // A generation still running counts for nothing yet, however many tokens it has produced.
    engine.script = { pieces: ["a", "b", "c"], holdUntilAborted: true };
    conn.send(generate("h1"));
    await vi.waitFor(() => expect(engine.piecesPulled).toBe(3));
    const busy = await conn.waitFor("health", (h) => h.inFlight === 1 && conn.of("chunk").length > 0);
    expect(busy).toMatchObject({ queued: 0, tokensPerSecond: 0, models: [{ name: "test-model" }] });
    expect(busy.host.cpus).toBe(availableParallelism());
    expect(busy.host.rssBytes).toBeGreaterThan(0);
    // Nor does it once cancelled.
    conn.send({ type: "cancel", id: "h1", reason: "client_disconnected" });
    await conn.waitFor("done", (d) => d.id === "h1");
    // A finished one does: 4 tokens after the first over the time after the first token, >= 80 ms.
    engine.script = { pieces: ["a", "b", "c", "d", "e"], delayMs: 20 };
    conn.send(generate("h2"));
    const done = await conn.waitFor("done", (d) => d.id === "h2");
    expect(done.finishReason).toBe("stop");
    const health = await conn.waitFor("health", (h) => h.tokensPerSecond > 0);
    const decodeSeconds = (done.timings.totalMs - (done.timings.firstTokenMs ?? Number.NaN)) / 1000;
    expect(health.tokensPerSecond).toBeCloseTo(4 / decodeSeconds, 1);
    expect(health.tokensPerSecond).toBeLessThanOrEqual(4 / 0.075);
    // It stays while the generation is recent, though nothing is generated since.
    const reported = conn.of("health").indexOf(health);
    const next = await conn.waitFor("health", (h) => conn.of("health").indexOf(h) > reported);
    expect(next).toMatchObject({ inFlight: 0, tokensPerSecond: health.tokensPerSecond });
  });

  it("stops pulling from the engine while the socket is backed up", async () => {
    const { hub, engine } = await setup({}, { maxBufferedBytes: 64 * 1024, flushBytes: 4096 });
    const conn = await hub.connection(0);
    // The hub stops reading: the kernel buffers fill, then ws.bufferedAmount grows.
    // biome-ignore lint/suspicious/noExplicitAny: ws keeps the net.Socket private; pausing it is the point.
    (conn.ws as any)._socket.pause();
    engine.script = { endless: "x".repeat(64 * 1024) };
    conn.send(generate("bp"));
    // It pulls until the socket buffers more than its limit (64 KiB: two 64 KiB pieces), then waits.
    await vi.waitFor(() => expect(engine.piecesPulled).toBeGreaterThan(1));
    await sleep(300);
    const early = engine.piecesPulled;
    // The event loop keeps turning meanwhile: a generation that was not held back would be pulled.
    let turns = 0;
    const ticker = setInterval(() => turns++, 5);
    await sleep(300);
    clearInterval(ticker);
    expect(turns).toBeGreaterThan(5);
    expect(engine.piecesPulled).toBe(early);
    // Bounded by kernel socket buffers plus the agent's limit, far below what 600 ms of pulling yields.
    expect(early * 64 * 1024).toBeLessThan(64 * 1024 * 1024);
    // biome-ignore lint/suspicious/noExplicitAny: as above
    (conn.ws as any)._socket.resume();
    await vi.waitFor(() => expect(engine.piecesPulled).toBeGreaterThan(early + 10));
  });
});
