// The Ollama engine against a TEST DOUBLE of Ollama's HTTP API (test/helpers/ollama-double.ts; no
// Ollama server can be installed here): the conformance suite, then what only Ollama does — the
// server down at start, going away mid-stream and coming back, models not pulled, out of memory,
// the abort reaching the server, keep_alive, format and sampling options on the wire, /api/ps.
import { createServer } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { EngineError, type Generation, type GenerationPiece } from "../../node-agent/engines/engine.ts";
import { OllamaEngine, type OllamaEngineOptions } from "../../node-agent/engines/ollama/index.ts";
import { createLogger, type LogFields } from "../../node-agent/log.ts";
import type { ModelId } from "../../schema/model-id.ts";
import { OllamaDouble, type RecordedRequest } from "../helpers/ollama-double.ts";
import { engineConformance } from "./engine-conformance.ts";

const TAG = "tiny:latest";
const doubles: OllamaDouble[] = [];
const engines: OllamaEngine[] = [];

afterAll(async () => {
  for (const engine of engines) await engine.close();
  for (const double of doubles) await double.close();
});

async function startDouble(options: Parameters<typeof OllamaDouble.start>[0] = {}) {
  const double = await OllamaDouble.start({ models: [{ name: TAG, replyTokens: 5000 }], ...options });
  doubles.push(double);
  return double;
}

function engineFor(url: string, options: OllamaEngineOptions = {}) {
  const lines: LogFields[] = [];
  const engine = new OllamaEngine({
    baseUrl: url,
    refreshMs: 40,
    timeoutMs: 500,
    log: createLogger({ level: "debug", write: (l) => lines.push(JSON.parse(l)) }),
    ...options,
  });
  engines.push(engine);
  return { engine, lines };
}

async function collect(generation: Generation) {
  const pieces: GenerationPiece[] = [];
  let error: unknown;
  try {
    for await (const piece of generation) pieces.push(piece);
  } catch (err) {
    error = err;
  }
  const result = await generation.result.catch((err: unknown) => err);
  return { pieces, text: pieces.map((p) => p.text).join(""), error, result };
}

const prompt = (model: string, maxTokens = 16, extra: object = {}) => ({
  model,
  prompt: "Once upon a time",
  params: { maxTokens, temperature: 0 },
  ...extra,
});

const generations = (double: OllamaDouble): RecordedRequest[] =>
  double.requests.filter((r) => r.path === "/api/generate" || r.path === "/api/chat");

async function freePort(): Promise<number> {
  return new Promise((done) => {
    const srv = createServer().listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => done(port));
    });
  });
}

engineConformance({
  label: "Ollama (against the test double of its HTTP API)",
  engine: "ollama",
  model: TAG,
  prompt: "Once upon a time",
  create: async () => {
    const double = await startDouble();
    const { engine } = engineFor(double.url);
    await engine.start();
    return engine;
  },
});

