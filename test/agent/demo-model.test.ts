// The built-in demo model: deterministic bytes, a well-formed GGUF, loadable by llama.cpp, and
// random weights that still only ever write printable ASCII.
import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, type Llama, type LlamaModel, readGgufFileInfo, type Token } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  DEMO_MODEL_FILE,
  DEMO_MODEL_NAME,
  demoModelFile,
  ensureDemoModel,
  generateDemoModel,
} from "../../node-agent/demo-model.ts";

/** Changing the generator changes this hash: then also bump the version in DEMO_MODEL_FILE. */
const DEMO_MODEL_SHA256 = "dafc5b9d1257cc686e33042ea17e492f7d85801398bd15fb880b8344e9ec4e6d";
/** Variant 2, the registry's second version in e2e tests; pinned for the same reason. */
const DEMO_VARIANT2_SHA256 = "21929a18a6192f7688baca94b6133a2212f6e8b9bf0777d9158071fc1edb15d5";
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "orchard-demo-model-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Reads GGUF v3 by hand, independently of any library: header, metadata keys, tensor infos. */
function parseGguf(bytes: Uint8Array) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const u32 = () => {
    const v = view.getUint32(at, true);
    at += 4;
    return v;
  };
  const u64 = () => {
    const v = Number(view.getBigUint64(at, true));
    at += 8;
    return v;
  };
  const str = () => {
    const n = u64();
    const s = new TextDecoder().decode(bytes.subarray(at, at + n));
    at += n;
    return s;
  };
  const sizes: Record<number, number> = {
    0: 1,
    1: 1,
    2: 2,
    3: 2,
    4: 4,
    5: 4,
    6: 4,
    7: 1,
    10: 8,
    11: 8,
    12: 8,
  };
  const readValue = (type: number): unknown => {
    if (type === 8) return str();
    if (type === 9) {
      const elementType = u32();
      const count = u64();
      return Array.from({ length: count }, () => readValue(elementType));
    }
    const size = sizes[type];
    if (size === undefined) throw new Error(`unknown GGUF type ${type}`);
    const v =
      type === 4 ? view.getUint32(at, true) : type === 6 ? view.getFloat32(at, true) : view.getUint8(at);
    at += size;
    return v;
  };
  const magic = new TextDecoder().decode(bytes.subarray(0, 4));
  at = 4;
  const version = u32();
  const tensorCount = u64();
  const metadataCount = u64();
  const metadata = new Map<string, unknown>();
  for (let i = 0; i < metadataCount; i++) {
    const key = str();
    metadata.set(key, readValue(u32()));
  }
  const tensors = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = str();
    const dims = u32();
    const ne = Array.from({ length: dims }, () => u64());
    tensors.push({ name, ne, type: u32(), offset: u64() });
  }
  const dataStart = Math.ceil(at / 32) * 32;
  return { magic, version, metadata, tensors, headerEnd: at, dataStart };
}

