// The registry with real parts: two versions of one model registered as artifacts (the demo model
// and its deterministic second variant), uploaded into the gateway's R2, fetched by two real agent
// processes through the gateway, loaded by llama.cpp, activated, switched under 32 concurrent
// streaming callers, rolled back, and the live metric history read back per version.
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureDemoModel } from "../../node-agent/demo-model.ts";
import { ReferenceEngine } from "../helpers/expected-text.ts";
import { type AgentProcess, readSse, type Stack, startStack } from "../helpers/stack.ts";

const NAME = "demo";
const V1 = "1.0.0";
const V2 = "2.0.0";
const PROMPT = "Once upon a time";
const MAX_TOKENS = 12;

let stack: Stack;
let admin: string;
let user: string;
let agents: AgentProcess[] = [];
const files: Record<string, { path: string; bytes: Buffer; sha256: string }> = {};
const reference: Record<string, ReferenceEngine> = {};

function api(path: string, init: RequestInit & { token?: string } = {}): Promise<Response> {
  const { token = admin, headers, ...rest } = init;
  return fetch(`${stack.origin}${path}`, {
    ...rest,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", ...(headers ?? {}) },
  });
}

async function json<T = Record<string, unknown>>(res: Response, status: number): Promise<T> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  return JSON.parse(text) as T;
}

/** One streaming /generate by name: the version that answered (header) and the text it streamed. */
async function streamByName(): Promise<{ version: string; text: string; error: string | null }> {
  const res = await api("/generate", {
    method: "POST",
    token: user,
    body: JSON.stringify({
      model: NAME,
      prompt: PROMPT,
      max_tokens: MAX_TOKENS,
      temperature: 0,
      stream: true,
    }),
  });
  if (res.status !== 200) return { version: "", text: "", error: `${res.status} ${await res.text()}` };
  const served = res.headers.get("x-orchard-model") ?? "";
  const events = await readSse(res);
  const failed = events.find((e) => e.event === "error");
  const text = events
    .filter((e) => e.event === "chunk")
    .map((e) => (JSON.parse(e.data) as { text: string }).text)
    .join("");
  return { version: served, text, error: failed ? failed.data : null };
}

async function expectedText(version: string): Promise<string> {
  const engine = reference[version];
  if (!engine) throw new Error(`no reference engine for ${version}`);
  return (await engine.answer({ prompt: PROMPT, maxTokens: MAX_TOKENS })).text;
}

beforeAll(async () => {
  stack = await startStack({
    vars: { HEALTH_INTERVAL_MS: "500", LIVE_METRICS_FLUSH_MS: "1000" },
    logLevel: "warn",
  });
  admin = await stack.token("admin", "e2e-operator");
  user = await stack.token("user");
  for (const [version, variant] of [
    [V1, 1],
    [V2, 2],
  ] as const) {
    const path = await ensureDemoModel(stack.cacheDir, { variant });
    const bytes = readFileSync(path);
    files[version] = { path, bytes, sha256: createHash("sha256").update(bytes).digest("hex") };
    reference[version] = await ReferenceEngine.start(path);
  }
  // Each agent keeps its own artifact cache, as two Macs would.
  agents = await Promise.all(
    ["reg-a", "reg-b"].map((id) =>
      stack.startAgent({ id, args: ["--cache-dir", mkdtempSync(join(tmpdir(), `orchard-${id}-`))] }),
    ),
  );
  await stack.waitForAgents((list) => list.length === 2);
}, 180_000);

afterAll(async () => {
  await stack?.stop();
  for (const engine of Object.values(reference)) await engine.close();
});

