// The hub's side of the registry with real Durable Objects, WebSockets and D1: agent-local models
// registered on sight, requests by name / name:version / name@alias routed by the pushed table,
// deprecated and archived versions, placement sending loads to agents that can fetch artifacts
// (answered with loaded or load_failed), and live per-version metrics rolled into the history.

import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { poolsForModel, readConfig } from "../../gateway/config.ts";
import type { AgentHub } from "../../gateway/hub/agent-hub.ts";
import { compareModelVersions, resolveModel } from "../../gateway/hub/model-resolution.ts";
import { HubRoutingTable, routeModel } from "../../gateway/hub/routing-table.ts";
import { servedAsOf } from "../../gateway/registry/hub-store.ts";
import { formatModelId, parseModelId } from "../../schema/model-id.ts";
import {
  AGENT_LOCAL_VERSION,
  EMPTY_ROUTING_TABLE,
  type RoutedVersion,
  type RoutingTable,
} from "../../schema/registry.ts";
import { postJson, TestAgent, trackedAgents, uniqueId, waitFor } from "./helpers.ts";
import { call, modelName, register } from "./registry-helpers.ts";

const agents = trackedAgents();

async function generate(model: string, agent: TestAgent, text = "hi"): Promise<Response> {
  const pending = postJson("/generate", { model, prompt: "p", max_tokens: 4 });
  const frame = await agent.next("generate");
  await agent.chunk(frame.id, text);
  await agent.done(frame.id);
  const response = await pending;
  (response as Response & { servedAs?: string }).servedAs = frame.model;
  return response;
}

/** Waits until the hub has registered `name`'s agent-local versions (it does so off the request path). */
async function registered(name: string, versions: number): Promise<void> {
  await waitFor(
    async () => {
      const answer = await call("GET", `/models/${name}`, undefined, { role: "user" });
      return answer.status === 200 && answer.body.versions.length >= versions;
    },
    5000,
    `${name}'s agent-local versions to be registered`,
  );
}

function version(v: string, fields: Partial<RoutedVersion> = {}): RoutedVersion {
  return {
    version: v,
    status: "registered",
    servedAs: `m:${v}`,
    source: { kind: "path", path: "/x" },
    sha256: null,
    size: null,
    parameters: {},
    placement: null,
    ...fields,
  };
}

describe("routeModel (pure)", () => {
  const table: RoutingTable = {
    revision: 3,
    builtAt: 1,
    preparing: {},
    models: {
      m: {
        name: "m",
        active: "2.0.0",
        previous: "1.0.0",
        aliases: { stable: "1.0.0", old: "0.9.0" },
        warmPrevious: true,
        rollout: null,
        versions: {
          "0.9.0": version("0.9.0", { status: "archived" }),
          "1.0.0": version("1.0.0", { status: "deprecated" }),
          "2.0.0": version("2.0.0", { status: "active" }),
        },
      },
      local: {
        name: "local",
        active: null,
        previous: null,
        aliases: {},
        warmPrevious: true,
        rollout: null,
        versions: {
          [AGENT_LOCAL_VERSION]: version(AGENT_LOCAL_VERSION, {
            servedAs: "local",
            source: { kind: "agent-local" },
          }),
        },
      },
    },
  };

  it("routes a name, a version, an alias; refuses archived versions and unknown aliases", () => {
    expect(routeModel(table, "m", "u")).toEqual({
      kind: "routed",
      servedAs: "m:2.0.0",
      deprecated: false,
      rollout: null,
    });
    expect(routeModel(table, "m:1.0.0", "u")).toEqual({
      kind: "routed",
      servedAs: "m:1.0.0",
      deprecated: true,
      rollout: null,
    });
    expect(routeModel(table, "m@stable", "u")).toMatchObject({ kind: "routed", servedAs: "m:1.0.0" });
    expect(routeModel(table, "m:0.9.0", "u")).toMatchObject({ kind: "refused", code: "MODEL_ARCHIVED" });
    expect(routeModel(table, "m@old", "u")).toMatchObject({ kind: "refused", code: "MODEL_ARCHIVED" });
    expect(routeModel(table, "m@nope", "u")).toMatchObject({ kind: "refused", code: "MODEL_NOT_FOUND" });
    // Unknown to the registry: what agents announce decides, as before the registry.
    expect(routeModel(table, "m:3.0.0", "u")).toEqual({ kind: "unregistered" });
    expect(routeModel(table, "other", "u")).toEqual({ kind: "unregistered" });
    expect(routeModel(table, "local", "u")).toEqual({ kind: "unregistered" });
  });

  it("names a bare agent-local model by the name it is served under, and other versions name:version", () => {
    // Responses name the served id, which the table builds this way (hub-store.ts).
    expect(servedAsOf("local", AGENT_LOCAL_VERSION, { kind: "agent-local" })).toBe("local");
    expect(servedAsOf("m", "1.0.0", { kind: "path", path: "/x" })).toBe("m:1.0.0");
    expect(servedAsOf("local", "1.0.0", { kind: "agent-local" })).toBe("local:1.0.0");
  });
});

