// /health per pool: the models served and by how many ready, not draining agents, each pool's own
// health score and the fleet's; a pool whose hub does not answer; no agent named.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { healthScore } from "../../gateway/monitoring/health-score.ts";
import { HealthResponse } from "../../schema/api.ts";
import { gatewayFetch, type TestAgent, trackedAgents, uniqueId, waitFor } from "./helpers.ts";
import { fetchWith } from "./instrumented-env.ts";
import { DEFAULTS } from "./monitoring-fixtures.ts";

const agents = trackedAgents();

async function health(bindings?: object): Promise<HealthResponse> {
  const response =
    bindings === undefined ? await gatewayFetch("/health") : await fetchWith(bindings, "/health");
  expect(response.status).toBe(200);
  return HealthResponse.parse(await response.json());
}

/** A ready agent in `pool` (its D1 row says so before it connects). */
async function agentInPool(pool: string, models: string[]): Promise<TestAgent> {
  const id = uniqueId(`health-${pool}`);
  await env.DB.prepare("INSERT INTO agents (id, name, pool) VALUES (?, ?, ?)").bind(id, id, pool).run();
  return agents.serving(models, 1, id);
}

describe("/health per pool", () => {
  it("lists each pool's models with how many agents serve them, and the scores", async () => {
    const shared = uniqueId("health-shared");
    const solo = uniqueId("health-solo");
    const a = await agentInPool("default", [shared, solo]);
    await agentInPool("default", [shared]);
    await agentInPool("lab-a", ["lab-a-model"]);
    const body = await health();
    expect(body).toMatchObject({ status: "ok", agentsConnected: 3, healthScore: 100 });
    expect(body.pools).toEqual([
      {
        pool: "default",
        reachable: true,
        healthScore: 100,
        models: [
          { id: shared, agents: 2 },
          { id: solo, agents: 1 },
        ].sort((x, y) => (x.id < y.id ? -1 : 1)),
      },
      { pool: "lab-a", reachable: true, healthScore: 100, models: [{ id: "lab-a-model", agents: 1 }] },
    ]);

    // A draining agent serves nothing new: it no longer counts, and a model only it served is gone.
    a.send({ type: "draining", deadlineMs: 5000 });
    const drained = await waitFor(
      async () => {
        const next = await health();
        return next.pools?.[0]?.models.some((m) => m.id === solo) ? null : next;
      },
      3000,
      "the draining agent to stop counting",
    );
    expect(drained.pools?.[0]?.models).toEqual([{ id: shared, agents: 1 }]);
    // Unauthenticated: counts and model ids (as /ready gives them), never an agent.
    const text = JSON.stringify(drained);
    expect(text).not.toContain(a.id);
  });

  it("lowers the score when a pool does not answer, and says the pool is not reachable", async () => {
    const hubs = new Proxy(env.AGENT_HUB, {
      get(target, property) {
        const value = Reflect.get(target, property, target);
        if (property !== "getByName" || typeof value !== "function") {
          return typeof value === "function" ? value.bind(target) : value;
        }
        return (pool: string, options?: DurableObjectNamespaceGetDurableObjectOptions) =>
          pool === "lab-a"
            ? new Proxy(
                {},
                { get: (_, m) => (m === "then" ? undefined : () => Promise.reject(new Error("down"))) },
              )
            : target.getByName(pool, options);
      },
    });
    const body = await health({ ...env, AGENT_HUB: hubs });
    expect(body.status).toBe("degraded");
    const [own, down] = body.pools ?? [];
    expect([own?.pool, own?.reachable, down]).toEqual([
      "default",
      true,
      { pool: "lab-a", reachable: false, healthScore: null, models: [] },
    ]);
    // The fleet's score is the default pool's numbers with one pool of two not answering: the
    // availability component is at most 1/2 (earlier tests' agents may have left it lower).
    const numbers = await env.AGENT_HUB.getByName("default").monitoring(["5m"]);
    expect(own?.healthScore).toBe(healthScore([numbers], DEFAULTS).score);
    expect(body.healthScore).toBe(healthScore([numbers], DEFAULTS, ["lab-a"]).score);
    expect(body.healthScore).toBeLessThanOrEqual(80);
  });
});
