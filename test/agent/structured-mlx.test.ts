// MLX enforces no format (constrained decoding would need a token-level matcher over its
// vocabulary; docs/engines.md): a request with `format` is served like one without, the same greedy
// text, and the engine describes no enforcing capability, so the agent offers no structured_output
// for it and the gateway's validation and retries do the work.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureDemoMlxModel } from "../../node-agent/demo-mlx-model.ts";
import type { GenerationRequest } from "../../node-agent/engines/engine.ts";
import { createMlxEngine, type MlxEngine } from "../../node-agent/engines/mlx/index.ts";
import { silentLogger } from "../../node-agent/log.ts";
import { enforcesFormat } from "../../schema/protocol.ts";
import { mlxSkipReason } from "./mlx-setup.ts";

const skip = await mlxSkipReason();
let dir: string;
let engine: MlxEngine | undefined;

beforeAll(async () => {
  if (skip) return;
  dir = await mkdtemp(join(tmpdir(), "orchard-mlx-structured-"));
  engine = createMlxEngine({
    models: [{ name: "demo", path: await ensureDemoMlxModel(dir) }],
    capacity: 1,
    log: silentLogger,
  });
}, 120_000);

afterAll(async () => {
  await engine?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function text(request: GenerationRequest): Promise<{ text: string; finishReason: string }> {
  const generation = (engine as MlxEngine).generate(request, new AbortController().signal);
  let out = "";
  for await (const piece of generation) out += piece.text;
  return { text: out, finishReason: (await generation.result).finishReason };
}

describe.skipIf(skip !== undefined)(`MLX and format${skip ? ` (skipped: ${skip})` : ""}`, () => {
  it("ignores format: the same greedy text as without it, and no enforcing capability", async () => {
    const base: GenerationRequest = {
      model: "demo",
      prompt: "JSON:",
      params: { maxTokens: 24, temperature: 0 },
    };
    const plain = await text(base);
    const schema = { type: "object", properties: { a: { type: "boolean" } }, required: ["a"] };
    expect(await text({ ...base, format: schema })).toEqual(plain);
    expect(await text({ ...base, format: "json" })).toEqual(plain);
    expect(plain.text).not.toBe("");
    const described = (await engine?.describe?.()) ?? [];
    expect(described.length).toBeGreaterThan(0);
    expect(described.some(enforcesFormat)).toBe(false);
  });
});