describe("requests routed by the registry", () => {
  it("registers what agents announce as agent-local versions, and routes by name once one is active", async () => {
    const name = modelName("rt");
    const agent = await agents.serving([`${name}:1.0.0`, `${name}:2.0.0`]);
    await registered(name, 2);
    const model = await call("GET", `/models/${name}`, undefined, { role: "user" });
    expect(model.body.versions.map((v: { version: string }) => v.version)).toEqual(["2.0.0", "1.0.0"]);
    const detail = await call("GET", `/models/${name}/1.0.0`, undefined, { role: "user" });
    expect(detail.body.source).toEqual({ kind: "agent-local" });

    const activated = await call("POST", `/models/${name}:1.0.0/activate`, {});
    expect(activated.status, JSON.stringify(activated.body)).toBe(200);
    const byName = await generate(name, agent);
    expect(byName.status).toBe(200);
    expect((byName as Response & { servedAs?: string }).servedAs).toBe(`${name}:1.0.0`);
    expect(byName.headers.get("X-Orchard-Model")).toBe(`${name}:1.0.0`);
    expect(await byName.json()).toMatchObject({ model_name: `${name}:1.0.0`, text: "hi" });

    // A switch: the next request by name goes to 2.0.0.
    expect((await call("POST", `/models/${name}:2.0.0/activate`, {})).status).toBe(200);
    const after = await generate(name, agent);
    expect(after.headers.get("X-Orchard-Model")).toBe(`${name}:2.0.0`);

    // An alias resolves like a version.
    expect((await call("PUT", `/models/${name}/aliases/stable`, { version: "1.0.0" })).status).toBe(200);
    const aliased = await generate(`${name}@stable`, agent);
    expect(aliased.headers.get("X-Orchard-Model")).toBe(`${name}:1.0.0`);
    const unknownAlias = await postJson("/generate", { model: `${name}@nope`, prompt: "p", max_tokens: 4 });
    expect(unknownAlias.status).toBe(404);
    expect(unknownAlias.headers.get("X-Error-Code")).toBe("MODEL_NOT_FOUND");

    // Deprecated: still served when pinned, with a Deprecation header.
    expect((await call("POST", `/models/${name}:1.0.0/deprecate`, {})).status).toBe(200);
    const pinned = await generate(`${name}:1.0.0`, agent);
    expect(pinned.status).toBe(200);
    expect(pinned.headers.get("Deprecation")).toBe("true");
    expect(after.headers.get("Deprecation")).toBeNull();

    // Archived: refused with its own code, even though an agent still announces it.
    expect((await call("POST", `/models/${name}:1.0.0/archive`, {})).status).toBe(200);
    const archived = await postJson("/generate", { model: `${name}:1.0.0`, prompt: "p", max_tokens: 4 });
    expect(archived.status).toBe(410);
    expect(archived.headers.get("X-Error-Code")).toBe("MODEL_ARCHIVED");
  });

  it("rolls the live traffic of each version into its metric history", async () => {
    const name = modelName("live");
    const agent = await agents.serving([`${name}:1.0.0`]);
    await registered(name, 1);
    for (let i = 0; i < 3; i++) expect((await generate(`${name}:1.0.0`, agent)).status).toBe(200);
    const failing = postJson("/generate", { model: `${name}:1.0.0`, prompt: "p", max_tokens: 4 });
    const frame = await agent.next("generate");
    agent.send({ type: "error", id: frame.id, code: "INVALID_REQUEST", message: "no", retryable: false });
    expect((await failing).status).toBeGreaterThanOrEqual(400);
    let live: { metrics: Record<string, number | null> }[] = [];
    await waitFor(
      async () => {
        const detail = await call("GET", `/models/${name}/1.0.0`, undefined, { role: "user" });
        live = detail.body.live_metrics ?? [];
        return live.reduce((n, w) => n + Number(w.metrics.requests ?? 0), 0) >= 4;
      },
      8000,
      "live metrics in the version's history",
    );
    const requests = live.reduce((n, w) => n + Number(w.metrics.requests ?? 0), 0);
    const errors = live.reduce((n, w) => n + Number(w.metrics.errors ?? 0), 0);
    expect({ requests, errors }).toEqual({ requests: 4, errors: 1 });
    expect(live.some((w) => typeof w.metrics.latency_p50_ms === "number")).toBe(true);
  });
});