describe("the registry end to end", () => {
  it("registers two versions with lineage and uploads their artifacts", async () => {
    for (const version of [V1, V2]) {
      const file = files[version];
      if (!file) throw new Error("setup");
      const registered = await json<{ model_id: string }>(
        await api("/models/register", {
          method: "POST",
          body: JSON.stringify({
            name: NAME,
            version,
            description: `demo variant ${version}`,
            model_type: "llm",
            framework: "llamacpp",
            tags: ["e2e"],
            source: { kind: "artifact", format: "gguf" },
            sha256: file.sha256,
            size: file.bytes.length,
            ...(version === V2 ? { parent: `${NAME}:${V1}` } : {}),
            performance_metrics: { latency_ms: 5 },
          }),
        }),
        201,
      );
      expect(registered.model_id).toBe(`${NAME}:${version}`);
      await json(
        await api(`/models/${NAME}:${version}/artifact`, {
          method: "PUT",
          headers: {
            "Content-Type": "application/octet-stream",
            "Content-Length": String(file.bytes.length),
          },
          body: file.bytes,
        }),
        201,
      );
    }
    const lineage = await json<{ edges: Array<{ from: string; to: string; kind: string }> }>(
      await api(`/models/${NAME}/lineage`, { token: user }),
      200,
    );
    expect(lineage.edges).toContainEqual({ from: `${NAME}:${V1}`, to: `${NAME}:${V2}`, kind: "parent" });
  });

  it("activates 1.0.0: both agents download, verify and load it, and requests by name get its text", async () => {
    const activated = await json<{ loaded_on: string[] }>(
      await api(`/models/${NAME}:${V1}/activate`, {
        method: "POST",
        body: JSON.stringify({ placement: { replicas: 2 }, timeout_ms: 60_000 }),
      }),
      200,
    );
    expect([...activated.loaded_on].sort()).toEqual(["reg-a", "reg-b"]);
    // Each agent fetched the bytes through the gateway and checked them before loading.
    for (const agent of agents) {
      const line = await agent.waitForLog((l) => l.includes('"msg":"artifact downloaded and verified"'));
      expect(line).toContain(files[V1]?.sha256);
    }
    const answer = await streamByName();
    expect(answer).toEqual({ version: `${NAME}:${V1}`, text: await expectedText(V1), error: null });
  });

  it("switches to 2.0.0 under 32 concurrent streaming callers with no failed request", async () => {
    const results: Awaited<ReturnType<typeof streamByName>>[] = [];
    let stop = false;
    const callers = Array.from({ length: 32 }, async () => {
      while (!stop) results.push(await streamByName());
    });
    await new Promise((r) => setTimeout(r, 1_000));
    const before = results.length;
    await json(
      await api(`/models/${NAME}:${V2}/activate`, {
        method: "POST",
        body: JSON.stringify({ placement: { replicas: 2 }, timeout_ms: 60_000 }),
      }),
      200,
    );
    // Let callers run on the new version for a while.
    const switchedAt = results.length;
    await new Promise((r) => setTimeout(r, 1_500));
    stop = true;
    await Promise.all(callers);
    expect(before).toBeGreaterThan(0);
    expect(results.length).toBeGreaterThan(switchedAt);
    expect(results.filter((r) => r.error !== null)).toEqual([]);
    const [t1, t2] = [await expectedText(V1), await expectedText(V2)];
    expect(t1).not.toBe(t2);
    for (const r of results) {
      expect([`${NAME}:${V1}`, `${NAME}:${V2}`]).toContain(r.version);
      expect(r.text).toBe(r.version === `${NAME}:${V1}` ? t1 : t2);
    }
    // Everything started after the activation answered is served by 2.0.0.
    expect(results.slice(switchedAt + 32).every((r) => r.version === `${NAME}:${V2}`)).toBe(true);
  });

  it("rolls back instantly to the still-warm 1.0.0", async () => {
    const started = Date.now();
    await json(await api(`/models/${NAME}/rollback`, { method: "POST", body: "{}" }), 200);
    const tookMs = Date.now() - started;
    const answer = await streamByName();
    expect(answer).toEqual({ version: `${NAME}:${V1}`, text: await expectedText(V1), error: null });
    // Instant: no load was needed (both versions stay loaded on both agents).
    expect(tookMs).toBeLessThan(10_000);
    const serving = await json<{ version: string | null }>(
      await api(`/models/${NAME}/serving?at=${Date.now()}`, { token: user }),
      200,
    );
    expect(serving.version).toBe(V1);
  });

  it("shows the live metric history per version", async () => {
    const deadline = Date.now() + 20_000;
    let live: unknown[] = [];
    while (Date.now() < deadline) {
      const v2 = await json<{ live_metrics: unknown[] }>(
        await api(`/models/${NAME}/${V2}`, { token: user }),
        200,
      );
      live = v2.live_metrics;
      if (live.length > 0) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(live.length).toBeGreaterThan(0);
  });
});