describe("Ollama engine", () => {
  let double: OllamaDouble;

  beforeAll(async () => {
    double = await startDouble({
      models: [
        { name: TAG, replyTokens: 5000 },
        { name: "big:70b", outOfMemory: true, quantization: "Q8_0" },
      ],
    });
  });

  afterEach(() => {
    double.setModels([
      { name: TAG, replyTokens: 5000 },
      { name: "big:70b", outOfMemory: true, quantization: "Q8_0" },
    ]);
  });

  it("offers the server's tags and configured names, and describes itself", async () => {
    const { engine } = engineFor(double.url, { models: [{ name: "house-model", tag: "tiny" }] });
    await engine.start();
    const models = await engine.listModels();
    expect(models.map((m) => m.name).sort()).toEqual(["big:70b", "house-model", TAG]);
    expect(models.every((m) => m.engine === "ollama" && m.loaded === false)).toBe(true);
    expect(await engine.describe()).toEqual([
      { name: "ollama", capabilities: ["format"], quantizations: ["Q4_K_M", "Q8_0"] },
    ]);
    // Configured names alone when discovery is off; a name not on the server is not offered.
    const { engine: only } = engineFor(double.url, {
      discover: false,
      models: [
        { name: "house-model", tag: TAG },
        { name: "unpulled", tag: "nowhere:1b" },
      ],
    });
    await only.start();
    expect((await only.listModels()).map((m) => m.name)).toEqual(["house-model"]);
  });

  it("sends chat to /api/chat and a prompt raw to /api/generate, with the sampling options, keep_alive and format", async () => {
    const { engine } = engineFor(double.url, { keepAlive: "10m" });
    await engine.start();
    const schema = { type: "object", properties: { answer: { type: "string" } }, required: ["answer"] };
    const chat = await collect(
      engine.generate(
        {
          model: TAG,
          messages: [{ role: "user", content: "Hi" }],
          params: { maxTokens: 7, temperature: 0.7, topP: 0.9, seed: 42, stop: ["\n\n"] },
          format: schema,
        },
        new AbortController().signal,
      ),
    );
    expect(chat.result).toMatchObject({ finishReason: "length", usage: { completionTokens: 7 } });
    const [sent] = generations(double).slice(-1);
    expect(sent?.path).toBe("/api/chat");
    expect(sent?.body).toMatchObject({
      model: TAG,
      stream: true,
      messages: [{ role: "user", content: "Hi" }],
      keep_alive: "10m",
      format: schema,
      options: { num_predict: 7, temperature: 0.7, top_p: 0.9, seed: 42, stop: ["\n\n"] },
    });
    await collect(engine.generate({ ...prompt(TAG, 3), format: "json" }, new AbortController().signal));
    const [raw] = generations(double).slice(-1);
    expect(raw?.path).toBe("/api/generate");
    expect(raw?.body).toMatchObject({
      prompt: "Once upon a time",
      raw: true,
      format: "json",
      keep_alive: "10m",
    });
    expect(raw?.body?.options).toEqual({ num_predict: 3, temperature: 0 });
  });

  it("counts tokens as eval_count says when the server sends several in one line (held for a stop)", async () => {
    const { engine } = engineFor(double.url);
    await engine.start();
    const full = await collect(engine.generate(prompt(TAG, 12), new AbortController().signal));
    // A stop that never completes but keeps matching a word's start: the double holds text back.
    const word = full.pieces[3]?.text ?? "";
    const cut = await collect(
      engine.generate(
        { ...prompt(TAG, 12), params: { maxTokens: 12, temperature: 0, stop: [`${word}#`] } },
        new AbortController().signal,
      ),
    );
    expect(cut.text).toBe(full.text);
    expect(cut.pieces.length).toBeLessThan(full.pieces.length);
    const tokens = cut.pieces.reduce((n, p) => n + p.tokens, 0);
    expect(cut.result).toMatchObject({ finishReason: "length", usage: { completionTokens: 12 } });
    expect(tokens).toBe(12);
  });

  it("reports a pulled model's load from /api/ps, pins it with keep_alive -1 and unloads it with 0", async () => {
    const { engine } = engineFor(double.url);
    await engine.start();
    const info = await engine.load(TAG as ModelId);
    expect(info).toMatchObject({ name: TAG, engine: "ollama", loaded: true, contextLength: 4096 });
    expect(info.footprintBytes).toBe(1_000_000);
    expect(double.isLoaded(TAG)).toBe(true);
    expect(generations(double).at(-1)?.body).toMatchObject({ model: TAG, prompt: "", keep_alive: -1 });
    expect((await engine.listModels()).find((m) => m.name === TAG)?.loaded).toBe(true);
    // Its generations keep it there instead of resetting the server's keep_alive.
    await collect(engine.generate(prompt(TAG, 2), new AbortController().signal));
    expect(generations(double).at(-1)?.body).toMatchObject({ keep_alive: -1 });

    await engine.unload(TAG as ModelId);
    expect(generations(double).at(-1)?.body).toMatchObject({ model: TAG, keep_alive: 0 });
    expect(double.isLoaded(TAG)).toBe(false);
    await engine.refresh();
    expect((await engine.listModels()).find((m) => m.name === TAG)?.loaded).toBe(false);
  });

  it("loads a registry version from its tag under the version's id, with its context length, and forgets it after unload", async () => {
    const { engine } = engineFor(double.url, { discover: false });
    await engine.start();
    const id = "house:1.0.0" as ModelId;
    const info = await engine.load(id, {
      path: "tiny",
      engine: "ollama",
      parameters: { contextLength: 2048 },
    });
    expect(info).toMatchObject({ name: id, loaded: true, contextLength: 2048 });
    const out = await collect(engine.generate(prompt(id, 4), new AbortController().signal));
    expect(out.result).toMatchObject({ finishReason: "length" });
    expect(generations(double).at(-1)?.body).toMatchObject({ model: "tiny", options: { num_ctx: 2048 } });
    await engine.unload(id);
    expect(await engine.listModels()).toEqual([]);
    const gone = await collect(engine.generate(prompt(id), new AbortController().signal));
    expect(gone.result).toMatchObject({ code: "MODEL_NOT_FOUND" });
    await expect(engine.load("x:1.0.0" as ModelId, { path: "no such tag" })).rejects.toMatchObject({
      code: "MODEL_LOAD_FAILED",
    });
    await expect(engine.load("y:1.0.0" as ModelId, { path: "nowhere:1b" })).rejects.toMatchObject({
      code: "MODEL_NOT_FOUND",
    });
    expect(await engine.listModels()).toEqual([]);
  });

  it("maps a model that is not pulled to MODEL_NOT_FOUND, with the pull command", async () => {
    const { engine } = engineFor(double.url, { models: [{ name: "house-model", tag: "nowhere:1b" }] });
    await engine.start();
    const before = generations(double).length;
    const out = await collect(engine.generate(prompt("house-model"), new AbortController().signal));
    expect(generations(double).length).toBe(before + 1); // Ollama was asked, and said 404
    expect(out.error).toBeInstanceOf(EngineError);
    expect(out.result).toMatchObject({ code: "MODEL_NOT_FOUND", retryable: false });
    expect((out.result as Error).message).toContain("ollama pull nowhere:1b");
    // A chat request names it the other way Ollama words it; the code is the same.
    const chat = await collect(
      engine.generate(
        { model: "house-model", messages: [{ role: "user", content: "hi" }], params: { maxTokens: 4 } },
        new AbortController().signal,
      ),
    );
    expect(chat.result).toMatchObject({ code: "MODEL_NOT_FOUND" });
  });

  it("maps Ollama's out-of-memory body to OUT_OF_MEMORY, on load and on generate", async () => {
    const { engine } = engineFor(double.url);
    await engine.start();
    const out = await collect(engine.generate(prompt("big:70b"), new AbortController().signal));
    expect(out.result).toMatchObject({ code: "OUT_OF_MEMORY", retryable: true });
    expect((out.result as Error).message).toContain("requires more system memory");
    await expect(engine.load("big:70b" as ModelId)).rejects.toMatchObject({ code: "OUT_OF_MEMORY" });
    // Mid-stream, as an NDJSON error line.
    double.breakNext({
      afterTokens: 2,
      how: "error-line",
      error: "llama runner: cudaMalloc failed: out of memory",
    });
    const mid = await collect(engine.generate(prompt(TAG), new AbortController().signal));
    expect(mid.pieces.length).toBeGreaterThan(0);
    expect(mid.result).toMatchObject({ code: "OUT_OF_MEMORY" });
  });

  it("maps busy, bad-request and mid-stream error answers to stable codes", async () => {
    const { engine } = engineFor(double.url);
    await engine.start();
    double.failNext(503, "server busy, please try again.  maximum pending requests exceeded");
    expect((await collect(engine.generate(prompt(TAG), new AbortController().signal))).result).toMatchObject({
      code: "ENGINE_UNAVAILABLE",
      retryable: true,
    });
    double.failNext(400, "invalid options: num_gpu");
    expect((await collect(engine.generate(prompt(TAG), new AbortController().signal))).result).toMatchObject({
      code: "INVALID_REQUEST",
      retryable: false,
    });
    double.breakNext({ afterTokens: 3, how: "error-line" });
    const mid = await collect(engine.generate(prompt(TAG), new AbortController().signal));
    expect(mid.text).not.toBe("");
    expect(mid.result).toMatchObject({ code: "ENGINE_ERROR", retryable: true });
    expect((mid.result as Error).message).toContain("an error was encountered while running the model");
    // An empty prompt would only load the model: refused without asking the server.
    const before = generations(double).length;
    expect(
      (await collect(engine.generate({ ...prompt(TAG), prompt: "" }, new AbortController().signal))).result,
    ).toMatchObject({ code: "INVALID_REQUEST" });
    expect(generations(double).length).toBe(before);
  });

  it("sends generations one after another over the same keep-alive connections", async () => {
    // The answer's end (after its `done` line) is drained with the abort that ends every
    // generation let go of (ndjson-client.ts), so no generation cuts its connection: another one
    // opens only when the next request leaves before the last answer's end has arrived. (Leaving
    // the read loop at `done` with a plain for-await destroyed the socket: 20 connections.)
    const { engine } = engineFor(double.url);
    await engine.start();
    const before = generations(double).length;
    for (let i = 0; i < 20; i++) {
      const { error, pieces } = await collect(engine.generate(prompt(TAG, 4), new AbortController().signal));
      expect(error).toBeUndefined();
      expect(pieces.reduce((n, p) => n + p.tokens, 0)).toBe(4);
    }
    const sent = generations(double).slice(before);
    expect(sent).toHaveLength(20);
    await Promise.all(sent.map((r) => r.finished));
    expect(sent.filter((r) => r.aborted)).toEqual([]);
    expect(new Set(sent.map((r) => r.clientPort)).size).toBeLessThanOrEqual(4);
  });

  it("aborts the HTTP request on cancel: the server sees the connection close and stops", async () => {
    const { engine } = engineFor(double.url);
    await engine.start();
    const controller = new AbortController();
    const generation = engine.generate(prompt(TAG, 4000), controller.signal);
    let n = 0;
    for await (const _ of generation) if (++n === 3) controller.abort();
    expect((await generation.result).finishReason).toBe("cancelled");
    const sent = generations(double).at(-1) as RecordedRequest;
    await sent.finished;
    expect(sent.aborted).toBe(true);
    const lines = sent.linesSent;
    await new Promise((r) => setTimeout(r, 50));
    expect(sent.linesSent).toBe(lines);
    expect(lines).toBeLessThan(50);
  });

  it("fails generations in flight when their model is unloaded, or waits for them with whenIdle", async () => {
    const { engine } = engineFor(double.url);
    await engine.start();
    const first = engine.generate(prompt(TAG, 4000), new AbortController().signal);
    const iterator = first[Symbol.asyncIterator]();
    await iterator.next();
    await engine.unload(TAG as ModelId);
    await expect(first.result).rejects.toMatchObject({ code: "ENGINE_ERROR", retryable: true });

    const second = engine.generate(prompt(TAG, 30), new AbortController().signal);
    await second[Symbol.asyncIterator]().next();
    let unloaded = false;
    const unloading = engine.unload(TAG as ModelId, { whenIdle: true }).then(() => {
      unloaded = true;
    });
    const meanwhile = await collect(engine.generate(prompt(TAG), new AbortController().signal));
    expect(meanwhile.result).toMatchObject({ code: "MODEL_NOT_FOUND", retryable: true });
    expect(unloaded).toBe(false);
    await expect(second.result).resolves.toMatchObject({ finishReason: "length" });
    await unloading;
    expect(unloaded).toBe(true);
  });
});

