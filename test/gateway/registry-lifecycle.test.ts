// Activation, rollback, deactivation, deprecation and archiving in workerd: the codes, the events,
// concurrent activations serialized with the last one recorded as the final state, and an
// activation that no agent can make ready answering 503 with nothing switched.
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import worker from "../../gateway/index.ts";
import type { PlacementEntry } from "../../gateway/registry/publish.ts";
import type { RoutingTable } from "../../schema/registry.ts";
import { BASE, bearer } from "./helpers.ts";
import { call, expectError, modelName, register, registerInstant } from "./registry-helpers.ts";

const kindsOf = (events: { kind: string }[]) => events.map((e) => e.kind);

describe("POST /models/:model_id/activate", () => {
  it("switches the active version, keeps the one before as previous, and is a no-op when active already", async () => {
    const name = modelName();
    await registerInstant(name, "1.0.0");
    await registerInstant(name, "1.1.0");
    const first = await call("POST", `/models/${name}:1.0.0/activate`);
    expect(first.status).toBe(200);
    expect(first.body).toEqual({ model_id: `${name}:1.0.0`, previous: null, loaded_on: [], noop: false });
    const second = await call("POST", `/models/${name}:1.1.0/activate`, { timeout_ms: 1000 });
    expect(second.body).toMatchObject({ model_id: `${name}:1.1.0`, previous: "1.0.0", noop: false });
    const again = await call("POST", `/models/${name}:1.1.0/activate`);
    expect(again.body).toMatchObject({ previous: "1.0.0", noop: true });
    const model = await call("GET", `/models/${name}`);
    expect(model.body).toMatchObject({ active_version: "1.1.0", previous_version: "1.0.0" });
    const statuses = Object.fromEntries(
      model.body.versions.map((v: { version: string; status: string }) => [v.version, v.status]),
    );
    expect(statuses).toEqual({ "1.1.0": "active", "1.0.0": "registered" });
    const v = await call("GET", `/models/${name}/1.1.0`);
    expect(kindsOf(v.body.events)).toEqual(["registered", "activation_started", "activated"]);
    expect(v.body.events[2].detail).toMatchObject({ from: "1.0.0", to: "1.1.0", loadedOn: [] });
  });

  it("answers 503 ACTIVATION_NOT_READY when too few agents load it in time, and switches nothing", async () => {
    const name = modelName();
    await registerInstant(name, "1.0.0");
    await register(name, "2.0.0");
    await call("POST", `/models/${name}:1.0.0/activate`);
    const started = Date.now();
    const answer = await expectError(
      call("POST", `/models/${name}:2.0.0/activate`, { timeout_ms: 400, placement: { replicas: 2 } }),
      503,
      "ACTIVATION_NOT_READY",
    );
    expect(Date.now() - started).toBeGreaterThanOrEqual(350);
    expect(answer.body.error.message).toContain("0 of 2 agents");
    const model = await call("GET", `/models/${name}`);
    expect(model.body).toMatchObject({ active_version: "1.0.0", previous_version: null });
    const v = await call("GET", `/models/${name}/2.0.0`);
    expect(v.body.status).toBe("registered");
    expect(kindsOf(v.body.events)).toEqual(["registered", "activation_started", "activation_failed"]);
    expect(v.body.events[2].detail).toMatchObject({ outcome: "not_ready", required: 2, loaded: [] });
    expect(v.body.placement).toEqual({ replicas: 2 });
  });

  it("refuses archived versions (409 VERSION_ARCHIVED) and bad bodies", async () => {
    const name = modelName();
    await registerInstant(name, "1.0.0");
    await call("POST", `/models/${name}:1.0.0/archive`);
    await expectError(call("POST", `/models/${name}:1.0.0/activate`), 409, "VERSION_ARCHIVED");
    await expectError(
      call("POST", `/models/${name}:1.0.0/activate`, { timeout_ms: 600_001 }),
      400,
      "INVALID_REQUEST",
    );
    await expectError(
      call("POST", `/models/${name}:1.0.0/activate`, { placement: { replicas: -1 } }),
      400,
      "INVALID_REQUEST",
    );
  });

  it("refuses a placement in a pool this gateway does not configure, before preparing anything", async () => {
    const name = modelName();
    await register(name, "1.0.0");
    await expectError(
      call("POST", `/models/${name}:1.0.0/activate`, { placement: { replicas: 1, pools: ["nowhere"] } }),
      400,
      "INVALID_REQUEST",
    );
    const v = await call("GET", `/models/${name}/1.0.0`);
    expect(kindsOf(v.body.events)).toEqual(["registered"]);
  });

  it("serializes 10 concurrent activations: every one recorded, the last recorded is the final state", async () => {
    const name = modelName();
    const versions = Array.from({ length: 10 }, (_, i) => `1.0.${i}`);
    for (const v of versions) await registerInstant(name, v);
    const answers = await Promise.all(versions.map((v) => call("POST", `/models/${name}:${v}/activate`)));
    expect(answers.map((a) => a.status)).toEqual(versions.map(() => 200));
    const { body } = await call("GET", `/models/${name}/lineage`);
    const activated = body.events.filter((e: { kind: string }) => e.kind === "activated");
    // Ten different versions: every activation switched, and every switch is recorded.
    expect(answers.filter((a) => a.body.noop)).toHaveLength(0);
    expect(activated).toHaveLength(10);
    expect(new Set(activated.map((e: { detail: { to: string } }) => e.detail.to))).toEqual(new Set(versions));
    const last = activated[activated.length - 1];
    const model = await call("GET", `/models/${name}`);
    expect(model.body.active_version).toBe(last.detail.to);
    // Each switch records the version it replaced: the chain of from -> to is unbroken.
    for (let i = 1; i < activated.length; i++)
      expect(activated[i].detail.from).toBe(activated[i - 1].detail.to);
    const previous = activated.length > 1 ? activated[activated.length - 2].detail.to : null;
    expect(model.body.previous_version).toBe(previous);
    const active = model.body.versions.filter((v: { status: string }) => v.status === "active");
    expect(active.map((v: { version: string }) => v.version)).toEqual([last.detail.to]);
  });
});

