// Deployments and A/B tests through the Worker's routes, against the real RolloutController, D1 and
// AgentHub: what each route answers, its errors, one rollout per model, commands, and an immediate
// deployment and an A/B test carried through by the controller's alarm with scripted agents.
import { describe, expect, it } from "vitest";
import { trackedAgents, waitFor } from "./helpers.ts";
import { type Answer, call, expectError, modelName, register, registerInstant } from "./registry-helpers.ts";

const agents = trackedAgents();

/**
 * A model with versions 1.0.0 (active) and 2.0.0, announced by one scripted agent: the hub
 * registers them as the agent's own (agent-local) versions, which placement never unloads.
 */
async function servedModel(prefix = "dep", versions = ["1.0.0", "2.0.0"]) {
  const name = modelName(prefix);
  const agent = await agents.serving(
    versions.map((v) => `${name}:${v}`),
    4,
  );
  await waitFor(
    async () => {
      const answer = await call("GET", `/models/${name}`);
      return answer.status === 200 && answer.body.versions?.length === versions.length;
    },
    5000,
    "the hub to register the agent's versions",
  );
  const activated = await call("POST", `/models/${name}:1.0.0/activate`, { timeout_ms: 2000 });
  expect(activated.status, JSON.stringify(activated.body)).toBe(200);
  return { name, agent };
}

async function waitForStatus(id: string, wanted: (status: string) => boolean): Promise<Answer> {
  return waitFor(
    async () => {
      const answer = await call("GET", `/deployments/${id}`);
      return wanted(answer.body.status) ? answer : null;
    },
    10_000,
    `deployment ${id} to reach the wanted status`,
  );
}

