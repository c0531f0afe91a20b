// /health and /ready under a flood of probes: one observation of D1 and the hubs (a snapshot and the
// health score's monitoring() per pool) per isolate and HEALTH_CACHE_MS, shared by concurrent
// probes, counted on the real bindings the Worker is given.
// (The rest of the suite runs with HEALTH_CACHE_MS=0; here it is the shipped default, 2000 ms.)
import { env } from "cloudflare:workers";
import { expect, it } from "vitest";
import { HealthResponse, ReadyResponse } from "../../schema/api.ts";
import { trackedAgents } from "./helpers.ts";
import { countingD1, fetchWith, recordingHubs } from "./instrumented-env.ts";

const agents = trackedAgents();
const DEFAULT_TTL_MS = 2000;

it("50 concurrent probes cost one D1 query and one snapshot and monitoring() per pool; a change shows after the TTL", async () => {
  const d1 = countingD1();
  const hubs = recordingHubs();
  const bindings = { ...env, DB: d1.db, AGENT_HUB: hubs.namespace, HEALTH_CACHE_MS: undefined };
  const asked = (method: string) =>
    hubs.calls
      .filter((c) => c.method === method)
      .map((c) => c.pool)
      .sort();
  const snapshots = () => asked("snapshot");

  const observedAt = Date.now();
  const burst = await Promise.all(
    Array.from({ length: 50 }, (_, i) => fetchWith(bindings, i % 2 === 0 ? "/health" : "/ready")),
  );
  for (const [i, response] of burst.entries()) {
    if (i % 2 === 0) {
      expect(response.status).toBe(200);
      expect(HealthResponse.parse(await response.json())).toMatchObject({ status: "ok", agentsConnected: 0 });
    } else {
      expect(response.status).toBe(503);
      expect(ReadyResponse.parse(await response.json()).ready).toBe(false);
    }
  }
  expect(d1.counter.queries).toBe(1);
  expect(snapshots()).toEqual(["default", "lab-a"]);
  expect(asked("monitoring")).toEqual(["default", "lab-a"]);

  // An agent arrives; within the TTL the probes still answer from the first observation.
  await agents.serving("cache-model");
  const stale = await fetchWith(bindings, "/ready");
  expect(Date.now() - observedAt).toBeLessThan(DEFAULT_TTL_MS);
  expect(stale.status).toBe(503);
  expect(d1.counter.queries).toBe(1);

  // Past the TTL the next probe looks again (once) and sees it.
  let health: HealthResponse | undefined;
  for (;;) {
    health = HealthResponse.parse(await (await fetchWith(bindings, "/health")).json());
    if (health.agentsConnected === 1) break;
    expect(Date.now() - observedAt).toBeLessThan(DEFAULT_TTL_MS + 1000);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  expect(Date.now() - observedAt).toBeGreaterThanOrEqual(DEFAULT_TTL_MS);
  expect(d1.counter.queries).toBe(2);
  expect(snapshots()).toEqual(["default", "default", "lab-a", "lab-a"]);
  expect(asked("monitoring")).toEqual(["default", "default", "lab-a", "lab-a"]);
  const ready = await fetchWith(bindings, "/ready");
  expect(ready.status).toBe(200);
  expect(ReadyResponse.parse(await ready.json()).models).toEqual(["cache-model"]);
  expect(d1.counter.queries).toBe(2);
});