describe("POST /models/:name/rollback and /deactivate", () => {
  it("returns to the previous version at once; 409 NO_PREVIOUS_VERSION without one", async () => {
    const name = modelName();
    await registerInstant(name, "1.0.0");
    await registerInstant(name, "2.0.0");
    await expectError(call("POST", `/models/${name}/rollback`), 409, "NO_PREVIOUS_VERSION");
    await call("POST", `/models/${name}:1.0.0/activate`);
    await expectError(call("POST", `/models/${name}/rollback`), 409, "NO_PREVIOUS_VERSION");
    await call("POST", `/models/${name}:2.0.0/activate`);
    const back = await call("POST", `/models/${name}/rollback`);
    expect(back.body).toEqual({ name, active: "1.0.0", previous: "2.0.0" });
    const forth = await call("POST", `/models/${name}/rollback`);
    expect(forth.body).toEqual({ name, active: "2.0.0", previous: "1.0.0" });
    const { body } = await call("GET", `/models/${name}/lineage`);
    const rolled = body.events.filter((e: { kind: string }) => e.kind === "rolled_back");
    expect(rolled.map((e: { detail: unknown }) => e.detail)).toEqual([
      { from: "2.0.0", to: "1.0.0" },
      { from: "1.0.0", to: "2.0.0" },
    ]);
    await expectError(call("POST", "/models/nobody/rollback"), 404, "MODEL_NOT_FOUND");
  });

  it("refuses to roll back to an archived version (409 VERSION_ARCHIVED)", async () => {
    const name = modelName();
    await registerInstant(name, "1.0.0");
    await registerInstant(name, "2.0.0");
    await call("POST", `/models/${name}:1.0.0/activate`);
    await call("POST", `/models/${name}:2.0.0/activate`);
    expect((await call("POST", `/models/${name}:1.0.0/archive`)).status).toBe(200);
    await expectError(call("POST", `/models/${name}/rollback`), 409, "VERSION_ARCHIVED");
  });

  it("deactivates: nothing serves the name, the active one becomes previous; twice is a no-op", async () => {
    const name = modelName();
    await registerInstant(name, "1.0.0");
    await call("POST", `/models/${name}:1.0.0/activate`);
    expect((await call("POST", `/models/${name}/deactivate`)).body).toEqual({
      name,
      active: null,
      previous: "1.0.0",
      noop: false,
    });
    expect((await call("POST", `/models/${name}/deactivate`)).body.noop).toBe(true);
    const model = await call("GET", `/models/${name}`);
    expect(model.body).toMatchObject({
      active_version: null,
      previous_version: "1.0.0",
      status: "registered",
    });
    expect((await call("POST", `/models/${name}/rollback`)).body).toEqual({
      name,
      active: "1.0.0",
      previous: null,
    });
  });
});

describe("POST /models/:model_id/deprecate and /archive", () => {
  it("deprecates and archives; the active version is neither (409 VERSION_ACTIVE)", async () => {
    const name = modelName();
    await registerInstant(name, "1.0.0");
    await registerInstant(name, "2.0.0");
    await call("POST", `/models/${name}:2.0.0/activate`);
    await expectError(call("POST", `/models/${name}:2.0.0/archive`), 409, "VERSION_ACTIVE");
    await expectError(call("POST", `/models/${name}:2.0.0/deprecate`), 409, "VERSION_ACTIVE");
    expect((await call("POST", `/models/${name}:1.0.0/deprecate`)).body).toEqual({
      model_id: `${name}:1.0.0`,
      status: "deprecated",
      noop: false,
    });
    expect((await call("POST", `/models/${name}:1.0.0/deprecate`)).body.noop).toBe(true);
    expect((await call("POST", `/models/${name}:1.0.0/archive`)).body.status).toBe("archived");
    await expectError(call("POST", `/models/${name}:1.0.0/deprecate`), 409, "VERSION_ARCHIVED");
    await expectError(
      call("PUT", `/models/${name}/aliases/old`, { version: "1.0.0" }),
      409,
      "VERSION_ARCHIVED",
    );
    const v = await call("GET", `/models/${name}/1.0.0`);
    expect(kindsOf(v.body.events)).toEqual(["registered", "deprecated", "archived"]);
    await expectError(call("POST", `/models/${name}:9.0.0/archive`), 404, "VERSION_NOT_FOUND");
  });
});

