// The whole request path with real parts: HTTP caller -> Worker (workerd) -> AgentHub Durable
// Object -> WebSocket -> node-agent process -> llama.cpp on the demo model, and back.
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AgentProcess, readSse, type Stack, startStack } from "../helpers/stack.ts";

const MODEL = "demo-random-weights";

let stack: Stack;
let userToken: string;
let agents: AgentProcess[] = [];

function post(path: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(`${stack.origin}${path}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${userToken}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
    ...init,
  });
}

beforeAll(async () => {
  stack = await startStack({ vars: { HEALTH_INTERVAL_MS: "500" } });
  userToken = await stack.token("user");
  agents = await Promise.all([stack.startAgent({ id: "e2e-a" }), stack.startAgent({ id: "e2e-b" })]);
  await stack.waitForAgents((list) => list.length === 2);
});

afterAll(async () => {
  await stack?.stop();
});

describe("OpenAI-compatible API through the official SDK", () => {
  it("lists the model the agents serve", async () => {
    const client = new OpenAI({ baseURL: `${stack.origin}/v1`, apiKey: userToken });
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toContain(MODEL);
  });

  it("answers a non-streaming chat completion with usage", async () => {
    const client = new OpenAI({ baseURL: `${stack.origin}/v1`, apiKey: userToken });
    const completion = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "Hello there" }],
      max_tokens: 16,
      temperature: 0,
    });
    expect(completion.object).toBe("chat.completion");
    expect(completion.model).toBe(MODEL);
    const choice = completion.choices[0];
    expect(choice?.message.role).toBe("assistant");
    expect(choice?.message.content?.length).toBeGreaterThan(0);
    expect(["stop", "length"]).toContain(choice?.finish_reason);
    expect(completion.usage?.completion_tokens).toBeGreaterThan(0);
    expect(completion.usage?.completion_tokens).toBeLessThanOrEqual(16);
    expect(completion.usage?.prompt_tokens).toBeGreaterThan(0);
  });

  it("streams a chat completion whose deltas add up to the non-streaming answer", async () => {
    const client = new OpenAI({ baseURL: `${stack.origin}/v1`, apiKey: userToken });
    const request = {
      model: MODEL,
      messages: [{ role: "user" as const, content: "Tell me a story" }],
      max_tokens: 40,
      temperature: 0,
    };
    const whole = await client.chat.completions.create(request);
    const stream = await client.chat.completions.create({
      ...request,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let chunks = 0;
    let finish: string | null | undefined;
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const chunk of stream) {
      expect(chunk.object).toBe("chat.completion.chunk");
      chunks++;
      text += chunk.choices[0]?.delta.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(chunks).toBeGreaterThan(2);
    expect(text).toBe(whole.choices[0]?.message.content);
    expect(finish).toBe(whole.choices[0]?.finish_reason);
    expect(usage?.completion_tokens).toBe(whole.usage?.completion_tokens);
  });

  it("rejects a bad request with an OpenAI-shaped error the SDK understands", async () => {
    const client = new OpenAI({ baseURL: `${stack.origin}/v1`, apiKey: userToken, maxRetries: 0 });
    const err = await client.chat.completions.create({ model: MODEL, messages: [], max_tokens: 4 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).code).toBe("INVALID_REQUEST");
  });

  it("refuses a caller without a valid token", async () => {
    const client = new OpenAI({ baseURL: `${stack.origin}/v1`, apiKey: "not-a-token", maxRetries: 0 });
    await expect(client.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
  });
});

describe("POST /generate", () => {
  it("returns the seed's body shape", async () => {
    const res = await post("/generate", { prompt: "Once upon a time", max_tokens: 12, temperature: 0 });
    expect(res.status).toBe(200);
    const requestId = res.headers.get("x-request-id");
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ model_name: MODEL, request_id: requestId });
    expect(typeof body.text).toBe("string");
    expect(body.tokens_generated).toBeGreaterThan(0);
    expect(body.tokens_generated).toBeLessThanOrEqual(12);
    expect(body.latency_ms).toBeGreaterThan(0);
  });

  it("streams Server-Sent Events that add up to the same text", async () => {
    const prompt = { prompt: "The quick brown fox", max_tokens: 30, temperature: 0 };
    const whole = (await (await post("/generate", prompt)).json()) as {
      text: string;
      tokens_generated: number;
    };
    const res = await post("/generate", { ...prompt, stream: true });
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const events = await readSse(res);
    const chunks = events.filter((e) => e.event === "chunk");
    expect(chunks.length).toBeGreaterThan(1);
    expect(chunks.map((e) => (JSON.parse(e.data) as { text: string }).text).join("")).toBe(whole.text);
    const done = events.at(-1);
    expect(done?.event).toBe("done");
    expect(JSON.parse(done?.data ?? "{}")).toMatchObject({ tokens_generated: whole.tokens_generated });
  });

  it("answers 404 for a model nobody serves", async () => {
    const res = await post("/generate", { prompt: "x", model: "no-such-model" });
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("MODEL_NOT_FOUND");
  });
});

describe("scheduling across agents", () => {
  it("spreads concurrent work over both agents", async () => {
    const seen = new Set<string>();
    const requests = Array.from({ length: 6 }, (_, i) =>
      post("/generate", { prompt: `Load ${i}`, max_tokens: 600, temperature: 0 }).then((r) => r.json()),
    );
    let settled = false;
    const all = Promise.all(requests).finally(() => {
      settled = true;
    });
    while (!settled) {
      const list = await stack.waitForAgents(() => true);
      for (const a of list) if (a.inFlight > 0) seen.add(a.id);
      await new Promise((r) => setTimeout(r, 20));
    }
    await all;
    expect([...seen].sort()).toEqual(["e2e-a", "e2e-b"]);
  });

  it("completes 32 concurrent streams, each with its own complete answer", async () => {
    const prompts = Array.from({ length: 32 }, (_, i) => `Request number ${i} says`);
    const expected = new Map<string, string>();
    for (const p of prompts) {
      const body = (await (
        await post("/generate", { prompt: p, max_tokens: 24, temperature: 0 })
      ).json()) as {
        text: string;
      };
      expected.set(p, body.text);
    }
    const results = await Promise.all(
      prompts.map(async (p) => {
        const res = await post("/generate", { prompt: p, max_tokens: 24, temperature: 0, stream: true });
        expect(res.status).toBe(200);
        const events = await readSse(res);
        expect(events.at(-1)?.event).toBe("done");
        return events
          .filter((e) => e.event === "chunk")
          .map((e) => (JSON.parse(e.data) as { text: string }).text)
          .join("");
      }),
    );
    results.forEach((text, i) => {
      expect(text).toBe(expected.get(prompts[i] as string));
    });
    // Distinct prompts give distinct answers on this model, so no stream got another's tokens.
    expect(new Set(results).size).toBeGreaterThan(16);
  });
});

describe("lifecycle", () => {
  it("cancels the generation when the caller disconnects mid-stream", async () => {
    const controller = new AbortController();
    // The demo model's context is 1,024 tokens (~0.5 s of generation): abort right after the
    // first chunk, long before the agent could finish on its own.
    const res = await post(
      "/generate",
      { prompt: "A very long tale", max_tokens: 4000, temperature: 0, stream: true },
      { signal: controller.signal },
    );
    const reader = res.body?.getReader();
    const first = await reader?.read();
    expect(first?.done).toBe(false);
    controller.abort();
    // The hub frees the slot and the agent itself reports nothing in flight.
    const list = await stack.waitForAgents(
      (l) =>
        l.every((a) => a.inFlight === 0) &&
        l.every(
          (a) => (a.lastHealth as { frame?: { inFlight?: number } } | undefined)?.frame?.inFlight === 0,
        ),
      10_000,
    );
    expect(list).toHaveLength(2);
    const cancelled = agents.flatMap((a) =>
      a.lines.filter((l) => l.includes('"msg":"generation aborted"') && l.includes('"cause":"cancel"')),
    );
    expect(cancelled).toHaveLength(1);
  });

  it("serves again after an agent is killed and restarted", async () => {
    const [a] = agents;
    await a?.kill();
    await stack.waitForAgents((list) => list.length === 1 && list[0]?.id === "e2e-b");
    const during = await post("/generate", { prompt: "still here?", max_tokens: 4 });
    expect(during.status).toBe(200);

    const restarted = await stack.startAgent({ id: "e2e-a" });
    agents[0] = restarted;
    await stack.waitForAgents((list) => list.length === 2);
    const stream = await post("/generate", { prompt: "welcome back", max_tokens: 8, stream: true });
    expect((await readSse(stream)).at(-1)?.event).toBe("done");
  });
});