describe("placement", () => {
  it("loads an activated version on an agent that can fetch artifacts, then switches; a failed load is reported", async () => {
    const name = modelName("pl");
    const sha256 = "a".repeat(64);
    await register(name, "1.0.0", {
      source: { kind: "artifact", format: "gguf" },
      sha256,
      size: 1000,
      model_path: undefined,
    });
    const agent = agents.adopt(
      await (await import("./helpers.ts")).TestAgent.ready(
        {
          capabilities: ["load", "artifacts"],
          models: [{ name: uniqueId("own"), engine: "synthetic", loaded: true }],
        },
        uniqueId("pl-agent"),
      ),
    );
    const activation = call("POST", `/models/${name}:1.0.0/activate`, {
      placement: { replicas: 1 },
      timeout_ms: 5000,
    });
    const load = await agent.next("load");
    expect(load).toMatchObject({
      model: `${name}:1.0.0`,
      source: { kind: "artifact", format: "gguf" },
      artifact: { path: `/models/${name}:1.0.0/artifact`, sha256, size: 1000, format: "gguf" },
    });
    agent.send({
      type: "loaded",
      model: { name: `${name}:1.0.0`, engine: "llamacpp", loaded: true, footprintBytes: 2000 },
    });
    const activated = await activation;
    expect(activated.status, JSON.stringify(activated.body)).toBe(200);
    expect(activated.body.loaded_on).toEqual([agent.id]);
    const byName = await generate(name, agent);
    expect(byName.headers.get("X-Orchard-Model")).toBe(`${name}:1.0.0`);

    // A second version whose load fails: the activation reports it, nothing switches.
    await register(name, "2.0.0", {
      source: { kind: "artifact", format: "gguf" },
      sha256: "b".repeat(64),
      size: 1000,
      model_path: undefined,
    });
    const second = call("POST", `/models/${name}:2.0.0/activate`, {
      placement: { replicas: 1 },
      timeout_ms: 1500,
    });
    const load2 = await agent.next("load");
    expect(load2.model).toBe(`${name}:2.0.0`);
    agent.send({
      type: "load_failed",
      model: `${name}:2.0.0`,
      code: "ARTIFACT_HASH_MISMATCH",
      message: "sha256 differs",
    });
    const refused = await second;
    expect(refused.status).toBe(503);
    expect(refused.code).toBe("ACTIVATION_NOT_READY");
    expect(JSON.stringify(refused.body)).toContain("ARTIFACT_HASH_MISMATCH");
    const still = await generate(name, agent);
    expect(still.headers.get("X-Orchard-Model")).toBe(`${name}:1.0.0`);
    const lineage = await call("GET", `/models/${name}/lineage`, undefined, { role: "user" });
    expect(lineage.body.events.map((e: { kind: string }) => e.kind)).toContain("load_failed");
  });
});

