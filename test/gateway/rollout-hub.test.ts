// Rollouts through the real AgentHub: a routing table carrying a rollout (pushed with
// applyRoutingTable), requests of different end users served by their arm with X-Orchard-Variant and
// X-Orchard-Experiment (/generate and /v1, streamed or not, errors too), per-arm statistics over the
// rolloutStats RPC, an unavailable arm served by the other one uncounted, feedback ownership, the
// rolling filter, and the statistics surviving a hub restart (last: abortAllDurableObjects once).
import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { ArmStats } from "../../gateway/experiments/stats/arm-stats.ts";
import type { AgentHub } from "../../gateway/hub/agent-hub.ts";
import type { RoutedVersion, RoutingTable } from "../../schema/registry.ts";
import { type Arm, assignArm, type RolloutRoute } from "../../schema/rollouts.ts";
import { bearer, postJson, type TestAgent, trackedAgents, uniqueId, waitFor } from "./helpers.ts";

const agents = trackedAgents();
const hub = () => env.AGENT_HUB.getByName("default");

/** Far above any revision the registry reaches in this file: the pushed table is the one held. */
let revision = 1_000_000_000;

function version(name: string, v: string, status: RoutedVersion["status"]): RoutedVersion {
  return {
    version: v,
    status,
    servedAs: `${name}:${v}`,
    // The test agents announce these themselves: placement sends them nothing.
    source: { kind: "agent-local" },
    sha256: null,
    size: null,
    parameters: {},
    placement: null,
  };
}

/** `name` with 1.0.0 active and 2.0.0 the candidate, split by `rollout`. */
async function pushRollout(name: string, rollout: Partial<RolloutRoute> = {}): Promise<RolloutRoute> {
  const route: RolloutRoute = {
    id: uniqueId("dep"),
    kind: "canary",
    phase: 1,
    arms: { a: { name, version: "1.0.0" }, b: { name, version: "2.0.0" } },
    share: 0.5,
    labels: { a: "baseline", b: "canary" },
    placement: null,
    ...rollout,
  };
  revision += 1;
  const table: RoutingTable = {
    revision,
    builtAt: Date.now(),
    preparing: {},
    models: {
      [name]: {
        name,
        active: "1.0.0",
        previous: null,
        aliases: {},
        warmPrevious: true,
        rollout: route,
        versions: {
          "1.0.0": version(name, "1.0.0", "active"),
          "2.0.0": version(name, "2.0.0", "registered"),
        },
      },
    },
  };
  expect(await hub().applyRoutingTable(table)).toEqual({ revision });
  return route;
}

/** End users the rollout assigns to `arm`. */
function usersOn(route: RolloutRoute, arm: Arm, count: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < count; i++) {
    if (assignArm(route.id, `user-${i}`, route.share) === arm) out.push(`user-${i}`);
  }
  return out;
}

const name = () => uniqueId("ro").toLowerCase();

/** A /generate request as `user` (X-Orchard-User), answered by `agent`; returns it and the frame's model. */
async function generate(agent: TestAgent, model: string, user: string | null, { sub = "test-user" } = {}) {
  const headers: Record<string, string> = user === null ? {} : { "X-Orchard-User": user };
  const pending = postJson(
    "/generate",
    { model, prompt: "p", max_tokens: 4 },
    { headers: { ...headers, ...(await bearer({ sub })) } },
  );
  const frame = await agent.next("generate");
  await agent.chunk(frame.id, "hi");
  await agent.done(frame.id);
  const response = await pending;
  const body = (await response.json()) as { request_id: string };
  return { response, servedAs: frame.model, requestId: body.request_id };
}

const armStats = (report: Awaited<ReturnType<AgentHub["rolloutStats"]>>, phase: string, arm: Arm) =>
  ArmStats.fromJSON(report.phases[phase]?.[arm]);

