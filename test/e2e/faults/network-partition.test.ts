// Faults: the network between one agent and the gateway fails while the agent process stays up. The
// agent reaches the gateway through a TCP proxy the test controls; a partition holds every byte
// (no FIN, no RST), so only heartbeats can tell. Both ends must notice within a few heartbeat
// intervals, the agent must stop its generations, callers must get an error event or be failed over,
// and the agent must come back once the network does. Answers are greedy and compared with the same
// engine's answers computed in this process.
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
  waitUntil,
  within,
} from "../../helpers/faults.ts";
import { type AgentProcess, type Stack, startStack } from "../../helpers/stack.ts";
import { TcpProxy } from "../../helpers/tcp-proxy.ts";

const HEARTBEAT_INTERVAL_MS = 1_000;
const FAILOVER_IDS = ["part-pre-1", "part-pre-2", "part-pre-3", "part-pre-4"];
const AFTER_CUT_IDS = Array.from({ length: 6 }, (_, i) => `after-cut-${i}`);

let stack: Stack;
let admin: Admin;
let caller: Caller;
let proxy: TcpProxy;
let behind: AgentProcess; // reaches the gateway through the proxy
let direct: AgentProcess;
let reference: ReferenceEngine;
const observed: Record<string, number> = {};

function isStart(line: string, requestId: string): boolean {
  return line.includes('"msg":"generation started"') && line.includes(`"id":"${requestId}"`);
}

function started(agent: AgentProcess, requestId: string): boolean {
  return agent.lines.some((l) => isStart(l, requestId));
}

function logTime(agent: AgentProcess, msg: string, after: number): number | undefined {
  for (const line of agent.lines) {
    if (!line.includes(`"msg":"${msg}"`)) continue;
    const at = Date.parse((JSON.parse(line) as { time: string }).time);
    if (at >= after) return at;
  }
  return undefined;
}

async function sessionOf(id: string): Promise<string | undefined> {
  return (await admin.agents()).agents.find((a) => a.id === id && a.ready)?.sessionId as string | undefined;
}

beforeAll(async () => {
  stack = await startStack({
    vars: {
      HEARTBEAT_INTERVAL_MS: String(HEARTBEAT_INTERVAL_MS),
      HEALTH_INTERVAL_MS: "300",
      BREAKER_MIN_CALLS: "1000", // breakers are not under test here
    },
  });
  admin = await Admin.for(stack);
  caller = new Caller(stack.origin, await stack.token("user", "partition-caller"));
  proxy = await TcpProxy.start(stack.origin);
  const model = await longDemoModelArgs(stack.cacheDir);
  reference = await ReferenceEngine.start(await longDemoModelPath(stack.cacheDir));
  // Answers the tests compare, generated before any agent competes for the CPU.
  await Promise.all([
    ...FAILOVER_IDS.map((id) => reference.answer({ prompt: `Failover ${id}`, maxTokens: 200 })),
    ...AFTER_CUT_IDS.map((id) => reference.answer({ prompt: id, maxTokens: 300 })),
  ]);
  [behind, direct] = await Promise.all([
    stack.startAgent({
      id: "behind-proxy",
      args: [...model, "--gateway", proxy.origin, "--backoff-base-ms", "100", "--backoff-max-ms", "1000"],
    }),
    stack.startAgent({ id: "direct", args: model }),
  ]);
  await stack.waitForAgents((list) => list.filter((a) => a.ready).length === 2);
});

afterAll(async () => {
  if (Object.keys(observed).length > 0) console.info("network-partition observations (ms):", observed);
  proxy?.restore();
  await stack?.stop();
  await proxy?.close();
  await reference?.close();
});

