// The registry against the real AgentHub: an agent's own model appears in the registry as an
// agent-local version, and activating it with a placement waits for the hub to report it loaded.
import { describe, expect, it } from "vitest";
import { AGENT_LOCAL_VERSION } from "../../schema/registry.ts";
import { trackedAgents, waitFor } from "./helpers.ts";
import { call, modelName } from "./registry-helpers.ts";

const agents = trackedAgents();

describe("registry and AgentHub", () => {
  it("registers an agent's own model and activates it once the hub reports it loaded", async () => {
    const name = modelName("own");
    const agent = await agents.serving(name);
    const modelId = `${name}:${AGENT_LOCAL_VERSION}`;
    const version = await waitFor(
      async () => {
        const answer = await call("GET", `/models/${name}/${AGENT_LOCAL_VERSION}`);
        return answer.status === 200 ? answer.body : null;
      },
      5000,
      "the hub to register the agent-local version",
    );
    expect(version).toMatchObject({ source: { kind: "agent-local" }, created_by: `agent:${agent.id}` });
    const activated = await call("POST", `/models/${modelId}/activate`, {
      placement: { replicas: 1, pools: ["default"] },
      timeout_ms: 5000,
    });
    expect(activated.status, JSON.stringify(activated.body)).toBe(200);
    expect(activated.body).toMatchObject({ model_id: modelId, loaded_on: [agent.id], noop: false });
    const model = await call("GET", `/models/${name}`);
    expect(model.body.active_version).toBe(AGENT_LOCAL_VERSION);
  });

  it("answers 503 ACTIVATION_NOT_READY when the pool's agents do not hold the version", async () => {
    const name = modelName("own");
    await agents.serving(name);
    await waitFor(
      async () => (await call("GET", `/models/${name}`)).status === 200,
      5000,
      "the hub to register the agent-local version",
    );
    const answer = await call("POST", `/models/${name}:${AGENT_LOCAL_VERSION}/activate`, {
      placement: { replicas: 2, pools: ["default"] },
      timeout_ms: 500,
    });
    expect({ status: answer.status, code: answer.code }).toEqual({
      status: 503,
      code: "ACTIVATION_NOT_READY",
    });
    expect(answer.body.error.message).toContain("1 of 2 agents");
  });
});
