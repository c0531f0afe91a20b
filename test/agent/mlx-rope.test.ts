// The hand-written rope for llama3 rope scaling (node-mlx 0.0.7's fast.rope takes no freqs): equal
// to fast.rope where both apply, Meta's frequency schedule, and a llama3-scaled copy of the demo
// model through the engine — the same text as the plain model when the scaling is a no-op.
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureDemoMlxModel } from "../../node-agent/demo-mlx-model.ts";
import { createMlxEngine } from "../../node-agent/engines/mlx/index.ts";
import { llama3Freqs, ropeWithFreqs } from "../../node-agent/engines/mlx/rope.ts";
import { loadMlxRuntime, type MlxArray, type MlxRuntime } from "../../node-agent/engines/mlx/runtime.ts";
import { mlxSkipReason } from "./mlx-setup.ts";

const skip = await mlxSkipReason();
// Only float32 ops run in this process, which MLX's CPU backend supports (nothing here can abort).
const runtime: MlxRuntime | undefined = skip ? undefined : loadMlxRuntime();

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "orchard-mlx-rope-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function maxDifference(a: MlxArray, b: MlxArray): number {
  const mx = runtime?.mx as MlxRuntime["mx"] & {
    max(a: MlxArray): MlxArray;
    abs(a: MlxArray): MlxArray;
  };
  return mx.max(mx.abs(mx.subtract(a, b))).item();
}

describe("rope with explicit frequencies", () => {
  it("equals fast.rope given the standard frequencies, at any offset and for a partial rotation", (ctx) => {
    if (skip) ctx.skip(skip);
    const { mx } = runtime as MlxRuntime;
    const random = mx.random as MlxRuntime["mx"]["random"] & { normal(shape: number[]): MlxArray };
    const x = random.normal([1, 2, 5, 64]);
    for (const dims of [64, 32]) {
      const freqs = Array.from({ length: dims / 2 }, (_, i) => 10000 ** ((2 * i) / dims));
      const mine = ropeWithFreqs(mx, dims, freqs);
      for (const offset of [0, 7, 300]) {
        const reference = mx.fast.rope(x, dims, false, 10000, 1, offset);
        expect(
          maxDifference(mine.forward(x, offset), reference),
          `dims ${dims} offset ${offset}`,
        ).toBeLessThan(1e-4);
      }
    }
    // And it does rotate: a different offset gives a different result.
    const freqs = Array.from({ length: 32 }, (_, i) => 10000 ** ((2 * i) / 64));
    expect(maxDifference(ropeWithFreqs(mx, 64, freqs).forward(x, 0), x)).toBeGreaterThan(0.01);
  });

  it("follows Meta's llama3 schedule: high frequencies kept, low ones divided by the factor, blended between", () => {
    const plain = Array.from({ length: 64 }, (_, i) => 500000 ** ((2 * i) / 128));
    expect(llama3Freqs({ dims: 128, base: 500000, scaling: { factor: 1 } })).toEqual(plain);
    // Llama 3.1's own numbers.
    const scaled = llama3Freqs({
      dims: 128,
      base: 500000,
      scaling: { factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    });
    scaled.forEach((f, i) => {
      const wavelen = 2 * Math.PI * (plain[i] as number);
      if (wavelen < 8192 / 4) expect(f).toBe(plain[i]);
      else if (wavelen > 8192) expect(f).toBeCloseTo((plain[i] as number) * 8, 6);
      else {
        expect(f).toBeGreaterThan(plain[i] as number);
        expect(f).toBeLessThan((plain[i] as number) * 8);
      }
    });
    expect(scaled.filter((f, i) => f === plain[i]).length).toBeGreaterThan(20);
    expect(scaled.filter((f, i) => f > (plain[i] as number) * 7.99).length).toBeGreaterThan(20);
  });
});

describe("a llama3-scaled model in the engine", () => {
  it("runs, and writes the plain model's text when the scaling changes nothing", async (ctx) => {
    if (skip) ctx.skip(skip);
    const plain = await ensureDemoMlxModel(dir);
    const scaled = async (name: string, scaling: Record<string, number>) => {
      const folder = join(dir, name);
      await cp(plain, folder, { recursive: true });
      const config = JSON.parse(await readFile(join(folder, "config.json"), "utf8"));
      config.rope_scaling = { rope_type: "llama3", ...scaling };
      await writeFile(join(folder, "config.json"), JSON.stringify(config));
      return folder;
    };
    const engine = createMlxEngine({
      models: [
        { name: "plain", path: plain },
        { name: "noop", path: await scaled("noop", { factor: 1 }) },
        {
          name: "scaled",
          path: await scaled("scaled", {
            factor: 8,
            low_freq_factor: 1,
            high_freq_factor: 4,
            original_max_position_embeddings: 64,
          }),
        },
      ],
    });
    try {
      const text = async (model: string) => {
        const generation = engine.generate(
          { model, prompt: "Once upon a time", params: { maxTokens: 48, temperature: 0 } },
          new AbortController().signal,
        );
        let out = "";
        for await (const piece of generation) out += piece.text;
        expect((await generation.result).usage.completionTokens).toBe(48);
        return out;
      };
      const [a, b, c] = [await text("plain"), await text("noop"), await text("scaled")];
      expect(b).toBe(a);
      expect(c).not.toBe(a);
      expect(await text("scaled")).toBe(c);
    } finally {
      await engine.close();
    }
  });
});