describe("generateDemoModel", () => {
  it("returns the same bytes every time, quickly", () => {
    const started = performance.now();
    const first = generateDemoModel();
    const elapsed = performance.now() - started;
    const second = generateDemoModel();
    expect(Buffer.from(first).equals(Buffer.from(second))).toBe(true);
    expect(createHash("sha256").update(first).digest("hex")).toBe(DEMO_MODEL_SHA256);
    expect(elapsed).toBeLessThan(500);
  });

  it("is a GGUF v3 llama file with the keys llama.cpp needs and aligned tensor data", () => {
    const bytes = generateDemoModel();
    const gguf = parseGguf(bytes);
    expect(gguf.magic).toBe("GGUF");
    expect(gguf.version).toBe(3);
    const m = gguf.metadata;
    expect(m.get("general.architecture")).toBe("llama");
    expect(m.get("general.name")).toBe(DEMO_MODEL_NAME);
    expect(m.get("general.alignment")).toBe(32);
    expect(m.get("llama.context_length")).toBe(1024);
    expect(m.get("llama.embedding_length")).toBe(64);
    expect(m.get("llama.block_count")).toBe(2);
    expect(m.get("llama.feed_forward_length")).toBe(128);
    expect(m.get("llama.attention.head_count")).toBe(4);
    expect(m.get("tokenizer.ggml.model")).toBe("llama");
    expect(m.get("tokenizer.chat_template")).toMatch(/<\|assistant\|>/);

    const tokens = m.get("tokenizer.ggml.tokens") as string[];
    expect(tokens.length).toBeGreaterThan(500);
    expect(tokens.length).toBeLessThan(560);
    expect(new Set(tokens).size).toBe(tokens.length);
    expect(m.get("llama.vocab_size")).toBe(tokens.length);
    expect((m.get("tokenizer.ggml.scores") as number[]).length).toBe(tokens.length);
    const types = m.get("tokenizer.ggml.token_type") as number[];
    expect(types.filter((t) => t === 6)).toHaveLength(256);
    expect(tokens).toContain("<0x0A>");
    expect(tokens).toContain("\u2581");
    expect(tokens).toContain("\u2581the");

    expect(gguf.tensors).toHaveLength(3 + 2 * 9);
    expect(gguf.tensors[0]).toMatchObject({ name: "token_embd.weight", ne: [64, tokens.length], type: 0 });
    expect(gguf.tensors.find((t) => t.name === "blk.1.ffn_down.weight")).toMatchObject({ ne: [128, 64] });
    let end = 0;
    for (const t of gguf.tensors) {
      expect(t.offset % 32).toBe(0);
      expect(t.offset).toBeGreaterThanOrEqual(end);
      end = t.offset + t.ne.reduce((a, b) => a * b, 1) * 4;
    }
    expect(gguf.dataStart + end).toBeLessThanOrEqual(bytes.length);
    expect(bytes.length - (gguf.dataStart + end)).toBeLessThan(32);
  });

  it("parses the same way in node-llama-cpp's GGUF reader", async () => {
    const path = await ensureDemoModel(dir);
    const info = await readGgufFileInfo(path, { sourceType: "filesystem" });
    expect(info.version).toBe(3);
    expect(info.metadata.general.architecture).toBe("llama");
    expect(info.tensorInfo?.map((t) => t.name)).toContain("output.weight");
  });
});

describe("demo model variant 2", () => {
  it("is deterministic, as large as variant 1, and other bytes", () => {
    const first = generateDemoModel({ variant: 2 });
    expect(sha256(first)).toBe(DEMO_VARIANT2_SHA256);
    expect(sha256(generateDemoModel({ variant: 2 }))).toBe(DEMO_VARIANT2_SHA256);
    expect(sha256(generateDemoModel({ variant: 1 }))).toBe(DEMO_MODEL_SHA256);
    expect(first.length).toBe(generateDemoModel().length);
    expect(DEMO_VARIANT2_SHA256).not.toBe(DEMO_MODEL_SHA256);
    expect(() => generateDemoModel({ variant: 3 as 2 })).toThrow(/no demo model variant 3/);
  });

  it("is cached under its own file name beside variant 1", async () => {
    const cache = join(dir, "variants");
    const v2 = await ensureDemoModel(cache, { variant: 2 });
    expect(v2).toBe(join(cache, demoModelFile(2)));
    expect(await ensureDemoModel(cache)).toBe(join(cache, DEMO_MODEL_FILE));
    expect(sha256(await readFile(v2))).toBe(DEMO_VARIANT2_SHA256);
    expect((await readdir(cache)).sort()).toEqual([DEMO_MODEL_FILE, demoModelFile(2)].sort());
  });
});

describe("ensureDemoModel", () => {
  it("writes the model once, atomically, and leaves a correct file alone", async () => {
    const cache = join(dir, "cache", "nested");
    const path = await ensureDemoModel(cache);
    expect(path).toBe(join(cache, DEMO_MODEL_FILE));
    expect(Buffer.from(await readFile(path)).equals(Buffer.from(generateDemoModel()))).toBe(true);
    const before = await stat(path);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await ensureDemoModel(cache)).toBe(path);
    expect((await stat(path)).mtimeMs).toBe(before.mtimeMs);
    expect(await readdir(cache)).toEqual([DEMO_MODEL_FILE]);
  });

  it("replaces a damaged file, and survives concurrent callers", async () => {
    const cache = join(dir, "damaged");
    const path = await ensureDemoModel(cache);
    const flipped = Buffer.from(generateDemoModel());
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] as number) ^ 0xff;
    await writeFile(path, flipped);
    expect(await ensureDemoModel(cache)).toBe(path);
    expect(Buffer.from(await readFile(path)).equals(Buffer.from(generateDemoModel()))).toBe(true);
    await writeFile(path, "truncated");
    const paths = await Promise.all([ensureDemoModel(cache), ensureDemoModel(cache), ensureDemoModel(cache)]);
    expect(new Set(paths)).toEqual(new Set([path]));
    expect((await stat(path)).size).toBe(generateDemoModel().length);
    expect(await readdir(cache)).toEqual([DEMO_MODEL_FILE]);
  });
});