describe("rollouts in the hub", () => {
  it("serves each end user its arm with the variant headers, and counts per arm", async () => {
    const model = name();
    const agent = await agents.serving([`${model}:1.0.0`, `${model}:2.0.0`], 4);
    const route = await pushRollout(model);
    const onA = usersOn(route, "a", 3);
    const onB = usersOn(route, "b", 2);
    for (const user of [...onA, ...onB, ...onA]) {
      const arm = onB.includes(user) ? "b" : "a";
      const { response, servedAs } = await generate(agent, model, user);
      expect(response.status).toBe(200);
      expect(servedAs).toBe(arm === "b" ? `${model}:2.0.0` : `${model}:1.0.0`);
      expect(response.headers.get("X-Orchard-Variant")).toBe(arm === "b" ? "canary" : "baseline");
      expect(response.headers.get("X-Orchard-Experiment")).toBe(route.id);
    }
    // A pinned version is never split, and carries no variant.
    const pinned = await generate(agent, `${model}:2.0.0`, onA[0] ?? "");
    expect(pinned.servedAs).toBe(`${model}:2.0.0`);
    expect(pinned.response.headers.get("X-Orchard-Variant")).toBeNull();

    // /v1 streamed, assigned by the `user` field over the header.
    const [userB = ""] = onB;
    const chat = postJson(
      "/v1/chat/completions",
      { model, messages: [{ role: "user", content: "hi" }], stream: true, user: userB },
      { headers: { "X-Orchard-User": onA[0] ?? "" } },
    );
    const frame = await agent.next("generate");
    expect(frame.model).toBe(`${model}:2.0.0`);
    await agent.chunk(frame.id, "hi");
    await agent.done(frame.id);
    const streamed = await chat;
    expect(streamed.headers.get("X-Orchard-Variant")).toBe("canary");
    expect(streamed.headers.get("X-Orchard-Experiment")).toBe(route.id);
    await streamed.text();

    // An error of arm b: counted as its error, and the error answer names the arm too.
    const failing = postJson(
      "/generate",
      { model, prompt: "p", max_tokens: 4 },
      { headers: { "X-Orchard-User": userB } },
    );
    const failed = await agent.next("generate");
    agent.send({ type: "error", id: failed.id, code: "INVALID_REQUEST", message: "no", retryable: false });
    const refused = await failing;
    expect(refused.status).toBeGreaterThanOrEqual(400);
    expect(refused.headers.get("X-Orchard-Variant")).toBe("canary");
    expect(refused.headers.get("X-Orchard-Experiment")).toBe(route.id);

    const report = await hub().rolloutStats(route.id);
    expect(report.assigned).toEqual({ a: 6, b: 4 });
    expect(report.unavailable).toBe(0);
    expect(report.phases["1"]?.assigned).toEqual({ a: 6, b: 4 });
    const a = armStats(report, "1", "a");
    const b = armStats(report, "1", "b");
    expect({ requests: a.requests, errors: a.errors }).toEqual({ requests: 6, errors: 0 });
    expect({ requests: b.requests, errors: b.errors }).toEqual({ requests: 4, errors: 1 });
    expect(a.latencySketch.count).toBe(6);
    expect(await hub().rolloutStats("never-seen")).toEqual({
      phases: {},
      unavailable: 0,
      assigned: { a: 0, b: 0 },
    });
  });

  it("rejects an X-Orchard-User longer than 256 characters with 400 naming the header", async () => {
    const response = await postJson(
      "/generate",
      { model: "whatever", prompt: "p", max_tokens: 4 },
      { headers: { "X-Orchard-User": "u".repeat(257) } },
    );
    expect(response.status).toBe(400);
    expect(await response.text()).toContain("X-Orchard-User");
  });

  it("serves the other arm, uncounted, when the assigned arm has no usable agent", async () => {
    const model = name();
    const agent = await agents.serving([`${model}:1.0.0`]);
    const route = await pushRollout(model, { share: 1 });
    const { response, servedAs } = await generate(agent, model, "someone");
    expect(response.status).toBe(200);
    expect(servedAs).toBe(`${model}:1.0.0`);
    expect(response.headers.get("X-Orchard-Variant")).toBe("baseline");
    const report = await hub().rolloutStats(route.id);
    expect(report).toMatchObject({ unavailable: 1, assigned: { a: 0, b: 1 } });
    expect(armStats(report, "1", "a").requests).toBe(0);
    expect(armStats(report, "1", "b").requests).toBe(0);
  });

  it("records feedback only from the caller who made the request, once, into its arm", async () => {
    const model = name();
    const agent = await agents.serving([`${model}:1.0.0`, `${model}:2.0.0`]);
    const route = await pushRollout(model, { share: 1 });
    const { requestId } = await generate(agent, model, "fb-user", { sub: "alice" });
    expect(await hub().recordFeedback(requestId, "mallory", 1)).toEqual({ status: "forbidden" });
    expect(await hub().recordFeedback(requestId, "alice", 1)).toEqual({
      status: "recorded",
      rollout: { id: route.id, arm: "b" },
    });
    expect(await hub().recordFeedback(requestId, "alice", 0)).toEqual({ status: "duplicate" });
    expect(await hub().recordFeedback("no-such-request", "alice", 1)).toEqual({ status: "not_found" });
    expect(armStats(await hub().rolloutStats(route.id), "1", "b").feedbackCount).toBe(1);
    // A request no rollout assigned: recorded, with no arm to count it for.
    const pinned = await generate(agent, `${model}:1.0.0`, null, { sub: "alice" });
    expect(await hub().recordFeedback(pinned.requestId, "alice", 0)).toEqual({
      status: "recorded",
      rollout: null,
    });
  });

  it("rolling: an agent moved to arm b takes no new request for arm a", async () => {
    const model = name();
    const moved = await agents.serving([`${model}:1.0.0`, `${model}:2.0.0`], 1, uniqueId("moved"));
    const staying = await agents.serving([`${model}:1.0.0`], 1, uniqueId("staying"));
    await pushRollout(model, { kind: "rolling", share: 0, agents: { [moved.id]: "b" } });
    // The staying agent is busy: the next arm-a request queues rather than going to the moved one.
    const first = postJson("/generate", { model, prompt: "p", max_tokens: 4 });
    const firstFrame = await staying.next("generate");
    const second = postJson("/generate", { model: `${model}:1.0.0`, prompt: "p", max_tokens: 4 });
    expect(await moved.unread("generate")).toEqual([]);
    await staying.chunk(firstFrame.id, "one");
    await staying.done(firstFrame.id);
    expect((await first).status).toBe(200);
    const secondFrame = await staying.next("generate");
    await staying.chunk(secondFrame.id, "two");
    await staying.done(secondFrame.id);
    expect((await second).status).toBe(200);
    // Arm b still goes to the moved agent.
    const pinned = await generate(moved, `${model}:2.0.0`, null);
    expect(pinned.response.status).toBe(200);
  });

  it("rolling: a request queued for arm a when the last a-agent moves to b is served by b, uncounted", async () => {
    // The e2e race (deployments.test.ts, rolling): every agent busy, a request of an arm-a user
    // queues for name:1.0.0; the next batch moves the last agent still serving it to b. Nobody
    // will ever take name:1.0.0 again, so the queued request must be re-routed, not time out.
    const model = name();
    const converted = await agents.serving([`${model}:2.0.0`], 1, uniqueId("converted"));
    const last = await agents.serving([`${model}:1.0.0`], 1, uniqueId("last"));
    const route = await pushRollout(model, {
      kind: "rolling",
      phase: 0,
      share: 0.5,
      agents: { [converted.id]: "b" },
    });
    const [onA1 = "", onA2 = ""] = usersOn(route, "a", 2);
    const [onB = ""] = usersOn(route, "b", 1);
    const request = (user: string) =>
      postJson("/generate", { model, prompt: "p", max_tokens: 4 }, { headers: { "X-Orchard-User": user } });
    const runningA = request(onA1);
    const frameA = await last.next("generate");
    const runningB = request(onB);
    const frameB = await converted.next("generate");
    const queued = request(onA2);
    await waitFor(async () => (await hub().snapshot()).queue.byModel[`${model}:1.0.0`] === 1);
    // The next batch: the last a-agent drains a (it finishes what it has in flight), share 1.
    await pushRollout(model, {
      id: route.id,
      kind: "rolling",
      phase: 0,
      share: 1,
      agents: { [converted.id]: "b", [last.id]: "b" },
    });
    await converted.chunk(frameB.id, "b");
    await converted.done(frameB.id);
    expect((await runningB).status).toBe(200);
    const rerouted = await converted.next("generate");
    expect(rerouted.model).toBe(`${model}:2.0.0`);
    await converted.chunk(rerouted.id, "b");
    await converted.done(rerouted.id);
    const answer = await queued;
    expect(answer.status).toBe(200);
    expect(answer.headers.get("X-Orchard-Variant")).toBe("canary");
    expect(answer.headers.get("X-Orchard-Experiment")).toBe(route.id);
    // What was in flight on the moved agent finishes there; it is sent nothing more for a.
    await last.chunk(frameA.id, "a");
    await last.done(frameA.id);
    expect((await runningA).status).toBe(200);
    expect(await last.unread("generate")).toEqual([]);
    // Assigned to a, answered by b: in neither arm's statistics.
    const report = await hub().rolloutStats(route.id);
    expect(report.assigned).toEqual({ a: 2, b: 1 });
    expect(armStats(report, "0", "a").requests).toBe(1);
    expect(armStats(report, "0", "b").requests).toBe(1);
  });

  it("statistics and feedback survive a hub restart (flushed on the hub's alarm cycle)", async () => {
    const model = name();
    const agent = await agents.serving([`${model}:1.0.0`, `${model}:2.0.0`], 2);
    const route = await pushRollout(model, { share: 0.5 });
    const [userA = ""] = usersOn(route, "a", 1);
    const [userB = ""] = usersOn(route, "b", 1);
    await generate(agent, model, userA);
    const { requestId } = await generate(agent, model, userB);
    expect(await hub().recordFeedback(requestId, "test-user", 1)).toMatchObject({ status: "recorded" });
    const before = await hub().rolloutStats(route.id);
    // The flush cycle, as the alarm runs it once ROLLOUT_FLUSH_MS has passed.
    await runInDurableObject(hub(), (instance: AgentHub) => instance.runChecks(Date.now() + 5_001));
    await abortAllDurableObjects();
    const after = await hub().rolloutStats(route.id);
    expect(after).toEqual(before);
    expect(armStats(after, "1", "b").feedbackCount).toBe(1);
    expect(await hub().recordFeedback(requestId, "test-user", 1)).toEqual({ status: "duplicate" });
    expect(await hub().recordFeedback(requestId, "other", 1)).toEqual({ status: "forbidden" });
  });
});