/** Hubs that answer the registry's two RPCs from a script, in place of AGENT_HUB (the real ones land with the hub's issue). */
function scriptedHubs(placement: (pool: string, poll: number) => Record<string, PlacementEntry>) {
  const pushes: { pool: string; table: RoutingTable }[] = [];
  const polls = new Map<string, number>();
  const namespace = {
    getByName: (pool: string) => ({
      applyRoutingTable: async (table: RoutingTable) => {
        pushes.push({ pool, table });
        return { revision: table.revision };
      },
      placementStatus: async () => {
        const poll = polls.get(pool) ?? 0;
        polls.set(pool, poll + 1);
        return placement(pool, poll);
      },
    }),
  };
  return { env: { ...env, AGENT_HUB: namespace } as unknown as Env, pushes };
}

async function activateWith(hubEnv: Env, modelId: string, body: unknown) {
  const request = new Request(`${BASE}/models/${modelId}/activate`, {
    method: "POST",
    headers: { ...(await bearer({ role: "admin", sub: "ops-alice" })), "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const ctx = createExecutionContext();
  const response = await worker.fetch(request, hubEnv, ctx);
  await waitOnExecutionContext(ctx);
  return {
    status: response.status,
    body: (await response.json()) as Record<string, unknown> & { error?: { code: string; message: string } },
  };
}

describe("activation against hubs that report placement", () => {
  it("waits until enough agents over the pools hold the version, then switches and pushes the table", async () => {
    const name = modelName();
    await register(name, "1.0.0");
    const servedAs = `${name}:1.0.0`;
    const hubs = scriptedHubs((pool, poll) => {
      if (pool === "default") return { [servedAs]: { loaded: ["mini-1"], loading: [], failed: [] } };
      return {
        [servedAs]: { loaded: poll >= 2 ? ["mini-2"] : [], loading: poll >= 2 ? [] : ["mini-2"], failed: [] },
      };
    });
    const answer = await activateWith(hubs.env, servedAs, { placement: { replicas: 2 }, timeout_ms: 5000 });
    expect(answer.status).toBe(200);
    expect(answer.body).toEqual({
      model_id: servedAs,
      previous: null,
      loaded_on: ["mini-1", "mini-2"],
      noop: false,
    });
    // Pushed to both pools while preparing, then again with the version active.
    const pools = new Set(hubs.pushes.map((p) => p.pool));
    expect(pools).toEqual(new Set(["default", "lab-a"]));
    expect(hubs.pushes[0]?.table.preparing[servedAs]).toEqual({ replicas: 2 });
    const last = hubs.pushes[hubs.pushes.length - 1]?.table;
    expect(last?.models[name]?.active).toBe("1.0.0");
    expect(last?.preparing[servedAs]).toBeUndefined();
    const v = await call("GET", `/models/${name}/1.0.0`);
    expect(v.body.events.at(-1)).toMatchObject({
      kind: "activated",
      detail: { loadedOn: ["mini-1", "mini-2"] },
    });
  });

  it("answers 503 naming what loaded and what failed when the placement is not met in time", async () => {
    const name = modelName();
    await register(name, "1.0.0");
    const servedAs = `${name}:1.0.0`;
    const hubs = scriptedHubs((pool) =>
      pool === "lab-a"
        ? {
            [servedAs]: {
              loaded: [],
              loading: [],
              failed: [{ agentId: "mini-9", code: "OUT_OF_MEMORY", message: "no room", at: Date.now() }],
            },
          }
        : {},
    );
    const answer = await activateWith(hubs.env, servedAs, {
      placement: { replicas: 1, pools: ["lab-a"] },
      timeout_ms: 300,
    });
    expect(answer.status).toBe(503);
    expect(answer.body.error?.code).toBe("ACTIVATION_NOT_READY");
    // The failure's code, not the agent: error bodies name no machine (the event below does).
    expect(answer.body.error?.message).toContain("failed: 1 (OUT_OF_MEMORY)");
    expect(answer.body.error?.message).not.toContain("mini-9");
    const model = await call("GET", `/models/${name}`);
    expect(model.body.active_version).toBeNull();
    const v = await call("GET", `/models/${name}/1.0.0`);
    expect(v.body.events.at(-1)).toMatchObject({
      kind: "activation_failed",
      detail: { outcome: "not_ready", failed: [expect.objectContaining({ agentId: "mini-9" })] },
    });
  });
});
