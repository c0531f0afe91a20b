// The llama.cpp engine against the real demo model: streaming, limits, stop sequences, determinism,
// chat templates, cancellation, concurrency, and every error code it can produce.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, type Llama, LlamaCompletion, type LlamaModel, type Token } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureDemoModel } from "../../node-agent/demo-model.ts";
import {
  EngineError,
  type Generation,
  type GenerationPiece,
  type GenerationRequest,
} from "../../node-agent/engines/engine.ts";
import { LlamaCppEngine } from "../../node-agent/engines/llamacpp/index.ts";

const MODEL = "demo";
const PROMPTS = ["Once upon a time", "they were all there", "Hello, world!\n", "the people said"];

let dir: string;
let modelPath: string;
let engine: LlamaCppEngine;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "orchard-llamacpp-"));
  modelPath = await ensureDemoModel(dir);
  const good = await readFile(modelPath);
  await writeFile(join(dir, "garbage.gguf"), Buffer.from("GGUF but not really a model ".repeat(20)));
  await writeFile(join(dir, "truncated.gguf"), good.subarray(0, Math.floor(good.length / 2)));
  await writeFile(
    join(dir, "headless.gguf"),
    renameKey(good, "llama.attention.head_count", "llama.attention.head_cOunt"),
  );
  engine = new LlamaCppEngine({
    models: [
      { name: MODEL, path: modelPath },
      { name: "garbage", path: join(dir, "garbage.gguf") },
      { name: "truncated", path: join(dir, "truncated.gguf") },
      { name: "headless", path: join(dir, "headless.gguf") },
      { name: "missing", path: join(dir, "missing.gguf") },
    ],
    capacity: 4,
    threads: 1,
  });
});

afterAll(async () => {
  await engine?.close();
  await rm(dir, { recursive: true, force: true });
});

/** The same file with one metadata key renamed (same length), so llama.cpp no longer finds it. */
function renameKey(gguf: Buffer, key: string, renamed: string): Buffer {
  const needle = Buffer.alloc(8 + key.length);
  needle.writeBigUInt64LE(BigInt(key.length));
  needle.write(key, 8);
  const at = gguf.indexOf(needle);
  if (at < 0 || renamed.length !== key.length) throw new Error(`cannot rename ${key}`);
  const copy = Buffer.from(gguf);
  copy.write(renamed, at + 8);
  return copy;
}

function request(
  overrides: Partial<GenerationRequest> & { params?: Partial<GenerationRequest["params"]> } = {},
) {
  const { params, ...rest } = overrides;
  return {
    model: MODEL,
    ...(rest.messages ? {} : { prompt: PROMPTS[0] }),
    ...rest,
    params: { maxTokens: 32, temperature: 0, ...params },
  } as GenerationRequest;
}

async function collect(generation: Generation) {
  const pieces: GenerationPiece[] = [];
  for await (const piece of generation) pieces.push(piece);
  const result = await generation.result;
  return { pieces, text: pieces.map((p) => p.text).join(""), ...result };
}

async function run(req: GenerationRequest, signal = new AbortController().signal) {
  return collect(engine.generate(req, signal));
}

