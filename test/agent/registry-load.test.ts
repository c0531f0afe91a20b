// Registry loads end to end in one process: a scripted test hub that also serves the gateway's
// artifact route on its own port, a real agent with the llama.cpp engine and the demo model, and a
// load frame for demo variant 2 as a registry artifact: downloaded with the agent's token, verified,
// loaded under its versioned id, served, reported in health, unloaded; and every load_failed code
// the agent can produce on its own.
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { Agent } from "../../node-agent/agent.ts";
import { DEMO_MODEL_NAME, ensureDemoModel, generateDemoModel } from "../../node-agent/demo-model.ts";
import { LlamaCppEngine } from "../../node-agent/engines/llamacpp/index.ts";
import { createLogger } from "../../node-agent/log.ts";
import { ArtifactFiles, bytesOf } from "./artifact-server.ts";
import { cleanUp, type HubConnection, ScriptedTestHub, setup, TOKEN, text } from "./scripted-hub.ts";

const V2 = `${DEMO_MODEL_NAME}:2.0.0`;
const V2_PATH = `/models/${V2}/artifact` as const;

let dir: string;
let engine: LlamaCppEngine;
let files: ArtifactFiles;
let v2: ReturnType<ArtifactFiles["add"]>;
let freeMemory = Number.MAX_SAFE_INTEGER;
let hub: ScriptedTestHub;
let agent: Agent;
let conn: HubConnection;
const logLines: Array<Record<string, unknown>> = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "orchard-registry-load-"));
  engine = new LlamaCppEngine({
    models: [{ name: DEMO_MODEL_NAME, path: await ensureDemoModel(dir) }],
    capacity: 2,
    threads: 1,
  });
  files = new ArtifactFiles(TOKEN);
  v2 = files.add(V2_PATH, generateDemoModel({ variant: 2 }));
  hub = await ScriptedTestHub.start({ http: files.handler, healthIntervalMs: 50 });
  agent = new Agent({
    engine,
    gatewayUrl: hub.url,
    token: TOKEN,
    agentId: "mini-01",
    capacity: 2,
    backoff: { baseMs: 5, maxMs: 20 },
    artifacts: {
      dir: join(dir, "artifacts"),
      budgetBytes: 4 * v2.size,
      freeMemoryBytes: () => freeMemory,
      download: { retryDelayMs: 10 },
    },
    logger: createLogger({ level: "debug", write: (line) => logLines.push(JSON.parse(line)) }),
  });
  void agent.start();
  conn = await hub.connection(0);
  await vi.waitFor(() => expect(logLines.some((l) => l.msg === "connected")).toBe(true));
});

afterAll(async () => {
  await agent?.stop();
  await hub?.close();
  await engine?.close();
  await rm(dir, { recursive: true, force: true });
});

afterEach(cleanUp);

let ids = 0;
/** Runs a greedy generation on `model` and returns its done frame and text (or its error frame). */
async function generateOn(model: string, maxTokens = 16) {
  const id = `gen-${++ids}`;
  conn.send({
    type: "generate",
    id,
    model,
    prompt: "Once upon a time",
    params: { maxTokens, temperature: 0 },
  });
  const end = await vi.waitFor(
    () => {
      const frame = conn.forId(id).find((f) => f.type === "done" || f.type === "error");
      if (!frame) throw new Error(`no end for ${id} yet`);
      return frame;
    },
    { timeout: 10_000, interval: 5 },
  );
  return { id, end, text: text(conn, id) };
}

const loadV2 = (extra: Record<string, unknown> = {}) =>
  conn.send({
    type: "load",
    model: V2,
    source: { kind: "artifact", format: "gguf" },
    artifact: v2,
    parameters: { contextLength: 512 },
    ...extra,
  });

/** Sends a load of `artifact` as `model` and waits for the agent's load_failed for it. */
async function failedArtifactLoad(model: string, artifact: Record<string, unknown>, format = "gguf") {
  conn.send({ type: "load", model, source: { kind: "artifact", format }, artifact });
  return conn.waitFor("load_failed", (f) => f.model === model);
}

