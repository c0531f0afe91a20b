// Faults: 200 concurrent callers while agents come and go (one killed and restarted, one drained,
// one new one joining). Every request must finish with 200 or a clean error (a stable code and the
// right status), none may hang, no agent may be sent more than its capacity, and at the end nothing
// is in flight anywhere. Every answer is greedy and compared with the same engine's answer computed
// in this process: a 200 carries exactly its own text, a broken stream exactly the start of it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { demoModelSpec } from "../../../node-agent/demo-model.ts";
import { ReferenceEngine } from "../../helpers/expected-text.ts";
import { Admin, Caller, generateStreamText, SseReader, sleep, within } from "../../helpers/faults.ts";
import { type AgentProcess, type Stack, startStack } from "../../helpers/stack.ts";

const CALLERS = 200;
const CAPACITY = 4;
const MAX_TOKENS = 128;
const CLEAN_ERRORS: Record<number, string[]> = {
  429: ["QUEUE_FULL"],
  502: ["UPSTREAM_ERROR"],
  503: ["NO_AGENT_AVAILABLE"],
  504: ["GATEWAY_TIMEOUT", "QUEUE_TIMEOUT"],
};

let stack: Stack;
let admin: Admin;
let caller: Caller;
let reference: ReferenceEngine;
const agents = new Map<string, AgentProcess>();
const everyAgent: AgentProcess[] = [];
const observed: Record<string, number> = {};

/** Request ids (churn-<i>) an agent process started generating. */
function startedBy(agent: AgentProcess | undefined): Set<string> {
  const ids = new Set<string>();
  for (const line of agent?.lines ?? []) {
    if (line.includes('"msg":"generation started"')) ids.add((JSON.parse(line) as { id: string }).id);
  }
  return ids;
}

async function startAgent(id: string): Promise<AgentProcess> {
  const agent = await stack.startAgent({ id, args: ["--capacity", String(CAPACITY)] });
  agents.set(id, agent);
  everyAgent.push(agent);
  return agent;
}

const prompt = (i: number) => `churn caller ${i}`;

type Result =
  /** `text` and `tokens`: the answer (non-streamed body, or chunks and `done`). */
  | { kind: "ok"; streamed: boolean; text: string; tokens: number }
  /** `text`: what a stream carried before its error event ("" for an error status). */
  | { kind: "clean-error"; status: number; code: string; streamed: boolean; text: string }
  | { kind: "bad"; detail: string };

async function call(i: number): Promise<Result> {
  const streamed = i % 4 === 0;
  try {
    const res = await caller.generate(
      { prompt: prompt(i), max_tokens: MAX_TOKENS, temperature: 0, ...(streamed ? { stream: true } : {}) },
      { headers: { "X-Request-Id": `churn-${i}` }, timeoutMs: 60_000 },
    );
    if (res.status !== 200) {
      const body = (await res.json()) as { error?: { code?: string } };
      const code = body.error?.code ?? "";
      if (!(CLEAN_ERRORS[res.status] ?? []).includes(code)) {
        return { kind: "bad", detail: `HTTP ${res.status} ${JSON.stringify(body)}` };
      }
      if (res.status === 429 && !res.headers.get("retry-after"))
        return { kind: "bad", detail: "429 without Retry-After" };
      return { kind: "clean-error", status: res.status, code, streamed, text: "" };
    }
    if (!streamed) {
      const body = (await res.json()) as { text?: string; tokens_generated?: number };
      return typeof body.text === "string" && typeof body.tokens_generated === "number"
        ? { kind: "ok", streamed, text: body.text, tokens: body.tokens_generated }
        : { kind: "bad", detail: JSON.stringify(body) };
    }
    const reader = new SseReader(res);
    const events = await reader.rest(60_000);
    const last = events.at(-1);
    const text = generateStreamText(events);
    if (last?.event === "done") {
      const { tokens_generated } = JSON.parse(last.data) as { tokens_generated: number };
      return { kind: "ok", streamed, text, tokens: tokens_generated };
    }
    if (last?.event === "error") {
      const code = (JSON.parse(last.data) as { error: { code: string } }).error.code;
      if (["UPSTREAM_ERROR", "GATEWAY_TIMEOUT"].includes(code))
        return { kind: "clean-error", status: 200, code, streamed, text };
    }
    return { kind: "bad", detail: `stream ended ${reader.ended} with ${JSON.stringify(last)}` };
  } catch (err) {
    return { kind: "bad", detail: `${(err as Error).name}: ${(err as Error).message}` };
  }
}

beforeAll(async () => {
  stack = await startStack({
    vars: { HEALTH_INTERVAL_MS: "300", QUEUE_MAX: "256", QUEUE_TIMEOUT_MS: "30000" },
  });
  admin = await Admin.for(stack);
  caller = new Caller(stack.origin, await stack.token("user", "churn-caller"));
  reference = await ReferenceEngine.start((await demoModelSpec(stack.cacheDir)).path);
  // Every caller's answer, generated before any agent competes for the CPU.
  await Promise.all(
    Array.from({ length: CALLERS }, (_, i) => reference.answer({ prompt: prompt(i), maxTokens: MAX_TOKENS })),
  );
  await Promise.all(["churn-1", "churn-2", "churn-3"].map(startAgent));
  await stack.waitForAgents((list) => list.filter((a) => a.ready).length === 3);
});

