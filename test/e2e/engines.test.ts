// One agent process with two engines through the real gateway: llama.cpp serving the demo GGUF
// (configured) and a copy of it found in a models folder, and Ollama serving the models of a TEST
// DOUBLE of Ollama's HTTP API (no Ollama server can be installed here). GET /agents shows both
// engines with their capabilities, the OpenAI SDK is answered by each, the registry registers the
// announced models as agent-local versions, and the Ollama models leave and come back with the
// server.
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureDemoModel } from "../../node-agent/demo-model.ts";
import { OllamaEngine } from "../../node-agent/engines/ollama/index.ts";
import type { EngineInfo } from "../../schema/protocol.ts";
import { ReferenceEngine } from "../helpers/expected-text.ts";
import { OllamaDouble } from "../helpers/ollama-double.ts";
import { type AgentProcess, type AgentView, type Stack, startStack } from "../helpers/stack.ts";

const TAG = "tiny:latest";
let stack: Stack;
let double: OllamaDouble;
let agent: AgentProcess;
let modelsDir: string;
let demoPath: string;
let admin: string;
let client: OpenAI;

beforeAll(async () => {
  double = await OllamaDouble.start({ models: [{ name: TAG, quantization: "Q4_0" }] });
  stack = await startStack({ vars: { HEALTH_INTERVAL_MS: "500" } });
  demoPath = await ensureDemoModel(stack.cacheDir);
  modelsDir = mkdtempSync(join(tmpdir(), "orchard-models-"));
  copyFileSync(demoPath, join(modelsDir, "found-demo.gguf"));
  agent = await stack.startAgent({
    args: ["--model", `demo=${demoPath}`, "--models-dir", modelsDir, "--capacity", "2"],
    env: { OLLAMA_BASE_URL: `${double.url}/v1` },
  });
  admin = await stack.token("admin");
  client = new OpenAI({ baseURL: `${stack.origin}/v1`, apiKey: await stack.token("user"), maxRetries: 0 });
});

afterAll(async () => {
  await stack?.stop();
  await double?.close();
  rmSync(modelsDir, { recursive: true, force: true });
});

const names = (a: AgentView | undefined) => (a?.models ?? []).map((m) => m.name).sort();

describe("an agent with llama.cpp and Ollama through the gateway", () => {
  it("shows both engines with their capabilities and every model in GET /agents", async () => {
    const [view] = await stack.waitForAgents((list) =>
      names(list.find((a) => a.id === agent.id)).includes(TAG),
    );
    expect(view?.engines).toEqual(["llamacpp", "ollama"]);
    const info = view?.engineInfo as EngineInfo[];
    expect(info.map((e) => [e.name, e.capabilities])).toEqual([
      ["llamacpp", ["json_schema_grammar"]],
      ["ollama", ["format"]],
    ]);
    expect(info[0]?.quantizations).toEqual(expect.arrayContaining(["F32", "Q4_K_M"]));
    expect(info[1]?.quantizations).toEqual(["Q4_0"]);
    expect(names(view)).toEqual(["demo", "found-demo", TAG]);
    expect(view?.models.find((m) => m.name === TAG)).toMatchObject({ engine: "ollama", loaded: false });
    expect(agent.lines.some((l) => l.includes('"msg":"models folder scanned"'))).toBe(true);
    expect(
      agent.lines.some((l) => l.includes('"msg":"the Ollama server answers; offering its models"')),
    ).toBe(true);
  });

  it("answers the OpenAI SDK from each engine", async () => {
    const messages = [{ role: "user" as const, content: "Hello there" }];
    const reference = await ReferenceEngine.start(demoPath);
    const expectedDemo = await reference.answer({ messages, maxTokens: 6 });
    await reference.close();
    for (const model of ["demo", "found-demo"]) {
      const res = await client.chat.completions.create({ model, messages, max_tokens: 6, temperature: 0 });
      expect(res.choices[0]?.message.content, model).toBe(expectedDemo.text);
    }
    const direct = new OllamaEngine({ baseUrl: double.url });
    await direct.start();
    let expectedTag = "";
    for await (const piece of direct.generate(
      { model: TAG, messages, params: { maxTokens: 6, temperature: 0 } },
      new AbortController().signal,
    ))
      expectedTag += piece.text;
    await direct.close();
    const res = await client.chat.completions.create({ model: TAG, messages, max_tokens: 6, temperature: 0 });
    expect(res.choices[0]?.message.content).toBe(expectedTag);
    expect(res.usage?.completion_tokens).toBe(6);
    // The last generation request: the agent's watcher keeps asking /api/tags and /api/ps meanwhile.
    expect(double.requests.filter((r) => r.path === "/api/chat").at(-1)?.body).toMatchObject({
      model: TAG,
      messages,
      options: { num_predict: 6, temperature: 0 },
    });
  });

  it("registers the announced models as agent-local versions", async () => {
    const res = await fetch(`${stack.origin}/models`, { headers: { Authorization: `Bearer ${admin}` } });
    const body = (await res.json()) as { models: Array<{ name: string }> };
    expect(body.models.map((m) => m.name)).toEqual(expect.arrayContaining(["demo", "found-demo", TAG]));
  });

  it("withdraws the Ollama models while the server is away and offers them again when it is back", async () => {
    await double.stop();
    await stack.waitForAgents((list) => {
      const models = names(list.find((a) => a.id === agent.id));
      return models.includes("demo") && !models.includes(TAG);
    });
    await expect(
      client.chat.completions.create({
        model: TAG,
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 4,
      }),
    ).rejects.toMatchObject({ status: expect.any(Number) });
    expect(agent.lines.some((l) => l.includes("the Ollama server went away"))).toBe(true);
    await double.restart();
    await stack.waitForAgents((list) => names(list.find((a) => a.id === agent.id)).includes(TAG));
    const res = await client.chat.completions.create({
      model: TAG,
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 4,
    });
    expect(res.usage?.completion_tokens).toBe(4);
  });
});
