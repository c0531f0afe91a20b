// The orchard-agent CLI as operators run it: `node --import tsx node-agent/main.ts <command>`.
// Bad configuration must be one stderr line naming the setting, and exit code 2.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { WebSocketServer } from "ws";

const root = join(import.meta.dirname, "..", "..");
const cacheDir = mkdtempSync(join(tmpdir(), "orchard-cli-"));
afterAll(() => rmSync(cacheDir, { recursive: true, force: true }));

function fakeJwt(claims: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.c2ln`;
}
const token = fakeJwt({ sub: "mini-cli", role: "agent", exp: 4_000_000_000 });

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function startCli(args: string[], env: Record<string, string> = {}) {
  // Only this test's ORCHARD_* settings reach the child, never the developer's own.
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ORCHARD_")));
  const child = spawn(process.execPath, ["--import", "tsx", "node-agent/main.ts", ...args], {
    cwd: root,
    env: { ...base, ORCHARD_CACHE_DIR: cacheDir, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const output = { stdout: "", stderr: "" };
  child.stdout.on("data", (d) => {
    output.stdout += d;
  });
  child.stderr.on("data", (d) => {
    output.stderr += d;
  });
  const exited = new Promise<Run>((resolve) => child.on("close", (code) => resolve({ code, ...output })));
  return { child, output, exited };
}

const runCli = (args: string[], env: Record<string, string> = {}) => startCli(args, env).exited;

function expectConfigError(run: Run, setting: string) {
  expect(run.code).toBe(2);
  const lines = run.stderr.trimEnd().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toContain(setting);
  expect(lines[0]).not.toMatch(/\bat .*\.ts:\d+/); // no stack
  expect(run.stdout).toBe("");
}

describe.concurrent("orchard-agent CLI", () => {
  it("help lists the commands and every flag with its variable", async () => {
    const run = await runCli(["help"]);
    expect(run.code).toBe(0);
    for (const word of [
      "start",
      "doctor",
      "--gateway",
      "ORCHARD_GATEWAY_URL",
      "--drain-timeout-ms",
      "--flush-ms",
      "--max-protocol",
      "ORCHARD_MAX_PROTOCOL",
    ]) {
      expect(run.stdout).toContain(word);
    }
    expect(run.stderr).toBe("");
  });

  it("prints help when no command is given", async () => {
    const [run, help] = await Promise.all([runCli([]), runCli(["help"])]);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain("Usage:");
    expect(run.stdout).toBe(help.stdout);
  });

  it("start without a gateway names --gateway", async () => {
    expectConfigError(await runCli(["start", "--token", token]), "--gateway");
  });

  it("start with a bad capacity names --capacity", async () => {
    expectConfigError(
      await runCli(["start", "--gateway", "http://127.0.0.1:9", "--token", token, "--capacity", "0"]),
      "--capacity",
    );
  });

  it("a bad environment variable is named as such", async () => {
    expectConfigError(
      await runCli(["start"], {
        ORCHARD_GATEWAY_URL: "http://127.0.0.1:9",
        ORCHARD_AGENT_TOKEN: token,
        ORCHARD_FLUSH_MS: "50",
      }),
      "ORCHARD_FLUSH_MS",
    );
  });

  it("an --id that is not the token's subject is a config error", async () => {
    expectConfigError(
      await runCli(["start", "--gateway", "http://127.0.0.1:9", "--token", token, "--id", "someone-else"]),
      "--id",
    );
  });

  it("an unknown flag is named", async () => {
    expectConfigError(
      await runCli(["start", "--gateway", "http://127.0.0.1:9", "--tokne", token]),
      "--tokne",
    );
  });

  it("an unknown command exits 2", async () => {
    const run = await runCli(["serve"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('unknown command "serve"');
    expect(run.stderr).toBe(
      'orchard-agent: unknown command "serve" (commands: start, doctor, demo-model, install, uninstall, status, help)\n',
    );
    expect(run.stdout).toBe("");
  });

  it("demo-model writes variant 2 and prints its path, size and sha256; a bad variant exits 2", async () => {
    const out = join(cacheDir, "cli-variant2.gguf");
    const run = await runCli(["demo-model", "--variant", "2", "--out", out]);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual({
      path: out,
      size: 610080,
      sha256: "21929a18a6192f7688baca94b6133a2212f6e8b9bf0777d9158071fc1edb15d5",
      variant: 2,
    });
    const bad = await runCli(["demo-model", "--variant", "3", "--out", out]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--variant must be one of 1, 2");
  });

  /** A stand-in gateway: /health answers 200; /agents/connect without an upgrade answers like the real route. */
  async function doctorGateway(acceptToken: boolean) {
    const { createServer } = await import("node:http");
    const seen: Array<{ url: string | undefined; authorization: string | undefined }> = [];
    const gateway = createServer((req, res) => {
      seen.push({ url: req.url, authorization: req.headers.authorization });
      if (req.url === "/health") {
        res.writeHead(200).end();
      } else if (req.url === "/agents/connect" && acceptToken) {
        res.writeHead(426, { "Content-Type": "application/json" });
        res.end(
          JSON.stringify({ error: { code: "UPGRADE_REQUIRED", message: "expected a WebSocket upgrade" } }),
        );
      } else if (req.url === "/agents/connect") {
        res.writeHead(401, { "Content-Type": "application/json" });
        res.end(JSON.stringify({ error: { code: "UNAUTHORIZED", message: "invalid token" } }));
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => gateway.listen(0, "127.0.0.1", resolve));
    const port = (gateway.address() as AddressInfo).port;
    return { url: `http://127.0.0.1:${port}`, seen, close: () => gateway.close() };
  }

  it("doctor passes with the demo model and a gateway that answers /health and accepts the token", async () => {
    const gateway = await doctorGateway(true);
    try {
      const run = await runCli(["doctor", "--gateway", gateway.url, "--token", token]);
      expect(run.stdout).toMatch(/^ok +config: agent mini-cli /m);
      expect(run.stdout).toMatch(/^ok +token: subject mini-cli, expires /m);
      expect(run.stdout).toMatch(/^ok +model demo-random-weights: .*GGUF v3, llama/m);
      expect(run.stdout).toMatch(/^ok +engine llamacpp: loaded 1 model/m);
      expect(run.stdout).toMatch(/^ok +gateway: GET http:\/\/127\.0\.0\.1:\d+\/health -> 200$/m);
      expect(run.stdout).toMatch(/^ok +gateway token: the gateway accepts this agent token$/m);
      expect(run.stdout).toContain("all checks passed");
      expect(run.code).toBe(0);
      // The token is checked without a WebSocket upgrade, so a running agent is never superseded.
      expect(gateway.seen).toContainEqual({ url: "/agents/connect", authorization: `Bearer ${token}` });
    } finally {
      gateway.close();
    }
  });

  it("doctor says the gateway refused the token and how to fix it", async () => {
    const gateway = await doctorGateway(false);
    try {
      const run = await runCli(["doctor", "--gateway", gateway.url, "--token", token]);
      expect(run.code).toBe(1);
      expect(run.stdout).toMatch(
        /^FAIL gateway token: the gateway refused the token \(HTTP 401 UNAUTHORIZED\); mint a new one/m,
      );
      expect(run.stdout).toContain("1 check(s) failed");
    } finally {
      gateway.close();
    }
  });

  it("doctor names an unreachable gateway and an expired token", async () => {
    const { createServer } = await import("node:net");
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const freePort = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    const expired = fakeJwt({ sub: "mini-cli", role: "agent", exp: 1_000_000_000 });
    const run = await runCli(["doctor", "--gateway", `http://127.0.0.1:${freePort}`, "--token", expired]);
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/^FAIL token: expired at 2001-09-09T01:46:40.000Z$/m);
    expect(run.stdout).toMatch(
      /^FAIL gateway: GET http:\/\/127\.0\.0\.1:\d+\/health failed: ECONNREFUSED \(nothing listens there: is the gateway running/m,
    );
    // The token cannot be checked against a gateway that does not answer; no second failure for it.
    expect(run.stdout).not.toMatch(/gateway token/);
    expect(run.stdout).toContain("2 check(s) failed");
  });

  it("doctor reports a bad configuration and exits 1", async () => {
    const run = await runCli(["doctor", "--gateway", "http://127.0.0.1:9"]);
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/^FAIL config: --token: missing/m);
  });
});