describe("Ollama engine and a server that comes and goes", () => {
  it("starts without a server, offers nothing and fails as unavailable, then serves once it answers", async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const { engine, lines } = engineFor(url, { models: [{ name: "house-model", tag: TAG }] });
    await engine.start();
    expect(engine.serverUp).toBe(false);
    expect(await engine.listModels()).toEqual([]);
    expect(
      lines.find((l) => l.msg === "no Ollama server answers; its models are offered once it does"),
    ).toMatchObject({
      level: "warn",
      url,
    });
    const down = await collect(engine.generate(prompt("house-model"), new AbortController().signal));
    expect(down.result).toMatchObject({ code: "ENGINE_UNAVAILABLE", retryable: true });
    expect((down.result as Error).message).toContain(url);
    expect(lines.filter((l) => l.msg?.toString().startsWith("no Ollama server answers")).length).toBe(1);

    await startDouble({ port });
    await vi.waitFor(async () =>
      expect((await engine.listModels()).map((m) => m.name)).toEqual(["house-model", TAG]),
    );
    expect(lines.find((l) => l.msg === "the Ollama server answers; offering its models")).toMatchObject({
      version: "0.12.0",
      models: [TAG],
    });
    const up = await collect(engine.generate(prompt("house-model", 4), new AbortController().signal));
    expect(up.result).toMatchObject({ finishReason: "length", usage: { completionTokens: 4 } });
  });

  it("withdraws the models when the server goes away, mid-stream too, and offers them again when it is back", async () => {
    const double = await startDouble();
    const { engine, lines } = engineFor(double.url);
    await engine.start();
    expect((await engine.listModels()).map((m) => m.name)).toEqual([TAG]);

    const generation = engine.generate(prompt(TAG, 4000), new AbortController().signal);
    await generation[Symbol.asyncIterator]().next();
    await double.stop();
    await expect(generation.result).rejects.toMatchObject({ code: "ENGINE_UNAVAILABLE", retryable: true });
    await vi.waitFor(async () => expect(await engine.listModels()).toEqual([]));
    expect(lines.find((l) => l.msg?.toString().startsWith("the Ollama server went away"))).toMatchObject({
      level: "warn",
      withdrawn: [TAG],
    });

    await double.restart();
    await vi.waitFor(async () => expect((await engine.listModels()).map((m) => m.name)).toEqual([TAG]));
    expect(lines.filter((l) => l.msg === "the Ollama server answers; offering its models").length).toBe(2);

    // A dropped connection mid-stream is the server gone too.
    double.breakNext({ afterTokens: 2, how: "drop" });
    const dropped = await collect(engine.generate(prompt(TAG), new AbortController().signal));
    expect(dropped.result).toMatchObject({ code: "ENGINE_UNAVAILABLE" });

    // Pulling and removing models shows in what is offered, with a log line.
    double.setModels([{ name: TAG }, { name: "fresh:1b" }]);
    await vi.waitFor(async () =>
      expect((await engine.listModels()).map((m) => m.name)).toEqual([TAG, "fresh:1b"]),
    );
    expect(lines.find((l) => l.msg === "the Ollama server's models changed")).toMatchObject({
      added: ["fresh:1b"],
      removed: [],
    });
  });
});