describe("POST /models/{model_id}/deploy", () => {
  it("refuses bodies that are not a strategy with its options (400 naming the field)", async () => {
    const name = modelName("bad");
    await register(name, "1.0.0");
    await expectError(
      call("POST", `/models/${name}:1.0.0/deploy`, { strategy: "yolo" }),
      400,
      "INVALID_REQUEST",
    );
    await expectError(
      call("POST", `/models/${name}:1.0.0/deploy`, { strategy: "canary", steps: [50, 25, 100] }),
      400,
      "INVALID_REQUEST",
    );
    await expectError(
      call("POST", `/models/${name}:1.0.0/deploy`, { strategy: "canary", steps: [5, 50] }),
      400,
      "INVALID_REQUEST",
    );
    await expectError(
      call("POST", `/models/${name}:1.0.0/deploy`, { strategy: "rolling", max_unavailable: 0, max_surge: 0 }),
      400,
      "INVALID_REQUEST",
    );
    await expectError(
      call("POST", `/models/${name}:1.0.0/deploy`, { strategy: "immediate", surprise: 1 }),
      400,
      "INVALID_REQUEST",
    );
    const criteria = await call("POST", `/models/${name}:1.0.0/deploy`, {
      strategy: "blue-green",
      smoke_prompts: [],
    });
    expect(criteria.status).toBe(400);
    expect(criteria.body.error.message).toContain("smoke_prompts");
  });

  it("needs an admin, a known version, and something to deploy", async () => {
    const name = modelName("who");
    await registerInstant(name, "1.0.0");
    await expectError(
      call("POST", `/models/${name}:1.0.0/deploy`, { strategy: "immediate" }, { role: "user" }),
      403,
      "FORBIDDEN",
    );
    await expectError(
      call("POST", `/models/${name}:9.9.9/deploy`, { strategy: "immediate" }),
      404,
      "VERSION_NOT_FOUND",
    );
    await expectError(
      call("POST", `/models/nope-${name}:1.0.0/deploy`, { strategy: "immediate" }),
      404,
      "MODEL_NOT_FOUND",
    );
    // A canary compares against the active version; there is none yet.
    await expectError(
      call("POST", `/models/${name}:1.0.0/deploy`, { strategy: "canary" }),
      409,
      "VERSION_NOT_ACTIVE",
    );
    await expectError(
      call("POST", `/models/${name}:1.0.0/deploy`, { strategy: "rolling" }),
      409,
      "VERSION_NOT_ACTIVE",
    );
    await call("POST", `/models/${name}:1.0.0/activate`, { timeout_ms: 2000 });
    await expectError(
      call("POST", `/models/${name}:1.0.0/deploy`, { strategy: "immediate" }),
      409,
      "NOTHING_TO_DEPLOY",
    );
    await register(name, "0.5.0");
    await call("POST", `/models/${name}:0.5.0/archive`);
    await expectError(
      call("POST", `/models/${name}:0.5.0/deploy`, { strategy: "immediate" }),
      409,
      "VERSION_ARCHIVED",
    );
  });

  it("carries an immediate deployment through: 202, the switch once loaded, succeeded, with its events", async () => {
    const { name } = await servedModel("imm");
    const started = await call("POST", `/models/${name}:2.0.0/deploy`, { strategy: "immediate" });
    expect(started.status, JSON.stringify(started.body)).toBe(202);
    expect(started.headers.get("Location")).toBe(`/deployments/${started.body.deployment_id}`);
    expect(started.body).toMatchObject({
      model: name,
      strategy: "immediate",
      baseline: `${name}:1.0.0`,
      candidate: `${name}:2.0.0`,
      running: true,
      created_by: "ops-alice",
    });
    const done = await waitForStatus(started.body.deployment_id, (s) => s === "succeeded");
    expect(done.body.running).toBe(false);
    expect(done.body.events[0]).toMatchObject({ kind: "created", actor: "ops-alice" });
    const model = await call("GET", `/models/${name}`);
    expect(model.body).toMatchObject({ active_version: "2.0.0", previous_version: "1.0.0" });
    const listed = await call("GET", `/deployments?model=${name}`);
    expect(listed.body.deployments.map((d: { deployment_id: string }) => d.deployment_id)).toEqual([
      started.body.deployment_id,
    ]);
    expect((await call("GET", `/deployments?model=${name}&status=running`)).body.deployments).toEqual([]);
  });

  it("runs one rollout per model: a second deployment or an A/B test is 409 until the first ends", async () => {
    const { name } = await servedModel("one", ["1.0.0", "2.0.0", "3.0.0"]);
    // Held: a canary waits for requests that never come.
    const canary = await call("POST", `/models/${name}:2.0.0/deploy`, {
      strategy: "canary",
      min_step_ms: 60_000,
    });
    expect(canary.status, JSON.stringify(canary.body)).toBe(202);
    const again = await expectError(
      call("POST", `/models/${name}:3.0.0/deploy`, { strategy: "immediate" }),
      409,
      "ROLLOUT_IN_PROGRESS",
    );
    expect(again.body.error.message).toContain(canary.body.deployment_id);
    await expectError(
      call("POST", "/ab-tests/start", {
        test_id: `t-${name}`,
        model_a: `${name}:1.0.0`,
        model_b: `${name}:3.0.0`,
        traffic_split: 0.5,
        duration_hours: 1,
        success_metrics: ["response_time"],
      }),
      409,
      "ROLLOUT_IN_PROGRESS",
    );
    const id = canary.body.deployment_id;
    const paused = await call("POST", `/deployments/${id}/pause`);
    expect(paused.status, JSON.stringify(paused.body)).toBe(200);
    expect(paused.body.status).toBe("paused");
    await expectError(call("POST", `/deployments/${id}/pause`), 409, "COMMAND_NOT_ALLOWED");
    const resumed = await call("POST", `/deployments/${id}/resume`);
    expect(resumed.body.status).not.toBe("paused");
    await expectError(call("POST", `/deployments/${id}/resume`), 409, "DEPLOYMENT_NOT_PAUSED");
    await expectError(call("POST", `/deployments/${id}/explode`), 404, "NOT_FOUND");
    await expectError(
      call("POST", `/deployments/${id}/abort`, undefined, { role: "user" }),
      403,
      "FORBIDDEN",
    );
    const aborted = await call("POST", `/deployments/${id}/abort`);
    expect(aborted.body).toMatchObject({ status: "aborted", running: false });
    expect(aborted.body.events.map((e: { kind: string; actor: string }) => e.actor)).toContain("ops-alice");
    await expectError(call("POST", `/deployments/${id}/abort`), 409, "DEPLOYMENT_NOT_RUNNING");
    // The model is free again, and still served by its active version.
    expect((await call("GET", `/models/${name}`)).body.active_version).toBe("1.0.0");
    const next = await call("POST", `/models/${name}:3.0.0/deploy`, { strategy: "immediate" });
    expect(next.status, JSON.stringify(next.body)).toBe(202);
  });

  it("answers 404 for deployments it does not know", async () => {
    await expectError(call("GET", "/deployments/dep-nope"), 404, "DEPLOYMENT_NOT_FOUND");
    await expectError(call("POST", "/deployments/dep-nope/abort"), 404, "DEPLOYMENT_NOT_FOUND");
    await expectError(call("GET", "/deployments?limit=0"), 400, "INVALID_REQUEST");
    await expectError(call("GET", "/deployments?bogus=1"), 400, "INVALID_REQUEST");
  });
});