describe("resolveModel without an active version (pure)", () => {
  const config = { defaultModel: undefined, modelFallbacks: new Map([["gone", ["m"]]]) };
  const pool = (served: string[]) => ({
    availability: (model: string) => (served.includes(model) ? ("servable" as const) : ("unknown" as const)),
    servedModels: () => served.map((id) => formatModelId(parseModelId(id).name, parseModelId(id).version)),
  });

  it("serves the bare name when an agent serves it, else the highest version agents serve", () => {
    expect(resolveModel("m", config, pool(["m", "m:2.0.0"]))).toMatchObject({ ok: true, model: "m" });
    const served = ["m:1.10.0-rc.1", "m:1.10.0", "m:1.9.0", "other:9.0.0"];
    expect(resolveModel("m", config, pool(served))).toEqual({
      ok: true,
      model: "m:1.10.0",
      requested: "m:1.10.0",
      fallback: false,
    });
    expect(resolveModel("m", config, pool([...served, "m:2.0.0"]))).toMatchObject({ model: "m:2.0.0" });
    // A pinned version is that version or nothing.
    expect(resolveModel("m:3.0.0", config, pool(served))).toMatchObject({
      ok: false,
      code: "MODEL_NOT_FOUND",
    });
    // MODEL_FALLBACKS still apply to what no agent serves.
    expect(resolveModel("gone", config, pool(["m"]))).toMatchObject({ ok: true, model: "m", fallback: true });
  });

  it("orders versions as semver does, numeric parts first, releases above their pre-releases", () => {
    const sorted = [
      "1.0.0-alpha",
      "1.0.0-alpha.1",
      "1.0.0-beta.2",
      "1.0.0-beta.11",
      "1.0.0",
      "1.2",
      "1.10.0",
      "2",
    ];
    const shuffled = [...sorted].reverse();
    expect(shuffled.sort(compareModelVersions)).toEqual(sorted);
    expect(compareModelVersions("1.0.0+build.1", "1.0.0")).toBe(0);
  });
});

describe("poolsForModel", () => {
  const pools = readConfig({ POOLS: JSON.stringify({ "lab-a": { models: ["m"] } }) }).pools;

  it("sends name:version and name@alias where the name is served", () => {
    expect(poolsForModel(pools, "m")).toEqual(["lab-a"]);
    expect(poolsForModel(pools, "m:1.0.0")).toEqual(["lab-a"]);
    expect(poolsForModel(pools, "m@stable")).toEqual(["lab-a"]);
    expect(poolsForModel(pools, "other:1.0.0")).toEqual(["default"]);
  });
});

describe("a switch of the active version", () => {
  it("lets a request in flight finish on the version it was resolved to", async () => {
    const name = modelName("sw");
    const agent = await agents.serving([`${name}:1.0.0`, `${name}:2.0.0`], 2);
    await registered(name, 2);
    expect((await call("POST", `/models/${name}:1.0.0/activate`, {})).status).toBe(200);
    const first = postJson("/generate", { model: name, prompt: "p", max_tokens: 4 });
    const firstFrame = await agent.next("generate");
    expect(firstFrame.model).toBe(`${name}:1.0.0`);

    expect((await call("POST", `/models/${name}:2.0.0/activate`, {})).status).toBe(200);
    const second = await generate(name, agent, "two");
    expect(second.headers.get("X-Orchard-Model")).toBe(`${name}:2.0.0`);

    await agent.chunk(firstFrame.id, "one");
    await agent.done(firstFrame.id);
    const answered = await first;
    expect(answered.status).toBe(200);
    expect(answered.headers.get("X-Orchard-Model")).toBe(`${name}:1.0.0`);
    expect(await answered.json()).toMatchObject({ model_name: `${name}:1.0.0`, text: "one" });
  });
});

