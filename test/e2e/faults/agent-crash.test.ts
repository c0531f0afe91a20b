// Faults: a real agent process dies (SIGKILL) while it works. Mid-stream, the caller's stream must
// end with an explicit error event (both APIs) while the other agent's stream finishes untouched;
// before the first chunk, the request must go to the other agent without the caller noticing.
// The agents serve a longer-context copy of the demo model, so a generation lasts seconds, not 0.6 s.
// Answers are greedy and compared with the same engine's answers computed in this process.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReferenceEngine } from "../../helpers/expected-text.ts";
import {
  Admin,
  Caller,
  chatStreamError,
  chatStreamText,
  generateStreamError,
  generateStreamText,
  longDemoModelArgs,
  longDemoModelPath,
  SseReader,
  waitUntil,
  within,
} from "../../helpers/faults.ts";
import { type AgentProcess, type Stack, startStack } from "../../helpers/stack.ts";

let stack: Stack;
let admin: Admin;
let caller: Caller;
let modelArgs: string[];
let reference: ReferenceEngine;
const agents = new Map<string, AgentProcess>();
const observed: Record<string, number> = {};

const IDS = ["crash-a", "crash-b"] as const;

async function startAgent(id: string): Promise<AgentProcess> {
  const agent = await stack.startAgent({ id, args: [...modelArgs, "--capacity", "4"] });
  agents.set(id, agent);
  return agent;
}

/** Which agent process started generating request `requestId` (from its "generation started" log). */
function servedBy(requestId: string): Promise<AgentProcess> {
  return waitUntil(
    () =>
      [...agents.values()].find((a) =>
        a.lines.some((l) => l.includes('"msg":"generation started"') && l.includes(`"id":"${requestId}"`)),
      ),
    3_000,
    `the agent that serves ${requestId}`,
    10,
  );
}

function signalAll(signal: NodeJS.Signals): void {
  for (const agent of agents.values()) if (agent.child.exitCode === null) agent.child.kill(signal);
}

beforeAll(async () => {
  // Breakers are not under test here: crashes must not open one and leave a single agent to retry on.
  stack = await startStack({ vars: { HEALTH_INTERVAL_MS: "300", BREAKER_MIN_CALLS: "1000" } });
  admin = await Admin.for(stack);
  caller = new Caller(stack.origin, await stack.token("user", "crash-caller"));
  modelArgs = await longDemoModelArgs(stack.cacheDir);
  reference = await ReferenceEngine.start(await longDemoModelPath(stack.cacheDir));
  // The whole answers the tests compare, generated before any agent competes for the CPU.
  await Promise.all([
    reference.answer({ prompt: "A story on the side", maxTokens: 1500 }),
    reference.answer({ prompt: "Retry me", maxTokens: 40 }),
    ...Array.from({ length: 8 }, (_, i) =>
      reference.answer({ prompt: `after the crash ${i}`, maxTokens: 200 }),
    ),
  ]);
  await Promise.all(IDS.map(startAgent));
  await stack.waitForAgents((list) => list.filter((a) => a.ready).length === 2);
});

afterAll(async () => {
  if (Object.keys(observed).length > 0) console.info("agent-crash observations (ms):", observed);
  signalAll("SIGCONT");
  await stack?.stop();
  await reference?.close();
});

async function restartKilled(): Promise<void> {
  for (const id of IDS) {
    if (agents.get(id)?.child.exitCode === null && agents.get(id)?.child.signalCode === null) continue;
    await startAgent(id);
  }
  await stack.waitForAgents((list) => list.filter((a) => a.ready).length === 2);
}