describe("A/B tests", () => {
  const start = (name: string, fields: Record<string, unknown> = {}) =>
    call("POST", "/ab-tests/start", {
      test_id: `ab-${name}`,
      model_a: `${name}:1.0.0`,
      model_b: `${name}:2.0.0`,
      traffic_split: 0.2,
      duration_hours: 24,
      success_metrics: ["accuracy", "response_time"],
      ...fields,
    });

  it("starts with the specification's body, lists, reports, and stops with final results", async () => {
    const { name } = await servedModel("ab");
    const started = await start(name);
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    expect(started.body).toMatchObject({
      test_id: `ab-${name}`,
      status: "running",
      model_a: `${name}:1.0.0`,
      model_b: `${name}:2.0.0`,
      traffic_split: 0.2,
      success_metrics: ["accuracy", "response_time"],
    });
    expect(started.body.results.verdict).toBe("not_enough_data");
    const listed = await call("GET", "/ab-tests", undefined, { role: "user" });
    expect(listed.body.ab_tests.map((t: { test_id: string }) => t.test_id)).toContain(`ab-${name}`);
    await expectError(start(name), 409, "ROLLOUT_IN_PROGRESS");
    const stopped = await call("POST", `/ab-tests/ab-${name}/stop`);
    expect(stopped.status, JSON.stringify(stopped.body)).toBe(200);
    expect(stopped.body).toMatchObject({ status: "stopped", running: false });
    expect(stopped.body.results.verdict).toBe("not_enough_data");
    await expectError(call("POST", `/ab-tests/ab-${name}/stop`), 409, "AB_TEST_NOT_RUNNING");
    // A test id names one test for good.
    await expectError(start(name), 409, "AB_TEST_EXISTS");
    expect(
      (await call("GET", "/ab-tests")).body.ab_tests.map((t: { test_id: string }) => t.test_id),
    ).not.toContain(`ab-${name}`);
    expect(
      (await call("GET", "/ab-tests?status=all")).body.ab_tests.map((t: { test_id: string }) => t.test_id),
    ).toContain(`ab-${name}`);
    const kept = await call("GET", `/ab-tests/ab-${name}`);
    expect(kept.body.results).toEqual(stopped.body.results);
  });

  it("refuses what cannot be tested, each with its code", async () => {
    const { name } = await servedModel("abx");
    await expectError(start(name, { traffic_split: 1 }), 400, "INVALID_REQUEST");
    await expectError(start(name, { traffic_split: 0 }), 400, "INVALID_REQUEST");
    await expectError(start(name, { duration_hours: 0 }), 400, "INVALID_REQUEST");
    await expectError(start(name, { success_metrics: ["vibes"] }), 400, "INVALID_REQUEST");
    await expectError(start(name, { test_id: "no spaces" }), 400, "INVALID_REQUEST");
    await expectError(start(name, { model_b: `${name}:1.0.0` }), 400, "INVALID_REQUEST");
    await expectError(start(name, { model_b: `${name}:7.0.0` }), 404, "VERSION_NOT_FOUND");
    await expectError(
      start(name, { model_a: `${name}:2.0.0`, model_b: `${name}:1.0.0` }),
      409,
      "VERSION_NOT_ACTIVE",
    );
    await expectError(call("GET", "/ab-tests/nope-nope"), 404, "AB_TEST_NOT_FOUND");
    await expectError(call("POST", "/ab-tests/nope-nope/stop"), 404, "AB_TEST_NOT_FOUND");
    await expectError(call("GET", "/ab-tests?status=sometimes"), 400, "INVALID_REQUEST");
  });
});

describe("POST /feedback", () => {
  it("validates the body and answers 404 for a request it does not know", async () => {
    await expectError(
      call("POST", "/feedback", { request_id: "r-1" }, { role: "user" }),
      400,
      "INVALID_REQUEST",
    );
    await expectError(
      call("POST", "/feedback", { request_id: "r-1", score: 2 }, { role: "user" }),
      400,
      "INVALID_REQUEST",
    );
    await expectError(
      call("POST", "/feedback", { request_id: "r-1", score: 1, thumbs: "up" }, { role: "user" }),
      400,
      "INVALID_REQUEST",
    );
    await expectError(
      call("POST", "/feedback", { request_id: "never-made", thumbs: "up" }, { role: "user" }),
      404,
      "REQUEST_NOT_FOUND",
    );
  });
});