afterAll(async () => {
  if (Object.keys(observed).length > 0) console.info("churn observations:", observed);
  await stack?.stop();
  await reference?.close();
});

describe(`${CALLERS} concurrent callers while agents come and go`, () => {
  it("every request ends with 200 or a clean error, none hangs, and nothing is left in flight", async () => {
    const t0 = Date.now();
    const all = Promise.all(Array.from({ length: CALLERS }, (_, i) => call(i)));
    let settledAt: number | undefined;
    void all.finally(() => {
      settledAt = Date.now() - t0;
    });

    // Churn while the load runs: a crash, the crashed one coming back, a newcomer, a graceful drain.
    await sleep(200);
    const crashed = agents.get("churn-1");
    const drainer = agents.get("churn-2");
    await crashed?.kill();
    const killedAt = Date.now() - t0;
    const joining = Promise.all([startAgent("churn-1"), startAgent("churn-4")]);
    await sleep(1_500);
    const drained = drainer?.stop();
    const drainStartedAt = Date.now() - t0;
    const drainExit = await within(drained ?? Promise.resolve(null), 40_000, "churn-2 draining");
    await within(joining, 30_000, "agents joining");
    const joinedAt = Date.now() - t0;

    const results = await within(all, 90_000, `${CALLERS} callers`);
    observed.loadMs = Date.now() - t0;
    observed.killAtMs = killedAt;
    observed.drainStartedAtMs = drainStartedAt;
    observed.joinedAtMs = joinedAt;
    observed.settledAtMs = settledAt ?? -1;

    const bad = results.filter((r) => r.kind === "bad");
    expect({ bad: bad.length, first: bad.slice(0, 3) }).toEqual({ bad: 0, first: [] });
    // Each answer is its own caller's, whole; each broken stream carried the start of its own.
    const wrong: string[] = [];
    for (const [i, r] of results.entries()) {
      const expected = await reference.answer({ prompt: prompt(i), maxTokens: MAX_TOKENS });
      if (r.kind === "ok" && (r.text !== expected.text || r.tokens !== MAX_TOKENS)) {
        wrong.push(`churn-${i}: ${JSON.stringify({ got: r, expected })}`);
      }
      if (r.kind === "clean-error" && r.text !== expected.text.slice(0, r.text.length)) {
        wrong.push(`churn-${i}: ${JSON.stringify({ got: r, expected })}`);
      }
    }
    expect(wrong).toEqual([]);
    const ok = results.filter((r) => r.kind === "ok").length;
    const errors = results.filter(
      (r): r is Extract<Result, { kind: "clean-error" }> => r.kind === "clean-error",
    );
    observed.ok = ok;
    for (const [status, codes] of Object.entries(CLEAN_ERRORS)) {
      for (const code of codes) {
        const n = errors.filter((e) => e.status === Number(status) && e.code === code).length;
        if (n > 0) observed[`${status} ${code}`] = n;
      }
    }
    observed.streamErrorEvents = errors.filter((e) => e.status === 200).length;
    // Only work already streaming on the killed agent may fail (at most its capacity); everything
    // the drained agent had started finished normally.
    expect(ok).toBeGreaterThanOrEqual(CALLERS - CAPACITY);
    const failedIds = results.flatMap((r, i) => (r.kind === "ok" ? [] : [`churn-${i}`]));
    const crashedIds = startedBy(crashed);
    expect(failedIds.filter((id) => !crashedIds.has(id))).toEqual([]);
    const drainedIds = [...startedBy(drainer)];
    expect(drainedIds.length).toBeGreaterThan(0);
    expect(drainedIds.filter((id) => failedIds.includes(id))).toEqual([]);
    // The drained agent's own log: it finished every generation it started, none was aborted.
    const finishedByDrainer = new Set(
      (drainer?.lines ?? [])
        .filter((l) => l.includes('"msg":"generation done"'))
        .map((l) => (JSON.parse(l) as { id: string }).id),
    );
    expect(drainedIds.filter((id) => !finishedByDrainer.has(id))).toEqual([]);
    expect(drainExit).toBe(0);
    // A crash is one breaker failure; a graceful drain is none. No breaker opened.
    const breakers = await admin.breakers();
    expect(breakers.filter((b) => b.state !== "closed")).toEqual([]);
    expect(breakers.find((b) => b.agentId === "churn-2" && b.model === null)?.failures ?? 0).toBe(0);
    observed.crashedAgentBreakerFailures =
      breakers.find((b) => b.agentId === "churn-1" && b.model === null)?.failures ?? 0;

    // The hub never sent any agent more than its capacity.
    for (const agent of everyAgent) {
      expect(agent.lines.filter((l) => l.includes("refused a generate beyond capacity"))).toEqual([]);
      const peaks = agent.lines
        .filter((l) => l.includes('"msg":"generation started"'))
        .map((l) => (JSON.parse(l) as { inFlight: number }).inFlight);
      expect(Math.max(0, ...peaks)).toBeLessThanOrEqual(CAPACITY);
    }

    // The agents that joined during the load took part in it.
    expect(startedBy(agents.get("churn-4")).size).toBeGreaterThan(0);
    expect(startedBy(agents.get("churn-1")).size).toBeGreaterThan(0);

    const live = ["churn-1", "churn-3", "churn-4"];
    const view = await admin.expectNothingInFlight(live, Date.now(), 15_000);
    expect(view.agents.map((a) => a.id).sort()).toEqual(live);
    expect(view.summary.queue.total).toBe(0);
  });
});
