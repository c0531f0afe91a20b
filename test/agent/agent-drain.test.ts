// The agent's graceful leave against the scripted test hub: draining, refusing, finishing or
// aborting in-flight work, and closing with DRAINED.
import { afterEach, describe, expect, it, vi } from "vitest";
import { ExitCode } from "../../node-agent/connection.ts";
import { CloseCode } from "../../schema/protocol.ts";
import { cleanUp, generate, setup, text } from "./scripted-hub.ts";

afterEach(cleanUp);

describe("Agent drain", () => {
  it("announces draining, refuses new work, finishes in-flight work, then closes with DRAINED", async () => {
    const { hub, engine, agent, exit } = await setup({}, { drainTimeoutMs: 5_000 });
    const conn = await hub.connection(0);
    engine.script = { pieces: ["one ", "two ", "three"], delayMs: 40 };
    conn.send(generate("g1"));
    await conn.waitFor("chunk", (c) => c.id === "g1");
    const drained = agent.drain();
    expect(await conn.waitFor("draining")).toEqual({ type: "draining", deadlineMs: 5_000 });
    conn.send(generate("g2"));
    expect(await conn.waitFor("error", (e) => e.id === "g2")).toMatchObject({
      code: "AGENT_DRAINING",
      retryable: true,
    });
    expect(await drained).toEqual({ exitCode: ExitCode.OK, reason: "drained" });
    expect(await exit).toEqual({ exitCode: ExitCode.OK, reason: "drained" });
    expect(conn.of("done").find((d) => d.id === "g1")).toMatchObject({ finishReason: "stop" });
    expect(text(conn, "g1")).toBe("one two three");
    await vi.waitFor(() => expect(conn.closed?.code).toBe(CloseCode.DRAINED));
    expect(hub.connections).toHaveLength(1);
  });

  it("aborts what is still running at the drain deadline with a retryable AGENT_DRAINING", async () => {
    const { hub, engine, agent, exit } = await setup({}, { drainTimeoutMs: 80 });
    const conn = await hub.connection(0);
    engine.script = { pieces: ["x"], holdUntilAborted: true };
    conn.send(generate("s1"));
    await conn.waitFor("chunk", (c) => c.id === "s1");
    await agent.drain();
    expect(await exit).toMatchObject({ exitCode: ExitCode.OK });
    expect(engine.signals[0]?.aborted).toBe(true);
    expect(conn.forId("s1").at(-1)).toMatchObject({ type: "error", code: "AGENT_DRAINING", retryable: true });
    expect(agent.inFlight).toBe(0);
    await vi.waitFor(() => expect(conn.closed?.code).toBe(CloseCode.DRAINED));
  });

  it("drains while disconnected: exits once in-flight work is gone, without waiting for a hub", async () => {
    const { hub, engine, agent, exit } = await setup(
      {},
      { drainTimeoutMs: 5_000, backoff: { baseMs: 60_000, maxMs: 60_000 }, random: () => 0.999 },
    );
    const conn = await hub.connection(0);
    engine.script = { pieces: ["x"], holdUntilAborted: true };
    conn.send(generate("dd1"));
    await conn.waitFor("chunk", (c) => c.id === "dd1");
    conn.ws.terminate(); // the agent now waits ~60 s before redialling
    await vi.waitFor(() => expect(agent.inFlight).toBe(0));
    const started = performance.now();
    expect(await agent.drain()).toEqual({ exitCode: ExitCode.OK, reason: "drained" });
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(await exit).toEqual({ exitCode: ExitCode.OK, reason: "drained" });
    expect(hub.connections).toHaveLength(1);
  });
});