describe("the demo model in llama.cpp", () => {
  let llama: Llama;
  let model: LlamaModel;

  beforeAll(async () => {
    llama = await getLlama({ gpu: false, build: "never", maxThreads: 1 });
    model = await llama.loadModel({ modelPath: await ensureDemoModel(dir) });
  });
  afterAll(async () => {
    // Not llama.dispose(): that frees llama.cpp's process-wide backend for good, under anyone else too.
    await model?.dispose();
  });

  it("loads with its vocabulary, special tokens and 1024-token context", () => {
    expect(model.trainContextSize).toBe(1024);
    expect(model.tokens.bos).toBe(1);
    expect(model.tokens.eos).toBe(2);
    // Words and their space-prefixed forms merge into single tokens.
    expect(model.tokenize("the")).toHaveLength(1);
    expect(model.tokenize(" there")).toHaveLength(1);
    expect(model.detokenize(model.tokenize("they were all there"))).toBe("they were all there");
    // Characters outside the vocabulary fall back to byte tokens and round-trip.
    expect(model.detokenize(model.tokenize("naïve ✓"))).toBe("naïve ✓");
    expect(model.tokenize("<|user|>", true)).toHaveLength(1);
    expect(model.tokenize("<|user|>", false).length).toBeGreaterThan(1);
  });

  /** Greedy and sampled text from a fresh context, up to the end of the 1024-token window. */
  async function generate(prompt: Token[], count: number, temperature: number): Promise<string> {
    const context = await model.createContext({ contextSize: 1024 });
    try {
      const sequence = context.getSequence();
      const out: Token[] = [];
      for await (const token of sequence.evaluate(prompt, { temperature, seed: 3 })) {
        out.push(token);
        if (out.length >= count) break;
      }
      expect(out).toHaveLength(count);
      return model.detokenize(out);
    } finally {
      await context.dispose();
    }
  }

  it("variant 2 writes other greedy text than variant 1 for the same prompt", async () => {
    const v2 = await llama.loadModel({ modelPath: await ensureDemoModel(dir, { variant: 2 }) });
    try {
      const greedy = async (m: LlamaModel) => {
        const context = await m.createContext({ contextSize: 256 });
        try {
          const out: Token[] = [];
          const prompt = [m.tokens.bos as Token, ...m.tokenize("Once upon a time")];
          for await (const token of context.getSequence().evaluate(prompt, { temperature: 0 })) {
            out.push(token);
            if (out.length >= 32) break;
          }
          return m.detokenize(out);
        } finally {
          await context.dispose();
        }
      };
      const one = await greedy(model);
      const two = await greedy(v2);
      expect(two.length).toBeGreaterThan(0);
      expect(two).toMatch(/^[\x20-\x7e\t\n]*$/);
      expect(two).not.toBe(one);
    } finally {
      await v2.dispose();
    }
  });

  it("only ever writes printable ASCII, tabs and newlines, even at the far end of its context", async () => {
    const printable = /^[\x20-\x7e\t\n]*$/;
    const bos = model.tokens.bos as Token;
    const short = [bos, ...model.tokenize("Once upon a time")];
    const long = [bos, ...model.tokenize("the people were all there. ".repeat(64))];
    expect(long.length).toBeGreaterThan(800);
    expect(long.length).toBeLessThan(1000);
    const texts = [
      await generate(short, 300, 0),
      await generate(short, 300, 1.5),
      await generate(long, 1023 - long.length, 1),
    ];
    for (const text of texts) {
      expect(text.length).toBeGreaterThan(0);
      expect(text).toMatch(printable);
    }
    // Random weights, but not a single repeated token.
    expect(new Set(texts[1]).size).toBeGreaterThan(10);
  });
});
