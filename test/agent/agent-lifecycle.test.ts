// The agent's connection lifecycle against the scripted test hub: reconnects and backoff, close
// codes, refused upgrades, heartbeats, and requests that outlive their session.
import { afterEach, describe, expect, it, vi } from "vitest";
import { ExitCode } from "../../node-agent/connection.ts";
import { CloseCode } from "../../schema/protocol.ts";
import { barrier, cleanUp, generate, setup, sleep, strandOnReconnect, text } from "./scripted-hub.ts";

afterEach(cleanUp);

describe("Agent connection lifecycle", () => {
  it("aborts every in-flight generation when the connection drops, then reconnects", async () => {
    const { hub, engine, agent } = await setup();
    const conn = await hub.connection(0);
    engine.script = { pieces: ["x"], holdUntilAborted: true };
    conn.send(generate("d1"));
    conn.send(generate("d2"));
    await conn.waitFor("chunk", (c) => c.id === "d2");
    expect(agent.inFlight).toBe(2);
    conn.ws.terminate();
    await vi.waitFor(() => expect(agent.inFlight).toBe(0));
    expect(engine.signals.map((s) => s.aborted)).toEqual([true, true]);
    const second = await hub.connection(1);
    expect(second.of("hello")).toHaveLength(1);
    await barrier(second, engine);
    expect(second.forId("d1")).toEqual([]);
    expect(second.forId("d2")).toEqual([]);
  });

  it("backs off exponentially while connections fail, and starts over after a stable one", async () => {
    const { hub, logLines } = await setup(
      { welcome: false },
      { backoff: { baseMs: 20, maxMs: 1_000 }, stableAfterMs: 40, random: () => 0.999_999 },
    );
    for (let i = 0; i < 3; i++) (await hub.connection(i)).ws.close(CloseCode.GOING_AWAY);
    const stable = await hub.connection(3);
    hub.welcome(stable);
    await vi.waitFor(() => expect(logLines.some((l) => l.msg === "connected")).toBe(true));
    await sleep(60);
    stable.ws.close(CloseCode.GOING_AWAY);
    await hub.connection(4);
    const delays = logLines.filter((l) => l.msg === "disconnected").map((l) => l.reconnectInMs);
    expect(delays).toEqual([19, 39, 79, 19]);
  });

  it("keeps growing the backoff while welcomed connections drop before they are stable", async () => {
    const { hub, logLines } = await setup(
      {},
      { backoff: { baseMs: 20, maxMs: 1_000 }, stableAfterMs: 10_000, random: () => 0.999_999 },
    );
    for (let i = 0; i < 3; i++) {
      const conn = await hub.connection(i);
      await vi.waitFor(() => expect(logLines.filter((l) => l.msg === "connected")).toHaveLength(i + 1));
      conn.ws.close(CloseCode.GOING_AWAY);
    }
    await hub.connection(3);
    const delays = logLines.filter((l) => l.msg === "disconnected").map((l) => l.reconnectInMs);
    expect(delays).toEqual([19, 39, 79]);
  });

  it("answers a generate for an id an older session's generation still holds with DUPLICATE_REQUEST", async () => {
    const { hub, engine, agent } = await setup();
    const second = await strandOnReconnect(hub, engine, "dup");
    expect(agent.inFlight).toBe(1);
    // The hub fails the request over to the agent's new session under the same id.
    const sentAt = performance.now();
    second.send(generate("dup"));
    const refused = await second.waitFor("error", (e) => e.id === "dup");
    // Promptly, not after the old generation wound down (and not after the hub's first-chunk timeout).
    expect(performance.now() - sentAt).toBeLessThan(1_000);
    expect(agent.inFlight).toBe(1);
    expect(refused).toEqual({
      type: "error",
      id: "dup",
      code: "DUPLICATE_REQUEST",
      message: "a generation with this request id is still winding down on this agent",
      retryable: true,
    });
    expect(engine.requests).toHaveLength(1);
    expect(agent.stats.refusedDuplicate).toBe(1);
    // Once the old generation has ended the id is free again, and nothing of it reached the new session.
    await vi.waitFor(() => expect(agent.inFlight).toBe(0), { timeout: 3_000 });
    engine.script = { pieces: ["again"] };
    second.send(generate("dup"));
    await second.waitFor("done", (d) => d.id === "dup");
    expect(second.forId("dup").map((f) => f.type)).toEqual(["error", "chunk", "done"]);
    expect(text(second, "dup")).toBe("again");
  });

  it("ignores that duplicate, as protocol v1 did, when the hub negotiated v1 (which has no DUPLICATE_REQUEST)", async () => {
    const { hub, engine, agent, logLines } = await setup({ protocol: 1 });
    const second = await strandOnReconnect(hub, engine, "dup1");
    second.send(generate("dup1"));
    await vi.waitFor(() =>
      expect(
        logLines.filter((l) => l.msg === "ignored generate with a request id already in flight"),
      ).toEqual([expect.objectContaining({ level: "warn", id: "dup1" })]),
    );
    await barrier(second, engine);
    expect(second.forId("dup1")).toEqual([]);
    expect(agent.stats.refusedDuplicate).toBe(0);
    expect(engine.requests).toHaveLength(2);
  });

  it("reconnects after a non-terminal close code", async () => {
    const { hub } = await setup();
    const conn = await hub.connection(0);
    conn.ws.close(CloseCode.GOING_AWAY, "redeploy");
    const second = await hub.connection(1);
    expect(second.of("hello")[0]?.agentId).toBe("mini-01");
  });

  it.each([
    ["SESSION_UNKNOWN", CloseCode.SESSION_UNKNOWN],
    ["LIMIT_EXCEEDED", CloseCode.LIMIT_EXCEEDED],
  ])("reconnects with backoff and says hello again after %s", async (_name, code) => {
    const { hub, logLines } = await setup({}, { random: () => 0.5 });
    const conn = await hub.connection(0);
    await vi.waitFor(() => expect(logLines.some((l) => l.msg === "connected")).toBe(true));
    conn.ws.close(code, "hub side");
    const second = await hub.connection(1);
    expect(second.of("hello")).toHaveLength(1);
    expect(logLines.filter((l) => l.msg === "disconnected")).toEqual([
      expect.objectContaining({ code, reason: "hub side", reconnectInMs: 2, attempt: 1 }),
    ]);
    expect(logLines.filter((l) => l.level === "error")).toEqual([]);
  });

  it.each([
    [CloseCode.UNAUTHORIZED, ExitCode.UNAUTHORIZED],
    [CloseCode.REVOKED, ExitCode.UNAUTHORIZED],
    [CloseCode.SUPERSEDED, ExitCode.REFUSED],
    [CloseCode.INCOMPATIBLE_VERSION, ExitCode.REFUSED],
  ])("stops for good on terminal close code %i (exit %i)", async (code, exitCode) => {
    const { hub, exit, engine, agent, logLines } = await setup();
    const conn = await hub.connection(0);
    engine.script = { pieces: ["x"], holdUntilAborted: true };
    conn.send(generate("t1"));
    await conn.waitFor("chunk");
    conn.ws.close(code, "go away");
    expect(await exit).toMatchObject({ exitCode });
    // The decision is logged when it is made: stop for good, and no reconnect was ever scheduled.
    expect(logLines.filter((l) => l.msg === "hub closed the connection for good")).toEqual([
      expect.objectContaining({ level: "error", code }),
    ]);
    expect(logLines.filter((l) => l.msg === "disconnected" || l.msg === "connecting")).toEqual([
      expect.objectContaining({ msg: "connecting", attempt: 0 }),
    ]);
    await sleep(60);
    expect(hub.connections).toHaveLength(1);
    expect(agent.inFlight).toBe(0);
  });

  it("exits with code 3 when the upgrade is refused with 401", async () => {
    const { exit, hub, logLines } = await setup({ refuseUpgrade: 401 });
    expect(await exit).toMatchObject({ exitCode: ExitCode.UNAUTHORIZED });
    expect(hub.connections).toHaveLength(0);
    const refused = logLines.filter((l) => l.level === "error");
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ msg: "gateway refused the agent token", status: 401 });
  });

  it("keeps reconnecting with backoff while the upgrade fails with 503", async () => {
    const { logLines, agent, hub } = await setup({ refuseUpgrade: 503 });
    await vi.waitFor(() =>
      expect(logLines.filter((l) => l.msg === "disconnected").length).toBeGreaterThan(2),
    );
    expect(hub.connections).toHaveLength(0);
    await agent.stop();
  });

  it("terminates a socket whose heartbeat goes unanswered, and reconnects", async () => {
    const { hub, logLines } = await setup({ answerPings: false, heartbeatIntervalMs: 30 });
    const first = await hub.connection(0);
    await vi.waitFor(() => expect(first.closed).toBeDefined(), { timeout: 2_000 });
    expect(first.pings).toBeGreaterThanOrEqual(1);
    expect(first.closed?.code).toBe(1006); // terminated, no close handshake
    expect(logLines.some((l) => l.msg === "heartbeat timeout")).toBe(true);
    await hub.connection(1);
  });

  it("detects a hub that stops answering within two heartbeat intervals, and aborts its work", async () => {
    const intervalMs = 100;
    const { hub, engine, agent } = await setup({ heartbeatIntervalMs: intervalMs });
    const conn = await hub.connection(0);
    engine.script = { pieces: ["x"], holdUntilAborted: true };
    conn.send(generate("hb1"));
    await conn.waitFor("chunk", (c) => c.id === "hb1");
    await vi.waitFor(() => expect(conn.pings).toBeGreaterThanOrEqual(2), { timeout: 2_000 });
    // From now on the hub is silent, as behind a dead NAT mapping: no pong, no frame, no FIN.
    hub.options.answerPings = false;
    const silentSince = performance.now();
    await vi.waitFor(() => expect(conn.closed).toBeDefined(), { timeout: 2_000, interval: 5 });
    const detectedAfter = performance.now() - silentSince;
    expect(detectedAfter).toBeLessThanOrEqual(2 * intervalMs + 60);
    expect(conn.closed?.code).toBe(1006);
    expect(engine.signals[0]?.aborted).toBe(true);
    await vi.waitFor(() => expect(agent.inFlight).toBe(0));
    // Nothing more is sent for the aborted request on the next session.
    const next = await hub.connection(1);
    await barrier(next, engine);
    expect(next.forId("hb1")).toEqual([]);
  });

  it("drops and redials a socket the hub never welcomes", async () => {
    const { hub, logLines } = await setup({ welcome: false }, { welcomeTimeoutMs: 40 });
    const first = await hub.connection(0);
    await vi.waitFor(() => expect(first.closed?.code).toBe(1006));
    expect(logLines.some((l) => l.msg === "no welcome from the hub")).toBe(true);
    await hub.connection(1);
  });

  it("keeps a socket whose heartbeat is answered", async () => {
    const { hub } = await setup({ heartbeatIntervalMs: 20 });
    const conn = await hub.connection(0);
    // Each interval the agent checks that its previous ping was answered before it pings again:
    // ten pings are nine checks passed, however slowly the timers run.
    await vi.waitFor(() => expect(conn.pings).toBeGreaterThanOrEqual(10), { timeout: 3_000 });
    expect(conn.pings).toBeGreaterThanOrEqual(4);
    expect(conn.closed).toBeUndefined();
    expect(hub.connections).toHaveLength(1);
  });
});