describe("registry loads with the artifacts capability", () => {
  it("offers artifacts in hello and the hub's welcome agrees", () => {
    expect(conn.of("hello")[0]?.capabilities).toContain("artifacts");
    expect(logLines.find((l) => l.msg === "connected")?.capabilities).toContain("artifacts");
  });

  it("downloads an artifact through the hub's URL with the agent's token, loads it, and serves its id", async () => {
    loadV2();
    const loaded = await conn.waitFor("loaded", (f) => f.model.name === V2);
    expect(loaded.model).toMatchObject({ name: V2, engine: "llamacpp", loaded: true, contextLength: 512 });
    expect(loaded.model.footprintBytes).toBeGreaterThan(v2.size);
    expect(files.requests).toEqual([
      { url: V2_PATH, authorization: `Bearer ${TOKEN}`, range: undefined, status: 200 },
    ]);
    expect(await readdir(join(dir, "artifacts"))).toContain(`${v2.sha256}.gguf`);

    const two = await generateOn(V2);
    const one = await generateOn(DEMO_MODEL_NAME);
    expect(two.end).toMatchObject({ type: "done", usage: { completionTokens: 16 } });
    expect(one.end.type).toBe("done");
    expect(two.text.length).toBeGreaterThan(0);
    expect(two.text).not.toBe(one.text);

    // A repeated load is answered from the cache: no second download.
    loadV2();
    await vi.waitFor(() => expect(conn.of("loaded").filter((f) => f.model.name === V2)).toHaveLength(2));
    expect(files.requests).toHaveLength(1);
  });

  it("reports the cache in every health frame", async () => {
    const before = conn.of("health").length;
    await vi.waitFor(() => expect(conn.of("health").length).toBeGreaterThan(before + 1));
    const health = conn.of("health").at(-1);
    expect(health?.cache).toEqual({
      budgetBytes: 4 * v2.size,
      usedBytes: v2.size,
      artifacts: [{ model: V2, sha256: v2.sha256, size: v2.size }],
    });
    expect(health?.models?.map((m) => m.name)).toContain(V2);
  });

  it("unloads only after the generation running on it ends, then refuses the id", async () => {
    const id = `gen-${++ids}`;
    conn.send({ type: "generate", id, model: V2, prompt: "the", params: { maxTokens: 400, temperature: 0 } });
    await conn.waitFor("chunk", (c) => c.id === id);
    conn.send({ type: "unload", model: V2 });
    await conn.waitFor("unloaded", (f) => f.model === V2);
    const frames = conn.frames;
    const done = frames.findIndex((f) => f.type === "done" && f.id === id);
    const unloaded = frames.findIndex((f) => f.type === "unloaded" && f.model === V2);
    expect(done).toBeGreaterThanOrEqual(0);
    expect(done).toBeLessThan(unloaded);
    expect(frames[done]).toMatchObject({ finishReason: "length", usage: { completionTokens: 400 } });
    const after = await generateOn(V2);
    expect(after.end).toMatchObject({ type: "error", code: "MODEL_NOT_FOUND" });
    // Still cached (evictable now); loading it again needs no download.
    loadV2();
    await vi.waitFor(() => expect(conn.of("loaded").filter((f) => f.model.name === V2)).toHaveLength(3));
    expect(files.requests).toHaveLength(1);
  });

  it("answers load_failed ARTIFACT_HASH_MISMATCH and keeps nothing when the bytes are not the registered ones", async () => {
    const bad = files.add("/models/demo-random-weights:3.0.0/artifact", bytesOf(4096));
    files.files.set(bad.path, bytesOf(4096, 7));
    const failed = await failedArtifactLoad(`${DEMO_MODEL_NAME}:3.0.0`, bad);
    expect(failed.code).toBe("ARTIFACT_HASH_MISMATCH");
    expect(await readdir(join(dir, "artifacts"))).not.toContain(`${bad.sha256}.partial`);
  });

  it("answers load_failed ARTIFACT_DOWNLOAD_FAILED when the gateway refuses the download", async () => {
    const missing = { ...v2, path: "/models/nobody:1.0.0/artifact", sha256: "a".repeat(64) };
    const failed = await failedArtifactLoad("nobody:1.0.0", missing);
    expect(failed).toMatchObject({
      code: "ARTIFACT_DOWNLOAD_FAILED",
      message: expect.stringContaining("404"),
    });
  });

  it("answers load_failed INSUFFICIENT_MEMORY when free memory is under 1.2 x the artifact", async () => {
    freeMemory = v2.size;
    try {
      loadV2({ model: `${DEMO_MODEL_NAME}:2.0.1` });
      const failed = await conn.waitFor("load_failed", (f) => f.model === `${DEMO_MODEL_NAME}:2.0.1`);
      expect(failed).toMatchObject({
        code: "INSUFFICIENT_MEMORY",
        message: expect.stringContaining("1.2 x"),
      });
    } finally {
      freeMemory = Number.MAX_SAFE_INTEGER;
    }
  });

  it("answers load_failed DISK_BUDGET_EXCEEDED for an artifact larger than the budget", async () => {
    const big = { ...v2, path: "/models/big:1.0.0/artifact", sha256: "b".repeat(64), size: 5 * v2.size };
    const failed = await failedArtifactLoad("big:1.0.0", big);
    expect(failed.code).toBe("DISK_BUDGET_EXCEEDED");
  });

  it("loads a path source that exists, and fails clearly for one that does not", async () => {
    const path = await ensureDemoModel(dir, { variant: 2 });
    conn.send({ type: "load", model: "local-copy:1.0.0", source: { kind: "path", path } });
    const loaded = await conn.waitFor("loaded", (f) => f.model.name === "local-copy:1.0.0");
    expect(loaded.model.contextLength).toBe(1024);
    conn.send({ type: "load", model: "gone:1.0.0", source: { kind: "path", path: join(dir, "gone.gguf") } });
    const failed = await conn.waitFor("load_failed", (f) => f.model === "gone:1.0.0");
    expect(failed).toMatchObject({
      code: "MODEL_LOAD_FAILED",
      message: expect.stringContaining("no file at"),
    });
    // The agent's own configured model is never replaced by a registry path.
    conn.send({ type: "load", model: DEMO_MODEL_NAME, source: { kind: "path", path } });
    const refused = await conn.waitFor("load_failed", (f) => f.model === DEMO_MODEL_NAME);
    expect(refused).toMatchObject({
      code: "MODEL_LOAD_FAILED",
      message: expect.stringContaining("configured on this agent"),
    });
    expect((await generateOn(DEMO_MODEL_NAME)).end.type).toBe("done");
  });

  it("answers load_failed SOURCE_UNSUPPORTED for Ollama, Hugging Face and MLX sources, saying why", async () => {
    conn.send({ type: "load", model: "o:1.0.0", source: { kind: "ollama", tag: "llama3.2:3b" } });
    conn.send({ type: "load", model: "h:1.0.0", source: { kind: "huggingface", repo: "org/model" } });
    conn.send({
      type: "load",
      model: "e:1.0.0",
      source: { kind: "path", path: dir },
      parameters: { engines: ["mlx"] },
    });
    const mlx = files.add("/models/m:1.0.0/artifact", bytesOf(2048, 5));
    conn.send({
      type: "load",
      model: "m:1.0.0",
      source: { kind: "artifact", format: "mlx-tar" },
      artifact: { ...mlx, format: "mlx-tar" },
    });
    for (const [model, why] of [
      ["o:1.0.0", /Ollama/],
      ["h:1.0.0", /huggingface/],
      ["e:1.0.0", /engines mlx/],
      ["m:1.0.0", /MLX engine/],
    ] as const) {
      const failed = await conn.waitFor("load_failed", (f) => f.model === model);
      expect(failed).toMatchObject({ code: "SOURCE_UNSUPPORTED", message: expect.stringMatching(why) });
    }
    // The MLX tar was downloaded and verified, and stays cached for an agent that gains an MLX engine.
    expect(await readdir(join(dir, "artifacts"))).toContain(`${mlx.sha256}.tar`);
  });
});

describe("registry loads without the artifacts capability", () => {
  it("only logs a failed load and reports no cache when the hub did not agree to artifacts", async () => {
    const { hub: plainHub, logLines: lines } = await setup(
      { capabilities: ["load"], healthIntervalMs: 30 },
      { artifacts: { dir: join(dir, "plain"), budgetBytes: 1024 * 1024 } },
    );
    const plain = await plainHub.connection(0);
    expect(plain.of("hello")[0]?.capabilities).toContain("artifacts");
    plain.send({ type: "load", model: "broken" });
    await vi.waitFor(() => expect(lines.some((l) => l.msg === "model load failed")).toBe(true));
    const health = await plain.waitFor("health");
    expect(health.cache).toBeUndefined();
    expect(plain.of("load_failed")).toEqual([]);
  });

  it("does not offer artifacts without an artifact cache", async () => {
    const { hub: plainHub } = await setup();
    const plain = await plainHub.connection(0);
    expect(plain.of("hello")[0]?.capabilities).toEqual(["load", "duplicate_answer"]);
  });
});