describe("an agent killed mid-stream", () => {
  it("ends that caller's /generate stream with an error event; the other agent's stream completes", async () => {
    const victim = new SseReader(
      await caller.generate(
        { prompt: "The longest story ever told", max_tokens: 3500, temperature: 0, stream: true },
        { headers: { "X-Request-Id": "kill-mid-generate" }, timeoutMs: 60_000 },
      ),
    );
    await victim.until((e) => e.event === "chunk", 10_000, "the victim's first chunk");
    // The second stream goes to the other agent: the scheduler picks the least loaded one.
    const bystanderRes = await caller.generate(
      { prompt: "A story on the side", max_tokens: 1500, temperature: 0, stream: true },
      { headers: { "X-Request-Id": "kill-mid-bystander" }, timeoutMs: 60_000 },
    );
    expect(bystanderRes.status).toBe(200);
    const bystander = new SseReader(bystanderRes);
    await bystander.until((e) => e.event === "chunk", 10_000, "the bystander's first chunk");

    const doomed = await servedBy("kill-mid-generate");
    const survivor = await servedBy("kill-mid-bystander");
    expect(survivor).not.toBe(doomed);

    const killedAt = Date.now();
    await doomed.kill();
    const events = await victim.rest(15_000);
    observed.midStreamKillToErrorEvent = Date.now() - killedAt;
    expect(victim.ended).toBe("eof"); // an orderly end of the response, not a broken connection
    // What it got before the crash is exactly the start of its answer.
    const cutText = generateStreamText(events);
    expect(cutText).not.toBe("");
    expect(cutText).toBe(
      await reference.prefix({ prompt: "The longest story ever told", maxTokens: 3500 }, cutText.length),
    );
    expect(events.at(-1)?.event).toBe("error");
    expect(events.some((e) => e.event === "done")).toBe(false);
    expect(generateStreamError(events)).toMatchObject({
      code: "UPSTREAM_ERROR",
      requestId: "kill-mid-generate",
    });
    expect(observed.midStreamKillToErrorEvent).toBeLessThan(5_000);

    const rest = await bystander.rest(30_000);
    expect(rest.at(-1)?.event).toBe("done");
    const bystanderAnswer = await reference.answer({ prompt: "A story on the side", maxTokens: 1500 });
    expect(generateStreamText(rest)).toBe(bystanderAnswer.text);
    expect(JSON.parse(rest.at(-1)?.data ?? "{}")).toMatchObject({
      tokens_generated: 1500,
      prompt_tokens: bystanderAnswer.promptTokens,
      finish_reason: "length",
    });

    const since = Date.now();
    const view = await admin.expectNothingInFlight([survivor.id], since);
    expect(view.agents.map((a) => a.id)).toEqual([survivor.id]);
    // The crash is one failure on the dead agent's breaker (closed: BREAKER_MIN_CALLS is out of
    // reach here); the survivor's breaker saw only successes.
    expect(await admin.breaker(doomed.id)).toMatchObject({ state: "closed", failures: 1 });
    expect((await admin.breaker(survivor.id))?.failures ?? 0).toBe(0);
  });

  it("ends a /v1 stream with an OpenAI error data line and [DONE]", async () => {
    await restartKilled();
    const messages = [{ role: "user" as const, content: "Talk for a long time" }];
    const res = await caller.chat(
      {
        messages,
        max_tokens: 3500,
        temperature: 0,
        stream: true,
      },
      { headers: { "X-Request-Id": "kill-mid-chat" }, timeoutMs: 60_000 },
    );
    expect(res.status).toBe(200);
    const stream = new SseReader(res);
    await stream.until(
      (e) => e.data.includes('"content":"') && !e.data.includes('"content":""'),
      10_000,
      "content",
    );
    const doomed = await servedBy("kill-mid-chat");
    const killedAt = Date.now();
    await doomed.kill();
    const events = await stream.rest(15_000);
    observed.midStreamKillToChatError = Date.now() - killedAt;
    expect(stream.ended).toBe("eof");
    const cutText = chatStreamText(events);
    expect(cutText).not.toBe("");
    expect(cutText).toBe(await reference.prefix({ messages, maxTokens: 3500 }, cutText.length));
    expect(chatStreamError(events)).toMatchObject({ code: "UPSTREAM_ERROR", type: "server_error" });
    expect(events.at(-1)?.data).toBe("[DONE]");
    const errorIndex = events.findIndex((e) => e.data.startsWith('{"error"'));
    expect(errorIndex).toBe(events.length - 2);
    expect(
      events.some(
        (e) => e.data.includes('"finish_reason":"stop"') || e.data.includes('"finish_reason":"length"'),
      ),
    ).toBe(false);

    const others = IDS.filter((id) => id !== doomed.id);
    await admin.expectNothingInFlight(others, Date.now());
  });
});

describe("an agent killed before its first chunk", () => {
  it("is invisible to the caller: the request is retried on the other agent and succeeds", async () => {
    await restartKilled();
    const expected = await reference.answer({ prompt: "Retry me", maxTokens: 40 });
    const before = (await admin.agents()).summary.metrics.retries;

    // Freeze both agents: the request is dispatched to one of them, which cannot answer. Killing the
    // frozen one pins the failure before the first chunk, whatever the scheduler picked.
    signalAll("SIGSTOP");
    const pending = caller.generate(
      { prompt: "Retry me", max_tokens: 40, temperature: 0 },
      { headers: { "X-Request-Id": "kill-before-first" }, timeoutMs: 30_000 },
    );
    const holder = await waitUntil(
      async () => (await admin.agents()).agents.find((a) => a.inFlight === 1)?.id,
      5_000,
      "the request dispatched to an agent",
    );
    const killedAt = Date.now();
    await agents.get(holder)?.kill();
    signalAll("SIGCONT");

    const res = await within(pending, 20_000, "the retried request");
    observed.killBeforeFirstChunkToAnswer = Date.now() - killedAt;
    expect(res.status).toBe(200);
    const body = (await res.json()) as { text: string; tokens_generated: number; request_id: string };
    expect(body.text).toBe(expected.text);
    expect(body.tokens_generated).toBe(40);
    expect(body.request_id).toBe("kill-before-first");
    const other = IDS.find((id) => id !== holder) ?? "";
    expect((await servedBy("kill-before-first")).id).toBe(other);
    const view = await admin.expectNothingInFlight([other], Date.now());
    expect(view.summary.metrics.retries).toBe(before + 1);
    expect(view.agents.map((a) => a.id)).toEqual([other]);
  });

  it("a killed agent that restarts serves again", async () => {
    await restartKilled();
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        caller.generate(
          { prompt: `after the crash ${i}`, max_tokens: 200, temperature: 0 },
          { headers: { "X-Request-Id": `after-crash-${i}` }, timeoutMs: 30_000 },
        ),
      ),
    );
    expect(results.map((r) => r.status)).toEqual(Array(8).fill(200));
    const texts = await Promise.all(results.map(async (r) => ((await r.json()) as { text: string }).text));
    const expected = await Promise.all(
      texts.map((_, i) => reference.answer({ prompt: `after the crash ${i}`, maxTokens: 200 })),
    );
    expect(texts).toEqual(expected.map((e) => e.text));
    // The restarted agent took part: 8 requests that overlap (200 tokens each) fill two agents of capacity 4.
    const ranOn = await Promise.all(texts.map(async (_, i) => (await servedBy(`after-crash-${i}`)).id));
    expect([...new Set(ranOn)].sort()).toEqual([...IDS]);
    await admin.expectNothingInFlight([...IDS], Date.now());
  });
});