/** Both the iterator and `result` fail, with the same EngineError. */
async function expectFailure(generation: Generation, code: EngineError["code"]) {
  const pieces: GenerationPiece[] = [];
  let thrown: unknown;
  try {
    for await (const piece of generation) pieces.push(piece);
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(EngineError);
  expect((thrown as EngineError).code).toBe(code);
  await expect(generation.result).rejects.toBe(thrown);
  return pieces;
}

describe("models", () => {
  it("lists configured models, loads one, and reports its context length", async () => {
    const before = await engine.listModels();
    expect(before.map((m) => m.name)).toEqual([MODEL, "garbage", "truncated", "headless", "missing"]);
    expect(before.every((m) => m.engine === "llamacpp")).toBe(true);
    const info = await engine.load(MODEL);
    expect(info).toEqual({
      name: MODEL,
      engine: "llamacpp",
      contextLength: 1024,
      loaded: true,
      footprintBytes: expect.any(Number),
    });
    // Weights (~0.6 MB) plus four 1024-token contexts: more than the file, well under 100 MB.
    expect(info.footprintBytes).toBeGreaterThan(600_000);
    expect(info.footprintBytes).toBeLessThan(100_000_000);
    const after = await engine.listModels();
    expect(after.find((m) => m.name === MODEL)).toEqual(info);
    expect(after.find((m) => m.name === "garbage")?.loaded).toBe(false);
  });

  it("serves versioned model ids exactly as configured, and refuses an id with two versions", async () => {
    expect(() => new LlamaCppEngine({ models: [{ name: "demo:1:2", path: modelPath }] })).toThrow(
      'invalid model name "demo:1:2"',
    );
    const versioned = new LlamaCppEngine({
      models: [
        { name: "demo:1.0", path: modelPath },
        { name: "demo:2.0", path: modelPath },
      ],
      capacity: 1,
      threads: 1,
    });
    try {
      expect((await versioned.listModels()).map((m) => [m.name, m.loaded])).toEqual([
        ["demo:1.0", false],
        ["demo:2.0", false],
      ]);
      expect(await versioned.load("demo:2.0")).toEqual({
        name: "demo:2.0",
        engine: "llamacpp",
        contextLength: 1024,
        loaded: true,
        footprintBytes: expect.any(Number),
      });
      // Ids match exactly: choosing a version for a bare name is the hub's job, not the agent's.
      await expect(versioned.load("demo")).rejects.toMatchObject({ code: "MODEL_NOT_FOUND" });
      await expect(versioned.unload("demo:1:2")).rejects.toMatchObject({ code: "MODEL_NOT_FOUND" });
      const generation = versioned.generate(
        request({ model: "demo:2.0", params: { maxTokens: 8 } }),
        new AbortController().signal,
      );
      expect((await collect(generation)).text).toBe((await run(request({ params: { maxTokens: 8 } }))).text);
    } finally {
      await versioned.close();
    }
  });

  it("fails with MODEL_NOT_FOUND for a model it was not given", async () => {
    await expectFailure(
      engine.generate(request({ model: "no-such-model" }), new AbortController().signal),
      "MODEL_NOT_FOUND",
    );
    await expect(engine.load("no-such-model")).rejects.toMatchObject({ code: "MODEL_NOT_FOUND" });
  });

  it.each(["garbage", "truncated", "headless", "missing"])(
    "fails with MODEL_LOAD_FAILED for a %s file, and keeps serving",
    async (name) => {
      // A missing attention.head_count aborts the whole process inside llama.cpp unless caught first.
      await expect(engine.load(name)).rejects.toMatchObject({
        name: "EngineError",
        code: "MODEL_LOAD_FAILED",
      });
      await expectFailure(
        engine.generate(request({ model: name }), new AbortController().signal),
        "MODEL_LOAD_FAILED",
      );
      expect((await run(request({ params: { maxTokens: 3 } }))).usage.completionTokens).toBe(3);
    },
  );
});

describe("generation", () => {
  let model: LlamaModel;
  let llama: Llama;

  beforeAll(async () => {
    // An independent reference: node-llama-cpp's own completion API on a separately loaded copy.
    llama = await getLlama({ gpu: false, build: "never", maxThreads: 1 });
    model = await llama.loadModel({ modelPath });
  });
  afterAll(async () => {
    // Not llama.dispose(): that frees llama.cpp's process-wide backend under the engine too.
    await model?.dispose();
  });

  /** node-llama-cpp's own greedy completion of a raw prompt, on the reference copy of the model. */
  async function referenceCompletion(prompt: string, maxTokens: number): Promise<string> {
    const context = await model.createContext({ contextSize: 1024 });
    try {
      const completion = new LlamaCompletion({ contextSequence: context.getSequence() });
      return await completion.generateCompletion(prompt, { maxTokens, temperature: 0, repeatPenalty: false });
    } finally {
      await context.dispose();
    }
  }

  /** Greedy text after exactly these prompt tokens, straight from a context sequence. */
  async function referenceAfterTokens(prompt: Token[], count: number): Promise<string> {
    const context = await model.createContext({ contextSize: 1024 });
    try {
      const out: Token[] = [];
      for await (const token of context.getSequence().evaluate(prompt, { temperature: 0 })) {
        out.push(token);
        if (out.length >= count) break;
      }
      return model.detokenize(out, false, prompt.slice(-16));
    } finally {
      await context.dispose();
    }
  }

  it("streams several pieces that add up to exactly what llama.cpp generates", async () => {
    const out = await run(request({ params: { maxTokens: 48 } }));
    expect(out.pieces.length).toBeGreaterThan(5);
    expect(out.pieces.every((p) => p.text.length > 0 && p.tokens > 0)).toBe(true);
    expect(out.pieces.reduce((sum, p) => sum + p.tokens, 0)).toBe(out.usage.completionTokens);

    expect(out.text).toBe(await referenceCompletion(PROMPTS[0] as string, 48));
    // BOS plus the prompt's own tokens.
    expect(out.usage.promptTokens).toBe(1 + model.tokenize(PROMPTS[0] as string).length);
  });

  it("stops at maxTokens with exactly that many completion tokens", async () => {
    for (const maxTokens of [1, 7, 100]) {
      const out = await run(request({ params: { maxTokens } }));
      expect(out.finishReason).toBe("length");
      expect(out.usage.completionTokens).toBe(maxTokens);
      expect(out.pieces.reduce((sum, p) => sum + p.tokens, 0)).toBe(maxTokens);
    }
  });

  it("ends at the context window with finishReason length when maxTokens would overrun it", async () => {
    const prompt = "the ".repeat(1000);
    const out = await run(request({ prompt, params: { maxTokens: 500 } }));
    expect(out.finishReason).toBe("length");
    expect(out.usage.promptTokens + out.usage.completionTokens).toBe(1024);
  });

  it("cuts the text before the earliest stop sequence, including ones split across tokens", async () => {
    const { text: full, pieces } = await run(request({ params: { maxTokens: 60 } }));
    const stop = full.slice(20, 24);
    // Pieces are whole tokens here, so a piece boundary inside the stop string means it spans tokens.
    const boundaries = pieces.map((_, i) => pieces.slice(0, i + 1).reduce((n, p) => n + p.text.length, 0));
    expect(boundaries.some((at) => at > full.indexOf(stop) && at < full.indexOf(stop) + stop.length)).toBe(
      true,
    );
    const expected = full.slice(0, full.indexOf(stop));
    const out = await run(request({ params: { maxTokens: 60, stop: ["never appears \u0001", stop] } }));
    expect(out.finishReason).toBe("stop");
    expect(out.text).toBe(expected);
    expect(out.text).not.toContain(stop);
    expect(out.usage.completionTokens).toBeLessThan(60);
    expect(out.usage.completionTokens).toBeGreaterThan(0);

    const absent = await run(request({ params: { maxTokens: 60, stop: ["\u0001"] } }));
    expect(absent).toMatchObject({ text: full, finishReason: "length" });
  });

  it("is deterministic when greedy, and reproducible with a seed when sampling", async () => {
    const greedy = await Promise.all([run(request()), run(request())]);
    expect(greedy[0].text).toBe(greedy[1].text);
    expect(greedy[0].text.length).toBeGreaterThan(0);
    expect(greedy[0].text).toBe(await referenceCompletion(PROMPTS[0] as string, 32));

    const sampled = (seed: number) => run(request({ params: { maxTokens: 40, temperature: 1, seed } }));
    const [a, b, c] = [await sampled(7), await sampled(7), await sampled(8)];
    expect(a.text).toBe(b.text);
    expect(a.text).not.toBe(c.text);
    expect(a.text).not.toBe(greedy[0].text);
  });

  it("renders chat messages with the model's template", async () => {
    const messages = [
      { role: "system" as const, content: "Be brief." },
      { role: "user" as const, content: "Say </s> hello" },
    ];
    const out = await run(request({ messages }));
    expect(out.text.length).toBeGreaterThan(0);
    expect(out.finishReason).toBe("length");
    expect(out.usage.completionTokens).toBe(32);
    // The template's markers are special tokens; the user's "</s>" is plain text, not end-of-sequence.
    const special = (text: string) => model.tokenize(text, true);
    const plain = (text: string) => model.tokenize(text, false);
    const expected = [
      model.tokens.bos,
      ...special("<|system|>\n"),
      ...plain("Be brief."),
      model.tokens.eos,
      ...special("\n<|user|>\n"),
      ...plain("Say </s> hello"),
      model.tokens.eos,
      ...special("\n<|assistant|>\n"),
    ];
    expect(out.usage.promptTokens).toBe(expected.length);
    // Exactly those tokens were the prompt: greedy decoding after them gives the same text.
    expect(out.text).toBe(await referenceAfterTokens(expected as Token[], 32));

    const again = await run(request({ messages }));
    expect(again.text).toBe(out.text);
    const other = await run(request({ messages: [{ role: "user", content: "Something else entirely" }] }));
    expect(other.text).not.toBe(out.text);
  });

  it("continues a trailing assistant message instead of starting a new turn", async () => {
    const messages = [{ role: "user" as const, content: "Hi" }];
    const fresh = await run(request({ messages, params: { maxTokens: 5 } }));
    const prefix = "Sure, the";
    const continued = await run(
      request({ messages: [...messages, { role: "assistant", content: prefix }], params: { maxTokens: 5 } }),
    );
    // Exactly the prefix's tokens were added: no end-of-turn marker and no new assistant header.
    expect(continued.usage.promptTokens).toBe(fresh.usage.promptTokens + model.tokenize(prefix).length);
    expect(continued.text).not.toBe(fresh.text);
    const special = (text: string) => model.tokenize(text, true);
    const turn = [model.tokens.bos, ...special("<|user|>\n"), ...model.tokenize("Hi"), model.tokens.eos];
    const header = [...turn, ...special("\n<|assistant|>\n")] as Token[];
    expect(fresh.text).toBe(await referenceAfterTokens(header, 5));
    expect(continued.text).toBe(await referenceAfterTokens([...header, ...model.tokenize(prefix)], 5));
  });
});

describe("cancellation", () => {
  it("stops promptly when the signal fires, then serves the next request as if nothing happened", async () => {
    const baseline = await run(request({ params: { maxTokens: 20 } }));
    const controller = new AbortController();
    const generation = engine.generate(request({ params: { maxTokens: 1000 } }), controller.signal);
    const pieces: GenerationPiece[] = [];
    let abortedAt = 0;
    for await (const piece of generation) {
      pieces.push(piece);
      if (pieces.length === 5) {
        abortedAt = performance.now();
        controller.abort();
      }
    }
    const result = await generation.result;
    expect(performance.now() - abortedAt).toBeLessThan(250);
    expect(result.finishReason).toBe("cancelled");
    expect(result.usage.completionTokens).toBeGreaterThanOrEqual(5);
    expect(result.usage.completionTokens).toBeLessThan(50);
    expect(pieces.reduce((sum, p) => sum + p.tokens, 0)).toBe(result.usage.completionTokens);

    const after = await run(request({ params: { maxTokens: 20 } }));
    expect(after).toMatchObject({ text: baseline.text, finishReason: "length" });
  });

  it("reports cancelled without generating when the signal has already fired", async () => {
    const out = await run(request(), AbortSignal.abort());
    expect(out).toMatchObject({ text: "", finishReason: "cancelled", usage: { completionTokens: 0 } });
    expect(out.usage.promptTokens).toBeGreaterThan(0);
    // The prompt was counted as for a request that runs.
    expect(out.usage.promptTokens).toBe(
      (await run(request({ params: { maxTokens: 1 } }))).usage.promptTokens,
    );
  });

  it("stops generating when the consumer stops iterating", async () => {
    const generation = engine.generate(
      request({ params: { maxTokens: 1000 } }),
      new AbortController().signal,
    );
    for await (const _piece of generation) break;
    const result = await generation.result;
    expect(result.finishReason).toBe("cancelled");
    expect(result.usage.completionTokens).toBeLessThan(50);
  });
});

describe("concurrency", () => {
  it("runs capacity generations at once, each with the same text as alone, and queues the rest", async () => {
    const alone = [];
    for (const prompt of PROMPTS)
      alone.push((await run(request({ prompt, params: { maxTokens: 120 } }))).text);
    expect(new Set(alone).size).toBe(PROMPTS.length);

    const prompts = [...PROMPTS, ...PROMPTS.slice(0, 2)];
    const together = await Promise.all(
      prompts.map((prompt) => run(request({ prompt, params: { maxTokens: 120 } }))),
    );
    expect(together.map((out) => out.text)).toEqual([...alone, ...alone.slice(0, 2)]);
    expect(together.every((out) => out.finishReason === "length" && out.usage.completionTokens === 120)).toBe(
      true,
    );
  });

  it("cancels a generation still waiting for a free sequence", async () => {
    const busy = PROMPTS.map(() =>
      engine.generate(request({ params: { maxTokens: 300 } }), new AbortController().signal),
    );
    const waiting = engine.generate(request(), AbortSignal.timeout(5));
    expect(await collect(waiting)).toMatchObject({
      finishReason: "cancelled",
      usage: { completionTokens: 0 },
    });
    for (const generation of busy) expect((await collect(generation)).usage.completionTokens).toBe(300);
  });

  it("can share one context across sequences instead (batched, not bit-for-bit reproducible)", async () => {
    const shared = new LlamaCppEngine({
      models: [{ name: MODEL, path: modelPath }],
      capacity: 4,
      sharedContext: true,
    });
    try {
      const outs = await Promise.all(
        PROMPTS.map((prompt) =>
          collect(
            shared.generate(request({ prompt, params: { maxTokens: 100 } }), new AbortController().signal),
          ),
        ),
      );
      for (const out of outs)
        expect(out).toMatchObject({ finishReason: "length", usage: { completionTokens: 100 } });
    } finally {
      await shared.close();
    }
  });
});

describe("request errors", () => {
  it("fails with CONTEXT_OVERFLOW when the prompt does not fit the context", async () => {
    await expectFailure(
      engine.generate(request({ prompt: "the ".repeat(1100) }), new AbortController().signal),
      "CONTEXT_OVERFLOW",
    );
    const messages = [{ role: "user" as const, content: "the ".repeat(1100) }];
    await expectFailure(
      engine.generate(request({ messages }), new AbortController().signal),
      "CONTEXT_OVERFLOW",
    );
  });

  it("fails with INVALID_REQUEST for malformed requests", async () => {
    const invalid: GenerationRequest[] = [
      { model: MODEL, params: { maxTokens: 5 } },
      { model: MODEL, prompt: "x", messages: [{ role: "user", content: "x" }], params: { maxTokens: 5 } },
      { model: MODEL, messages: [], params: { maxTokens: 5 } },
      { model: MODEL, prompt: "x", params: { maxTokens: 0 } },
      { model: MODEL, prompt: "x", params: { maxTokens: 5, temperature: -1 } },
    ];
    for (const req of invalid)
      await expectFailure(engine.generate(req, new AbortController().signal), "INVALID_REQUEST");
  });

  it("fails a generation cut off by unload after some pieces, then reloads on the next request", async () => {
    const generation = engine.generate(
      request({ params: { maxTokens: 1000 } }),
      new AbortController().signal,
    );
    const pieces: GenerationPiece[] = [];
    let thrown: unknown;
    try {
      for await (const piece of generation) {
        pieces.push(piece);
        if (pieces.length === 3) void engine.unload(MODEL);
      }
    } catch (err) {
      thrown = err;
    }
    expect(pieces.length).toBeGreaterThanOrEqual(3);
    expect(thrown).toMatchObject({ name: "EngineError", code: "ENGINE_ERROR", retryable: true });
    await expect(generation.result).rejects.toBe(thrown);
    expect((await engine.listModels()).find((m) => m.name === MODEL)?.loaded).toBe(false);

    expect((await run(request({ params: { maxTokens: 4 } }))).usage.completionTokens).toBe(4);
    expect((await engine.listModels()).find((m) => m.name === MODEL)?.loaded).toBe(true);
  });

  it("fails in-flight and later generations once closed", async () => {
    const inFlight = engine.generate(request({ params: { maxTokens: 1000 } }), new AbortController().signal);
    const iterator = inFlight[Symbol.asyncIterator]();
    await iterator.next();
    await engine.close();
    await expect(inFlight.result).rejects.toMatchObject({ code: "ENGINE_ERROR" });
    await expectFailure(engine.generate(request(), new AbortController().signal), "ENGINE_ERROR");
    await expect(engine.load(MODEL)).rejects.toMatchObject({ code: "ENGINE_ERROR" });
  });
});
