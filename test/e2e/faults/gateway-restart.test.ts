// Faults: the gateway itself goes away under load (the Worker is stopped, as a redeploy or a Durable
// Object restart would) and comes back on the same port with the same state. Every in-flight caller
// must get an error, never a hang; the agents must notice, abort their work, reconnect by themselves
// and serve again.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  Admin,
  Caller,
  generateStreamError,
  longDemoModelArgs,
  SseReader,
  sleep,
  within,
} from "../../helpers/faults.ts";
import { type AgentProcess, type Stack, startStack } from "../../helpers/stack.ts";

let stack: Stack;
let admin: Admin;
let caller: Caller;
let agents: AgentProcess[];
const observed: Record<string, number> = {};

type Outcome =
  | { kind: "ok" }
  | { kind: "status"; status: number }
  | { kind: "network"; error: string }
  | { kind: "hang" };

/** One short request, classified; a request still pending after `timeoutMs` is a hang. */
async function shortRequest(i: number, timeoutMs: number): Promise<Outcome> {
  try {
    const res = await caller.generate({ prompt: `load ${i}`, max_tokens: 24 }, { timeoutMs });
    await res.arrayBuffer();
    return res.status === 200 ? { kind: "ok" } : { kind: "status", status: res.status };
  } catch (err) {
    const name = (err as Error).name;
    if (name === "TimeoutError") return { kind: "hang" };
    const cause = (err as { cause?: { code?: string } }).cause?.code;
    return { kind: "network", error: cause ?? (err as Error).message };
  }
}

beforeAll(async () => {
  stack = await startStack({ vars: { HEALTH_INTERVAL_MS: "300", BREAKER_MIN_CALLS: "1000" } });
  admin = await Admin.for(stack);
  caller = new Caller(stack.origin, await stack.token("user", "restart-caller"));
  const model = await longDemoModelArgs(stack.cacheDir);
  // A redeploy takes seconds; a short backoff cap keeps the test's wait for the reconnect short.
  const args = [...model, "--backoff-base-ms", "200", "--backoff-max-ms", "1500"];
  agents = await Promise.all(["restart-a", "restart-b"].map((id) => stack.startAgent({ id, args })));
  await stack.waitForAgents((list) => list.filter((a) => a.ready).length === 2);
});

afterAll(async () => {
  if (Object.keys(observed).length > 0) console.info("gateway-restart observations (ms):", observed);
  await stack?.stop();
});

describe("the gateway restarted under load", () => {
  it("fails every in-flight caller promptly, and the agents reconnect and serve again", async () => {
    // Long streams that will be cut, and a steady stream of short requests across the restart.
    const streams = await Promise.all(
      Array.from({ length: 4 }, async (_, i) => {
        const res = await caller.generate(
          { prompt: `Interrupted story ${i}`, max_tokens: 3000, temperature: 0, stream: true },
          { timeoutMs: 60_000 },
        );
        const reader = new SseReader(res);
        await reader.until((e) => e.event === "chunk", 10_000, "first chunk");
        return reader;
      }),
    );
    let stopLoad = false;
    let n = 0;
    const outcomes: Outcome[] = [];
    const workers = Array.from({ length: 4 }, async () => {
      while (!stopLoad) {
        outcomes.push(await shortRequest(n++, 15_000));
        if (outcomes.at(-1)?.kind !== "ok") await sleep(100);
      }
    });
    await sleep(300);

    const downAt = Date.now();
    const restarted = stack.restartGateway();
    // In-flight streams end (an error event or a broken connection) instead of hanging.
    const ends = await Promise.all(
      streams.map(async (s) => {
        const events = await s.rest(10_000).catch((err: Error) => {
          throw new Error(`an in-flight stream did not end: ${err.message}`);
        });
        return {
          ended: s.ended,
          error: generateStreamError(events),
          done: events.some((e) => e.event === "done"),
        };
      }),
    );
    observed.restartToStreamsEnded = Date.now() - downAt;
    for (const end of ends) {
      expect(end.done).toBe(false);
      expect(end.ended === "error" || end.error !== undefined).toBe(true);
    }
    await within(restarted, 60_000, "the gateway restart");
    const upAt = Date.now();
    observed.gatewayDownFor = upAt - downAt;

    await stack.waitForAgents((list) => list.filter((a) => a.ready).length === 2, 20_000);
    observed.gatewayUpToAgentsReconnected = Date.now() - upAt;
    expect(observed.gatewayUpToAgentsReconnected).toBeLessThan(10_000);

    // Load keeps running until the gateway has answered a few requests again.
    const okBefore = outcomes.filter((o) => o.kind === "ok").length;
    await within(
      (async () => {
        while (outcomes.filter((o) => o.kind === "ok").length < okBefore + 8) await sleep(50);
      })(),
      20_000,
      "short requests succeeding again",
    );
    observed.gatewayUpToServingAgain = Date.now() - upAt;
    stopLoad = true;
    await within(Promise.all(workers), 20_000, "load workers");

    expect(outcomes.filter((o) => o.kind === "hang")).toEqual([]);
    const failures = outcomes.filter((o) => o.kind !== "ok");
    for (const f of failures) {
      if (f.kind === "status") expect([502, 503, 504]).toContain(f.status);
    }
    observed.shortRequests = outcomes.length;
    observed.shortRequestNetworkErrors = failures.filter((f) => f.kind === "network").length;
    observed.shortRequestErrorStatuses = failures.filter((f) => f.kind === "status").length;

    // The agents stayed up, aborted what they were generating, and report nothing in flight.
    expect(agents.every((a) => a.child.exitCode === null)).toBe(true);
    for (const a of agents) {
      expect(
        a.lines.some((l) => l.includes('"msg":"generation aborted"') && l.includes('"cause":"disconnect"')),
      ).toBe(true);
    }
    await admin.expectNothingInFlight(["restart-a", "restart-b"], Date.now());

    // And both serve streams again.
    const after = await Promise.all(
      Array.from({ length: 4 }, async (_, i) => {
        const res = await caller.generate(
          { prompt: `back ${i}`, max_tokens: 40, stream: true },
          { timeoutMs: 20_000 },
        );
        return (await new SseReader(res).rest(20_000)).at(-1)?.event;
      }),
    );
    expect(after).toEqual(["done", "done", "done", "done"]);
  });
});