/** What the llama.cpp engine generates in this process for a greedy completion on the demo model. */
async function demoReference(prompt: string, maxTokens: number) {
  const { LlamaCppEngine } = await import("../../node-agent/engines/llamacpp/index.ts");
  const { DEMO_MODEL_NAME, ensureDemoModel } = await import("../../node-agent/demo-model.ts");
  const engine = new LlamaCppEngine({
    models: [{ name: DEMO_MODEL_NAME, path: await ensureDemoModel(cacheDir) }],
    capacity: 1,
    threads: 1,
  });
  try {
    const generation = engine.generate(
      { model: DEMO_MODEL_NAME, prompt, params: { maxTokens, temperature: 0 } },
      new AbortController().signal,
    );
    let text = "";
    for await (const piece of generation) text += piece.text;
    return { text, ...(await generation.result) };
  } finally {
    await engine.close();
  }
}

describe("orchard-agent start", () => {
  it("serves a generation through a scripted test hub with the demo model, and drains on SIGTERM", async () => {
    const hub = new WebSocketServer({ port: 0, host: "127.0.0.1", path: "/agents/connect" });
    await new Promise<void>((resolve) => hub.once("listening", () => resolve()));
    const frames: Array<Record<string, unknown>> = [];
    let authorization: string | undefined;
    let closeCode: number | undefined;
    hub.on("connection", (ws, req) => {
      authorization = req.headers.authorization;
      ws.on("message", (data) => {
        const frame = JSON.parse(data.toString());
        frames.push(frame);
        if (frame.type === "hello") {
          ws.send(
            JSON.stringify({
              type: "welcome",
              protocol: frame.protocol,
              agentId: frame.agentId,
              sessionId: "s1",
              pool: "default",
              heartbeatIntervalMs: 10_000,
              healthIntervalMs: 10_000,
            }),
          );
          ws.send(
            JSON.stringify({
              type: "generate",
              id: "g1",
              model: "demo-random-weights",
              prompt: "Once upon a time",
              params: { maxTokens: 12, temperature: 0 },
            }),
          );
        }
      });
      ws.on("close", (code) => {
        closeCode = code;
      });
    });
    const port = (hub.address() as AddressInfo).port;
    try {
      const { child, output, exited } = startCli(
        ["start", "--gateway", `http://127.0.0.1:${port}`, "--capacity", "1", "--log-level", "info"],
        { ORCHARD_AGENT_TOKEN: token },
      );
      await vi.waitFor(() => expect(output.stderr).toContain('{"msg":"connected"'), { timeout: 15_000 });
      expect(authorization).toBe(`Bearer ${token}`);
      expect(frames[0]).toMatchObject({
        type: "hello",
        agentId: "mini-cli",
        engines: ["llamacpp"],
        capacity: 1,
        models: [{ name: "demo-random-weights", engine: "llamacpp", loaded: true }],
      });
      await vi.waitFor(() => expect(frames.find((f) => f.type === "done")).toBeDefined(), {
        timeout: 10_000,
      });
      const done = frames.find((f) => f.type === "done") as {
        id: string;
        finishReason: string;
        usage: { promptTokens: number; completionTokens: number };
      };
      expect(done.id).toBe("g1");
      expect(done.usage.completionTokens).toBeGreaterThan(0);
      expect(done.usage.completionTokens).toBeLessThanOrEqual(12);
      const chunks = frames.filter((f) => f.type === "chunk") as Array<{ id: string; text: string }>;
      expect(chunks.length).toBeGreaterThan(0);
      // Greedy decoding of the demo model is deterministic: the process serves exactly what the
      // engine generates in this one for the same request.
      const reference = await demoReference("Once upon a time", 12);
      expect(chunks.map((c) => c.text).join("")).toBe(reference.text);
      expect(done).toMatchObject({ finishReason: reference.finishReason, usage: reference.usage });
      child.kill("SIGTERM");
      const run = await exited;
      expect(run.code).toBe(0);
      expect(frames.at(-1)).toEqual({ type: "draining", deadlineMs: 30_000 });
      expect(closeCode).toBe(4008);
      for (const line of run.stderr.trimEnd().split("\n")) expect(() => JSON.parse(line)).not.toThrow();
    } finally {
      await new Promise<void>((resolve) => hub.close(() => resolve()));
    }
  }, 30_000);
});
