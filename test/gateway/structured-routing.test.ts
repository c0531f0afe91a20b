// Routing for structured output: a request with a `format` goes to an agent that enforces it for
// the model (it offered structured_output, and the engine serving the model announces
// json_schema_grammar or format) when one can take it now, and to any other agent otherwise; a
// request without one is routed by load alone.
import { describe, expect, it } from "vitest";
import { readConfig } from "../../gateway/config.ts";
import { AgentChoice, type Attempted, enforcesFormatFor } from "../../gateway/hub/agent-choice.ts";
import { AgentConnection } from "../../gateway/hub/agent-connection.ts";
import { CircuitBreakers } from "../../gateway/hub/circuit-breakers.ts";
import type { ModelId } from "../../schema/model-id.ts";
import type { Capability, EngineInfo, EngineName } from "../../schema/protocol.ts";
import { helloFrame } from "./helpers.ts";

const NOW = 1_000;
const M = "m" as ModelId;

function agent(
  id: string,
  {
    capabilities = [] as Capability[],
    engine = "llamacpp" as EngineName,
    engineInfo = [] as EngineInfo[],
    capacity = 2,
    inFlight = 0,
    models = [M as string],
  } = {},
): AgentConnection {
  const connection = new AgentConnection({} as WebSocket, {
    agentId: id,
    name: id,
    pool: "default",
    sessionId: `session-${id}`,
    connectedAt: NOW,
    tokenExpiresAt: null,
  });
  connection.applyHello(
    helloFrame(id, {
      capacity,
      engines: [engine],
      engineInfo,
      models: models.map((name) => ({ name, engine, loaded: true })),
    }),
    { protocol: 2, capabilities: ["duplicate_answer", ...capabilities] },
    NOW,
  );
  for (let i = 0; i < inFlight; i++) connection.requests.add(`busy-${id}-${i}`);
  return connection;
}

const grammar: EngineInfo[] = [{ name: "llamacpp", capabilities: ["json_schema_grammar"] }];
const enforcing = (id: string, extra: Parameters<typeof agent>[1] = {}) =>
  agent(id, { capabilities: ["structured_output"], engineInfo: grammar, ...extra });

function choice(agents: AgentConnection[]): AgentChoice {
  return new AgentChoice(new CircuitBreakers(readConfig({}).breaker), () => agents);
}

const job = (format?: unknown, tried: string[] = []): Attempted => ({
  id: `job-${Math.random()}`,
  triedAgents: new Set(tried),
  request: format === undefined ? {} : { format },
});

const schema = { type: "object", properties: { a: { type: "boolean" } }, required: ["a"] };

describe("routing a request with a format", () => {
  it("prefers an agent that enforces it, even a busier one, while it has a free slot", () => {
    // "a-plain" sorts first and is idle: by load alone it would win.
    const plain = agent("a-plain");
    const grammarAgent = enforcing("b-grammar", { inFlight: 1 });
    const agents = choice([plain, grammarAgent]);
    expect(agents.pick(M, job(schema), NOW)?.id).toBe("b-grammar");
    expect(agents.pick(M, job("json"), NOW)?.id).toBe("b-grammar");
    // Without a format: load decides, as before.
    expect(agents.pick(M, job(), NOW)?.id).toBe("a-plain");
    expect(agents.pick(M, null, NOW)?.id).toBe("a-plain");
  });

  it("falls back to an agent that does not enforce when every enforcing one is full, tried or absent", () => {
    const plain = agent("a-plain");
    const full = enforcing("b-grammar", { inFlight: 2 });
    expect(choice([plain, full]).pick(M, job(schema), NOW)?.id).toBe("a-plain");
    const free = enforcing("b-grammar");
    // Already failed there, and another agent serves the model: the others first.
    expect(choice([plain, free]).pick(M, job(schema, ["b-grammar"]), NOW)?.id).toBe("a-plain");
    expect(choice([plain]).pick(M, job(schema), NOW)?.id).toBe("a-plain");
    expect(choice([full]).pick(M, job(schema), NOW)).toBeNull();
  });

  it("among enforcing agents, load decides", () => {
    const busy = enforcing("a-grammar", { inFlight: 1 });
    const idle = enforcing("b-grammar");
    expect(choice([busy, idle, agent("c-plain")]).pick(M, job(schema), NOW)?.id).toBe("b-grammar");
  });

  it("reads enforcement per model: structured_output, and the engine serving the model", () => {
    // Offered structured_output, but the model runs on MLX, which enforces nothing.
    const mixed = agent("mixed", mixedOptions());
    expect(enforcesFormatFor(mixed, M)).toBe(false);
    expect(enforcesFormatFor(enforcing("g"), M)).toBe(true);
    const ollama = agent("o", {
      capabilities: ["structured_output"],
      engine: "ollama",
      engineInfo: [{ name: "ollama", capabilities: ["format"] }],
    });
    expect(enforcesFormatFor(ollama, M)).toBe(true);
    // An agent that said nothing about its engines is taken at its word.
    expect(enforcesFormatFor(agent("bare", { capabilities: ["structured_output"] }), M)).toBe(true);
    // Engines that enforce are not enough: the agent must have offered structured_output
    // (an agent started with --structured-output off does not).
    expect(enforcesFormatFor(agent("off", { engineInfo: grammar }), M)).toBe(false);
    const agents = choice([agent("a-mixed", mixedOptions()), enforcing("b-grammar", { inFlight: 1 })]);
    expect(agents.pick(M, job(schema), NOW)?.id).toBe("b-grammar");
  });
});

function mixedOptions(): Parameters<typeof agent>[1] {
  return {
    capabilities: ["structured_output"],
    engine: "mlx",
    engineInfo: [...grammar, { name: "mlx", capabilities: [] }],
  };
}
