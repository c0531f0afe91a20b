// The MLX demo model, read back by hand without MLX: deterministic bytes in mlx-community's layout,
// the same weights in float32, bfloat16 and 4-bit, a byte-level BPE tokenizer with a chat
// template, and a cache folder written once and repaired when damaged.
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  DEMO_MLX_DTYPES,
  DEMO_MLX_MODEL_NAME,
  demoMlxModelFolder,
  ensureDemoMlxModel,
  generateDemoMlxModel,
} from "../../node-agent/demo-mlx-model.ts";

/** Changing the generator changes these: then also bump VERSION in demo-mlx-model.ts. */
const WEIGHTS_SHA256: Record<string, string> = {
  float32: "bf5f6c6761a1a3c24825421bfa12c722ec017f255eb9f3d0dbcfa12079112ccb",
  bfloat16: "a3c1dab83847c6581ce92eac1cdcfbd174c56ab619f9aad5fc1a880d74d0ceeb",
  "4bit": "cc254811ec98126a2193bb10513c20a7c5c5dd8abdd141b24b51a22a99e561fe",
};

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "orchard-mlx-demo-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Tensor {
  dtype: string;
  shape: number[];
  data: Buffer;
}

/** safetensors by hand: u64 header length, JSON header, then the tensors at their offsets. */
function parseSafetensors(bytes: Uint8Array): Map<string, Tensor> {
  const buf = Buffer.from(bytes);
  const length = Number(buf.readBigUInt64LE(0));
  expect((8 + length) % 8).toBe(0);
  const header = JSON.parse(buf.subarray(8, 8 + length).toString("utf8")) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const tensors = new Map<string, Tensor>();
  let expected = 0;
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const [start, end] = info.data_offsets;
    expect(start).toBe(expected);
    expected = end;
    tensors.set(name, {
      dtype: info.dtype,
      shape: info.shape,
      data: buf.subarray(8 + length + start, 8 + length + end),
    });
  }
  expect(8 + length + expected).toBe(buf.length);
  return tensors;
}

function floats(t: Tensor): Float32Array {
  if (t.dtype === "F32")
    return new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.length));
  expect(t.dtype).toBe("BF16");
  const out = new Float32Array(t.data.length / 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < out.length; i++) view.setUint16(4 * i + 2, t.data.readUInt16LE(2 * i), true);
  return out;
}

/** MLX affine 4-bit: eight levels per uint32 (first lowest), value = level * scale + bias per 64. */
/** Bitwise equality of two float arrays (vitest's deep equality takes seconds on a million floats). */
function sameFloats(a: Float32Array, b: Float32Array, what: string): void {
  expect(a.length, what).toBe(b.length);
  expect(
    Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(
      Buffer.from(b.buffer, b.byteOffset, b.byteLength),
    ),
    what,
  ).toBe(true);
}

function dequantize(weight: Tensor, scales: Tensor, biases: Tensor): Float32Array {
  const [rows, packed] = weight.shape as [number, number];
  const cols = packed * 8;
  const s = floats(scales);
  const b = floats(biases);
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < out.length; i++) {
    const word = weight.data.readUInt32LE(Math.floor(i / 8) * 4);
    const level = (word >>> (4 * (i % 8))) & 15;
    const group = Math.floor(i / cols) * (cols / 64) + Math.floor((i % cols) / 64);
    out[i] = level * (s[group] as number) + (b[group] as number);
  }
  return out;
}

