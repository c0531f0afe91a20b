// Faults: the gateway itself goes away under load (the Worker is stopped, as a redeploy or a Durable
// Object restart would) and comes back on the same port with the same state. Every in-flight caller
// must get an error, never a hang; the agents must notice, abort their work, reconnect by themselves
// and serve again. Answers are greedy and compared with the same engine's answers computed here.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReferenceEngine } from "../../helpers/expected-text.ts";
import {
  Admin,
  Caller,
  generateStreamError,
  generateStreamText,
  longDemoModelArgs,
  longDemoModelPath,
  SseReader,
  sleep,
  within,
} from "../../helpers/faults.ts";
import { type AgentProcess, type Stack, startStack } from "../../helpers/stack.ts";

let stack: Stack;
let admin: Admin;
let caller: Caller;
let agents: AgentProcess[];
let reference: ReferenceEngine;
const observed: Record<string, number> = {};

const SHORT_TOKENS = 24;
/** Short requests cycle through this many prompts: concurrent ones differ, and each answer is generated once here. */
const SHORT_PROMPTS = 32;
const shortPrompt = (i: number) => `load ${i % SHORT_PROMPTS}`;

type Outcome =
  | { kind: "ok"; i: number; text: string }
  | { kind: "status"; status: number }
  | { kind: "network"; error: string }
  | { kind: "hang" };

/** One short request, classified; a request still pending after `timeoutMs` is a hang. */
async function shortRequest(i: number, timeoutMs: number): Promise<Outcome> {
  try {
    const res = await caller.generate(
      { prompt: shortPrompt(i), max_tokens: SHORT_TOKENS, temperature: 0 },
      { timeoutMs },
    );
    if (res.status === 200) return { kind: "ok", i, text: ((await res.json()) as { text: string }).text };
    await res.arrayBuffer();
    return { kind: "status", status: res.status };
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
  reference = await ReferenceEngine.start(await longDemoModelPath(stack.cacheDir));
  // Answers the test compares, generated before any agent competes for the CPU.
  await Promise.all([
    ...Array.from({ length: SHORT_PROMPTS }, (_, i) =>
      reference.answer({ prompt: shortPrompt(i), maxTokens: SHORT_TOKENS }),
    ),
    ...Array.from({ length: 4 }, (_, i) => reference.answer({ prompt: `back ${i}`, maxTokens: 40 })),
  ]);
  // A redeploy takes seconds; a short backoff cap keeps the test's wait for the reconnect short.
  const args = [...model, "--backoff-base-ms", "200", "--backoff-max-ms", "1500"];
  agents = await Promise.all(["restart-a", "restart-b"].map((id) => stack.startAgent({ id, args })));
  await stack.waitForAgents((list) => list.filter((a) => a.ready).length === 2);
});

afterAll(async () => {
  if (Object.keys(observed).length > 0) console.info("gateway-restart observations (ms):", observed);
  await stack?.stop();
  await reference?.close();
});

describe("the gateway restarted under load", () => {
  it("fails every in-flight caller promptly, and the agents reconnect and serve again", async () => {
    // Long streams that will be cut, and a steady stream of short requests across the restart.
    const streams = await Promise.all(
      Array.from({ length: 4 }, async (_, i) => {
        const res = await caller.generate(
          { prompt: `Interrupted story ${i}`, max_tokens: 3000, temperature: 0, stream: true },
          { headers: { "X-Request-Id": `interrupted-${i}` }, timeoutMs: 60_000 },
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
          text: generateStreamText(events),
        };
      }),
    );
    observed.restartToStreamsEnded = Date.now() - downAt;
    for (const end of ends) {
      expect(end.done).toBe(false);
      expect(end.ended === "error" || end.error !== undefined).toBe(true);
    }
    // Each stream carried exactly the start of its own answer before it was cut.
    const cut = await Promise.all(
      ends.map((end, i) =>
        reference.prefix({ prompt: `Interrupted story ${i}`, maxTokens: 3000 }, end.text.length),
      ),
    );
    expect(ends.map((end) => end.text)).toEqual(cut);
    expect(ends.every((end) => end.text !== "")).toBe(true);
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

    // The answers served across the restart are each caller's own.
    const served = outcomes.filter((o): o is Extract<Outcome, { kind: "ok" }> => o.kind === "ok");
    const expectedShort = await Promise.all(
      served.map((o) => reference.answer({ prompt: shortPrompt(o.i), maxTokens: SHORT_TOKENS })),
    );
    expect(served.map((o) => o.text)).toEqual(expectedShort.map((e) => e.text));

    // The agents stayed up, aborted what they were generating, and report nothing in flight: every
    // stream that was cut was aborted for the disconnect by the agent that ran it, on both agents.
    expect(agents.every((a) => a.child.exitCode === null)).toBe(true);
    const abortedBy = streams.map((_, i) =>
      agents
        .filter((a) =>
          a.lines.some(
            (l) =>
              l.includes('"msg":"generation aborted"') &&
              l.includes(`"id":"interrupted-${i}"`) &&
              l.includes('"cause":"disconnect"'),
          ),
        )
        .map((a) => a.id),
    );
    const startedBy = streams.map((_, i) =>
      agents
        .filter((a) =>
          a.lines.some(
            (l) => l.includes('"msg":"generation started"') && l.includes(`"id":"interrupted-${i}"`),
          ),
        )
        .map((a) => a.id),
    );
    expect(abortedBy).toEqual(startedBy);
    expect(startedBy.every((ids) => ids.length === 1)).toBe(true);
    expect([...new Set(abortedBy.flat())].sort()).toEqual(["restart-a", "restart-b"]);
    await admin.expectNothingInFlight(["restart-a", "restart-b"], Date.now());

    // And both serve streams again.
    const after = await Promise.all(
      Array.from({ length: 4 }, async (_, i) => {
        const res = await caller.generate(
          { prompt: `back ${i}`, max_tokens: 40, temperature: 0, stream: true },
          { timeoutMs: 20_000 },
        );
        const events = await new SseReader(res).rest(20_000);
        return { last: events.at(-1)?.event, text: generateStreamText(events) };
      }),
    );
    const expectedAfter = await Promise.all(
      after.map((_, i) => reference.answer({ prompt: `back ${i}`, maxTokens: 40 })),
    );
    expect(after).toEqual(expectedAfter.map((e) => ({ last: "done", text: e.text })));
  });
});
