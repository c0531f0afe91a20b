// For tests that run the agent's CLI as a process (from the checkout through tsx, or the packed
// package with Node alone): an unsigned agent token, the process with its output collected, and a
// stand-in hub that welcomes every hello and can ask for one generation.
import { type ChildProcess, spawn } from "node:child_process";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { WebSocketServer } from "ws";

export const REPO_ROOT = join(import.meta.dirname, "..", "..");

/** A JWT of role agent for `sub`, signed with nothing: the stand-ins here never check signatures. */
export function unsignedAgentToken(sub: string, exp = 4_000_000_000): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub, role: "agent", exp })}.c2ln`;
}

export interface AgentRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface AgentProcess {
  child: ChildProcess;
  output: { stdout: string; stderr: string };
  exited: Promise<AgentRun>;
}

/**
 * `node <entry> ...args`, by default the checkout's node-agent/main.ts through tsx. Only `env`'s
 * ORCHARD_* settings reach it, never the developer's own, and no NODE_OPTIONS (no loader rides along).
 */
export function spawnAgent(
  args: string[],
  options: { entry?: string[]; cwd?: string; env?: Record<string, string> } = {},
): AgentProcess {
  const base = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith("ORCHARD_") && k !== "NODE_OPTIONS"),
  );
  const entry = options.entry ?? ["--import", "tsx", join(REPO_ROOT, "node-agent", "main.ts")];
  const child = spawn(process.execPath, [...entry, ...args], {
    cwd: options.cwd ?? REPO_ROOT,
    env: { ...base, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const output = { stdout: "", stderr: "" };
  child.stdout?.on("data", (d) => {
    output.stdout += d;
  });
  child.stderr?.on("data", (d) => {
    output.stderr += d;
  });
  const exited = new Promise<AgentRun>((resolve) =>
    child.on("close", (code) => resolve({ code, ...output })),
  );
  return { child, output, exited };
}

/** A hub that welcomes each hello and, with `generate`, sends that generation to the first model. */
export async function welcomingHub(generate?: { prompt: string; maxTokens: number }) {
  const hub = new WebSocketServer({ port: 0, host: "127.0.0.1", path: "/agents/connect" });
  await new Promise<void>((resolve) => hub.once("listening", () => resolve()));
  const frames: Array<Record<string, unknown>> = [];
  hub.on("connection", (ws) =>
    ws.on("message", (data) => {
      const frame = JSON.parse(data.toString());
      frames.push(frame);
      if (frame.type !== "hello") return;
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
      if (!generate) return;
      ws.send(
        JSON.stringify({
          type: "generate",
          id: "g1",
          model: frame.models[0].name,
          prompt: generate.prompt,
          params: { maxTokens: generate.maxTokens, temperature: 0 },
        }),
      );
    }),
  );
  return {
    url: `http://127.0.0.1:${(hub.address() as AddressInfo).port}`,
    frames,
    close: () => new Promise<void>((resolve) => hub.close(() => resolve())),
  };
}