describe("the generated folder", () => {
  it("is deterministic and in mlx-community's layout", () => {
    const a = generateDemoMlxModel();
    const b = generateDemoMlxModel();
    expect([...a.keys()].sort()).toEqual(
      ["README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"].sort(),
    );
    for (const [name, bytes] of a)
      expect(Buffer.from(bytes).equals(b.get(name) as Uint8Array), name).toBe(true);
    const config = JSON.parse(Buffer.from(a.get("config.json") as Uint8Array).toString());
    expect(config).toMatchObject({
      model_type: "llama",
      hidden_size: 256,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      max_position_embeddings: 1024,
      tie_word_embeddings: false,
    });
    expect(config._comment).toMatch(/random weights/i);
    expect(demoMlxModelFolder()).toBe(`${DEMO_MLX_MODEL_NAME}-v1-bf16`);
  });

  it("pins each variant's weights (a change must bump the version)", () => {
    for (const dtype of DEMO_MLX_DTYPES) {
      const bytes = generateDemoMlxModel({ dtype }).get("model.safetensors") as Uint8Array;
      const sha = createHash("sha256").update(bytes).digest("hex");
      expect(sha, dtype).toBe(WEIGHTS_SHA256[dtype]);
    }
  });

  it("holds the same weights in float32, bfloat16 and 4-bit", () => {
    const read = (dtype: (typeof DEMO_MLX_DTYPES)[number]) =>
      parseSafetensors(generateDemoMlxModel({ dtype }).get("model.safetensors") as Uint8Array);
    const f32 = read("float32");
    const bf16 = read("bfloat16");
    const q4 = read("4bit");
    expect([...bf16.keys()]).toEqual([...f32.keys()]);
    let quantized = 0;
    for (const [name, tensor] of f32) {
      expect(tensor.dtype).toBe("F32");
      const reference = floats(tensor);
      // A model of all zeros would pass the comparisons too.
      if (name.endsWith("proj.weight"))
        expect(new Set(reference.subarray(-4096)).size, name).toBeGreaterThan(8);
      expect(bf16.get(name)?.dtype).toBe("BF16");
      sameFloats(floats(bf16.get(name) as Tensor), reference, `${name} in bfloat16`);
      if (q4.has(`${name.replace(/\.weight$/, "")}.scales`)) {
        const base = name.replace(/\.weight$/, "");
        expect(q4.get(name)?.dtype).toBe("U32");
        const values = dequantize(
          q4.get(name) as Tensor,
          q4.get(`${base}.scales`) as Tensor,
          q4.get(`${base}.biases`) as Tensor,
        );
        sameFloats(values, reference, `${name} in 4-bit`);
        quantized++;
      } else {
        sameFloats(floats(q4.get(name) as Tensor), reference, `${name} beside the 4-bit ones`);
      }
    }
    // Embedding, 7 projections in each of 2 layers, and the output head.
    expect(quantized).toBe(16);
    const config = JSON.parse(
      Buffer.from(generateDemoMlxModel({ dtype: "4bit" }).get("config.json") as Uint8Array).toString(),
    );
    expect(config.quantization).toEqual({ group_size: 64, bits: 4 });
  });

  it("has a byte-level BPE tokenizer whose specials are the chat template's markers", () => {
    const files = generateDemoMlxModel();
    const tokenizer = JSON.parse(Buffer.from(files.get("tokenizer.json") as Uint8Array).toString());
    const config = JSON.parse(Buffer.from(files.get("tokenizer_config.json") as Uint8Array).toString());
    expect(tokenizer.model.type).toBe("BPE");
    expect(tokenizer.pre_tokenizer.type).toBe("ByteLevel");
    const specials = tokenizer.added_tokens.map((t: { content: string }) => t.content);
    expect(specials).toEqual(["<|begin|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]);
    expect(config).toMatchObject({ bos_token: "<|begin|>", eos_token: "<|end|>" });
    expect(config.chat_template).toContain("add_generation_prompt");
    const modelConfig = JSON.parse(Buffer.from(files.get("config.json") as Uint8Array).toString());
    const vocabSize = Object.keys(tokenizer.model.vocab).length + specials.length;
    expect(modelConfig.vocab_size).toBe(vocabSize);
    // Every merge joins two tokens that exist into one that does.
    for (const merge of tokenizer.model.merges as string[]) {
      const [left, right] = merge.split(" ") as [string, string];
      expect(tokenizer.model.vocab[left + right], merge).toBeDefined();
    }
  });
});

describe("the cache", () => {
  it("writes the folder on first use, reuses it, and repairs a damaged file", async () => {
    const folder = await ensureDemoMlxModel(dir);
    expect(folder).toBe(join(dir, demoMlxModelFolder()));
    const weights = join(folder, "model.safetensors");
    const first = await stat(weights);
    expect(await ensureDemoMlxModel(dir)).toBe(folder);
    expect((await stat(weights)).mtimeMs).toBe(first.mtimeMs);
    const good = await readFile(weights);
    const damaged = Buffer.from(good);
    damaged.writeUInt8(damaged.readUInt8(damaged.length - 1) ^ 0xff, damaged.length - 1);
    await writeFile(weights, damaged);
    await ensureDemoMlxModel(dir);
    expect((await readFile(weights)).equals(good)).toBe(true);
  });

  it("survives concurrent writers, each variant in a folder of its own", async () => {
    const folders = await Promise.all([
      ensureDemoMlxModel(dir, { dtype: "4bit" }),
      ensureDemoMlxModel(dir, { dtype: "4bit" }),
      ensureDemoMlxModel(dir, { dtype: "float32" }),
    ]);
    expect(folders[0]).toBe(folders[1]);
    expect(folders[2]).not.toBe(folders[0]);
    const expected = generateDemoMlxModel({ dtype: "4bit" }).get("model.safetensors") as Uint8Array;
    expect((await readFile(join(folders[0] as string, "model.safetensors"))).equals(expected)).toBe(true);
  });
});