describe("a network partition between an agent and the gateway", () => {
  it("mid-stream: both ends notice by heartbeat, the caller gets an error event, the agent stops and comes back", async () => {
    const oldSession = await sessionOf("behind-proxy");
    // Two long streams: the scheduler puts one on each agent.
    const streams = await Promise.all(
      ["part-mid-1", "part-mid-2"].map(async (id) => {
        const res = await caller.generate(
          { prompt: `A long partitioned story ${id}`, max_tokens: 3500, temperature: 0, stream: true },
          { headers: { "X-Request-Id": id }, timeoutMs: 60_000 },
        );
        expect(res.status).toBe(200);
        const reader = new SseReader(res);
        await reader.until((e) => e.event === "chunk", 10_000, `${id}'s first chunk`);
        return { id, reader };
      }),
    );
    await waitUntil(
      () => (streams.every((s) => started(behind, s.id) || started(direct, s.id)) ? true : undefined),
      3_000,
      "logs",
    );
    const cut = streams.find((s) => started(behind, s.id));
    const spared = streams.find((s) => started(direct, s.id));
    expect(cut).toBeDefined();
    expect(spared).toBeDefined();
    if (!cut || !spared) return;

    const partitionedAt = Date.now();
    proxy.partition();
    const events = await cut.reader.rest(4 * HEARTBEAT_INTERVAL_MS + 5_000);
    observed.partitionToCallerErrorEvent = Date.now() - partitionedAt;
    expect(cut.reader.ended).toBe("eof");
    const cutText = generateStreamText(events);
    expect(cutText).not.toBe("");
    expect(events.at(-1)?.event).toBe("error");
    expect(generateStreamError(events)).toMatchObject({ code: "UPSTREAM_ERROR", requestId: cut.id });
    // The hub closes a peer silent for 3 heartbeat intervals; its check runs once per interval.
    expect(observed.partitionToCallerErrorEvent).toBeLessThan(4 * HEARTBEAT_INTERVAL_MS + 2_000);

    // The agent saw it too (a pong missing for one interval), and aborted the generation.
    const agentDetectedAt = await waitUntil(
      () => logTime(behind, "heartbeat timeout", partitionedAt),
      5_000,
      "the agent's heartbeat timeout",
    );
    observed.partitionToAgentHeartbeatTimeout = agentDetectedAt - partitionedAt;
    expect(observed.partitionToAgentHeartbeatTimeout).toBeLessThanOrEqual(2 * HEARTBEAT_INTERVAL_MS + 500);
    await waitUntil(
      () =>
        behind.lines.find(
          (l) =>
            l.includes('"msg":"generation aborted"') &&
            l.includes(`"id":"${cut.id}"`) &&
            l.includes('"cause":"disconnect"'),
        ),
      3_000,
      "the agent aborting the partitioned generation",
    );

    // The other agent's stream never noticed.
    const rest = await spared.reader.rest(30_000);
    expect(rest.at(-1)?.event).toBe("done");

    await within(
      stack.waitForAgents((list) => !list.some((a) => a.id === "behind-proxy"), 5_000),
      6_000,
      "hub forgets the agent",
    );
    const restoredAt = Date.now();
    proxy.restore();
    await stack.waitForAgents((list) => list.some((a) => a.id === "behind-proxy" && a.ready), 15_000);
    observed.restoreToReconnected = Date.now() - restoredAt;
    expect(await sessionOf("behind-proxy")).not.toBe(oldSession);
    expect(behind.child.exitCode).toBeNull();

    // Nothing leaked: the agent's own health report (after reconnecting) says it runs nothing.
    await admin.expectNothingInFlight(["behind-proxy", "direct"], Date.now());
    // The lost connection counted once against the partitioned agent, never against the other.
    expect((await admin.breaker("behind-proxy"))?.failures).toBe(1);
    expect((await admin.breaker("direct"))?.failures ?? 0).toBe(0);

    // Generated last, when nothing is timed any more: the partitioned stream carried exactly the start
    // of its answer, and the spared one its whole answer.
    const story = (id: string) => ({ prompt: `A long partitioned story ${id}`, maxTokens: 3500 });
    expect(cutText).toBe(await reference.prefix(story(cut.id), cutText.length));
    const whole = await reference.answer(story(spared.id));
    expect(generateStreamText(rest)).toBe(whole.text);
    expect(JSON.parse(rest.at(-1)?.data ?? "{}")).toMatchObject({
      tokens_generated: 3500,
      prompt_tokens: whole.promptTokens,
      finish_reason: "length",
    });
  });

  it("before the first chunk: work sent into the partition is failed over to the other agent", async () => {
    const retriesBefore = (await admin.agents()).summary.metrics.retries;
    const partitionedAt = Date.now();
    proxy.partition();
    // Sent while the hub still thinks the partitioned agent is fine: half of them go into the void.
    const ids = FAILOVER_IDS;
    const results = await within(
      Promise.all(
        ids.map((id) =>
          caller.generate(
            { prompt: `Failover ${id}`, max_tokens: 200, temperature: 0 },
            { headers: { "X-Request-Id": id }, timeoutMs: 20_000 },
          ),
        ),
      ),
      20_000,
      "requests during the partition",
    );
    observed.partitionToLastFailoverAnswer = Date.now() - partitionedAt;
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    const bodies = (await Promise.all(results.map((r) => r.json()))) as Array<{
      text: string;
      tokens_generated: number;
    }>;
    const expected = await Promise.all(
      ids.map((id) => reference.answer({ prompt: `Failover ${id}`, maxTokens: 200 })),
    );
    expect(bodies.map((b) => [b.text, b.tokens_generated])).toEqual(expected.map((e) => [e.text, 200]));
    expect(observed.partitionToLastFailoverAnswer).toBeLessThan(4 * HEARTBEAT_INTERVAL_MS + 8_000);
    const retries = (await admin.agents()).summary.metrics.retries;
    expect(retries).toBeGreaterThan(retriesBefore);
    // One retry at most per request: each ran on the direct agent, once.
    expect(retries).toBeLessThanOrEqual(retriesBefore + ids.length);
    expect(ids.map((id) => direct.lines.filter((l) => isStart(l, id)).length)).toEqual([1, 1, 1, 1]);

    const restoredAt = Date.now();
    proxy.restore();
    await stack.waitForAgents((list) => list.some((a) => a.id === "behind-proxy" && a.ready), 15_000);
    observed.restoreToReconnectedAgain = Date.now() - restoredAt;
    await admin.expectNothingInFlight(["behind-proxy", "direct"], Date.now());
    // The partitioned agent dropped the connection the work was sent on (its heartbeat timed out)
    // and is back on a new one, so none of the frames held in the partition can still reach it: it
    // never started any of that work.
    expect(logTime(behind, "heartbeat timeout", partitionedAt)).toBeDefined();
    expect(ids.filter((id) => started(behind, id))).toEqual([]);
  });

  it("a cut connection (RST) is noticed at once, and the agent keeps redialling until the network is back", async () => {
    const cutAt = Date.now();
    proxy.cut();
    await stack.waitForAgents((list) => !list.some((a) => a.id === "behind-proxy"), 5_000);
    observed.cutToHubForgetsAgent = Date.now() - cutAt;
    await waitUntil(
      () => (proxy.refused >= 2 ? true : undefined),
      10_000,
      "the agent redialling into the cut",
    );
    proxy.restore();
    // Both ready: on a loaded machine the other agent may itself be mid-reconnect (a late heartbeat).
    await stack.waitForAgents(
      (list) => ["behind-proxy", "direct"].every((id) => list.some((a) => a.id === id && a.ready)),
      10_000,
    );

    // Serves again: enough concurrent work that both agents get some.
    const ids = AFTER_CUT_IDS;
    const results = await Promise.all(
      ids.map((id) =>
        caller.generate(
          { prompt: id, max_tokens: 300, temperature: 0 },
          { headers: { "X-Request-Id": id }, timeoutMs: 20_000 },
        ),
      ),
    );
    const failures = await Promise.all(
      results.map(async (r, i) =>
        r.status === 200 ? "" : `${ids[i]}: ${r.status} ${await r.clone().text()}`,
      ),
    );
    expect(
      results.map((r) => r.status),
      failures.filter(Boolean).join("; "),
    ).toEqual(Array(6).fill(200));
    const texts = await Promise.all(results.map(async (r) => ((await r.json()) as { text: string }).text));
    const expected = await Promise.all(ids.map((id) => reference.answer({ prompt: id, maxTokens: 300 })));
    expect(texts).toEqual(expected.map((e) => e.text));
    expect(ids.some((id) => started(behind, id))).toBe(true);
    await admin.expectNothingInFlight(["behind-proxy", "direct"], Date.now());
  });
});
