// One agent serving a GGUF model with llama.cpp and an MLX folder with MLX at once, through the real
// gateway, answered for the official OpenAI SDK: both engines announced, both models listed, each
// answering greedy text that repeats across requests, streamed and not.
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureDemoMlxModel } from "../../node-agent/demo-mlx-model.ts";
import { DEMO_MODEL_NAME, ensureDemoModel } from "../../node-agent/demo-model.ts";
import { mlxSkipReason } from "../agent/mlx-setup.ts";
import { type Stack, startStack } from "../helpers/stack.ts";

const MLX_MODEL = "demo-mlx";
const skip = await mlxSkipReason();

describe.skipIf(skip !== undefined)(
  `one agent, llama.cpp and MLX at once${skip ? ` (skipped: ${skip})` : ""}`,
  () => {
    let stack: Stack;
    let client: OpenAI;

    beforeAll(async () => {
      stack = await startStack();
      const gguf = await ensureDemoModel(stack.cacheDir);
      const mlx = await ensureDemoMlxModel(stack.cacheDir, { dtype: "float32" });
      await stack.startAgent({
        id: "two-engines",
        args: [
          "--model",
          `${DEMO_MODEL_NAME}=llamacpp:${gguf}`,
          "--model",
          `${MLX_MODEL}=mlx:${mlx}`,
          "--capacity",
          "2",
        ],
      });
      await stack.waitForAgents((list) => list.some((a) => a.models.length >= 2), 60_000);
      client = new OpenAI({
        baseURL: `${stack.origin}/v1`,
        apiKey: await stack.token("user"),
        maxRetries: 0,
      });
    }, 180_000);

    afterAll(async () => {
      await stack?.stop();
    });

    it("announces both engines and lists both models", async () => {
      const agents = await stack.waitForAgents((list) => list.length === 1);
      const agent = agents[0] as { engines?: string[]; models: { name: string; engine?: string }[] };
      expect(agent.engines).toEqual(expect.arrayContaining(["llamacpp", "mlx"]));
      const engineOf = Object.fromEntries(agent.models.map((m) => [m.name, m.engine]));
      expect(engineOf[DEMO_MODEL_NAME]).toBe("llamacpp");
      expect(engineOf[MLX_MODEL]).toBe("mlx");
      const listed = (await client.models.list()).data.map((m) => m.id);
      expect(listed).toEqual(expect.arrayContaining([DEMO_MODEL_NAME, MLX_MODEL]));
    });

    it("answers the OpenAI SDK from each engine, greedy and repeatable, streamed and not", async () => {
      for (const model of [DEMO_MODEL_NAME, MLX_MODEL]) {
        const ask = () =>
          client.chat.completions.create({
            model,
            messages: [{ role: "user", content: "Hello" }],
            max_tokens: 12,
            temperature: 0,
          });
        const [first, second] = [await ask(), await ask()];
        const text = first.choices[0]?.message.content ?? "";
        expect(text.length, model).toBeGreaterThan(0);
        expect(second.choices[0]?.message.content, model).toBe(text);
        expect(first.usage?.completion_tokens, model).toBeGreaterThan(0);
        expect(first.usage?.completion_tokens, model).toBeLessThanOrEqual(12);
        const stream = await client.chat.completions.create({
          model,
          messages: [{ role: "user", content: "Hello" }],
          max_tokens: 12,
          temperature: 0,
          stream: true,
        });
        let streamed = "";
        for await (const chunk of stream) streamed += chunk.choices[0]?.delta.content ?? "";
        expect(streamed, model).toBe(text);
      }
    }, 120_000);
  },
);