describe("AgentHub RPCs applyRoutingTable and placementStatus", () => {
  it("holds a pushed table, ignores an older one, places, backs off a failed load, and reports it all", async () => {
    const hub = env.AGENT_HUB.getByName("default");
    const agent = agents.adopt(
      await TestAgent.ready({ capabilities: ["load", "artifacts"], models: [] }, uniqueId("rpc-agent")),
    );
    // Pushed at the revision the hub holds (not above), so the registry's own pushes and D1 reloads
    // in later tests still win; the table the hub held is put back at the end.
    const { revision } = await hub.applyRoutingTable({ ...EMPTY_ROUTING_TABLE, revision: -1 });
    const original = await runInDurableObject(hub, (_instance: AgentHub, state) =>
      state.storage.get<RoutingTable>("routing-table"),
    );
    const name = modelName("rpc");
    const id = `${name}:1.0.0`;
    const sha256 = "c".repeat(64);
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
          rollout: null,
          versions: {
            "1.0.0": version("1.0.0", {
              status: "active",
              servedAs: id,
              source: { kind: "artifact", format: "gguf" },
              sha256,
              size: 1000,
              placement: { replicas: 1 },
            }),
          },
        },
      },
    };
    try {
      expect(await hub.applyRoutingTable(table)).toEqual({ revision });
      // Earlier tests' active versions may have been offered to this agent on hello: skip those.
      let load = await agent.next("load");
      while (load.model !== id) load = await agent.next("load");
      expect(load).toMatchObject({
        model: id,
        artifact: { path: `/models/${id}/artifact`, sha256, size: 1000, format: "gguf" },
      });
      expect((await hub.placementStatus())[id]).toEqual({ loaded: [], loading: [agent.id], failed: [] });

      await agent.deliver({
        type: "load_failed",
        model: id,
        code: "ARTIFACT_DOWNLOAD_FAILED",
        message: "gone",
      });
      const failed = (await hub.placementStatus())[id];
      expect(failed?.loading).toEqual([]);
      expect(failed?.failed).toMatchObject([
        { agentId: agent.id, code: "ARTIFACT_DOWNLOAD_FAILED", message: "gone" },
      ]);
      // Backed off: no new load at once; the next comes after LOAD_RETRY_BASE_MS (5 s).
      expect(await agent.unread("load")).toEqual([]);
      const retry = await agent.next("load", 9000);
      expect(retry.model).toBe(id);
      await agent.deliver({
        type: "loaded",
        model: { name: id, engine: "llamacpp", loaded: true, footprintBytes: 2000 },
      });
      expect((await hub.placementStatus())[id]).toEqual({ loaded: [agent.id], loading: [], failed: [] });

      // An older table changes nothing: the name still routes to the active version.
      expect(await hub.applyRoutingTable({ ...EMPTY_ROUTING_TABLE, revision: revision - 1 })).toEqual({
        revision,
      });
      const byName = await generate(name, agent);
      expect(byName.headers.get("X-Orchard-Model")).toBe(id);
      expect(await byName.json()).toMatchObject({ model_name: id });
    } finally {
      await hub.applyRoutingTable({ ...(original ?? EMPTY_ROUTING_TABLE), revision, builtAt: Date.now() });
    }
  }, 20_000);
});

describe("HubRoutingTable", () => {
  it("persists what it applies, restores it after a wake, and never goes back to an older revision", async () => {
    const hub = env.AGENT_HUB.getByName(uniqueId("routing-store"));
    await runInDurableObject(hub, async (_instance: AgentHub, state) => {
      const held = new HubRoutingTable(state.storage);
      const table: RoutingTable = { ...EMPTY_ROUTING_TABLE, revision: 7, builtAt: 1 };
      expect(held.apply(table, 100)).toBe(true);
      expect(held.refreshedAt).toBe(100);
      expect(held.apply({ ...EMPTY_ROUTING_TABLE, revision: 6, builtAt: 2 }, 200)).toBe(false);
      expect(held.apply(table, 300)).toBe(false);
      expect(held.table.revision).toBe(7);
      const woken = new HubRoutingTable(state.storage);
      expect(woken.refreshedAt).toBe(0);
      await woken.restore();
      expect(woken.table).toEqual(table);
    });
  });
});
