// A real local stack for end-to-end tests: the gateway Worker in workerd with its own D1 and
// Durable Object state in a temp dir, and real node-agent processes started and killed at will.
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { type LocalGateway, REPO_ROOT, startLocalGateway } from "../../scripts/lib/local-gateway.ts";
import { mintToken, type Role } from "../../scripts/lib/token.ts";

export interface AgentProcess {
  id: string;
  child: ChildProcess;
  /** Every log line the agent wrote (stdout and stderr), parsed when JSON. */
  lines: string[];
  waitForLog(predicate: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  waitForExit(timeoutMs?: number): Promise<number | null>;
  /** SIGKILL: the agent gets no chance to say goodbye. */
  kill(): Promise<void>;
  /** SIGTERM: graceful drain. Resolves with the exit code. */
  stop(): Promise<number | null>;
}

export interface Stack {
  gateway: LocalGateway;
  origin: string;
  secret: string;
  stateDir: string;
  cacheDir: string;
  token(role: Role, sub?: string, ttlSeconds?: number): Promise<string>;
  /**
   * Starts a node agent process. `main` runs another build of the agent (e.g. an older release
   * checked out for a rolling-upgrade test) instead of this checkout's node-agent/main.ts.
   */
  startAgent(options?: {
    id?: string;
    args?: string[];
    env?: Record<string, string>;
    main?: string;
  }): Promise<AgentProcess>;
  /**
   * Stops the Worker (every socket and in-flight request dies with it) and starts a new one on the
   * same port with the same state directory, secret and vars, as a redeploy would. `stack.gateway`
   * is replaced; `stack.origin` stays the same.
   */
  restartGateway(options?: { downMs?: number }): Promise<void>;
  /** Polls GET /agents until `predicate` holds for the list. */
  waitForAgents(predicate: (agents: AgentView[]) => boolean, timeoutMs?: number): Promise<AgentView[]>;
  stop(): Promise<void>;
}

export interface AgentView {
  id: string;
  inFlight: number;
  capacity: number;
  models: Array<{ name: string }>;
  draining?: boolean;
  [k: string]: unknown;
}

let agentCounter = 0;

const E2E_RATE_LIMITS = JSON.stringify({
  user: { rpm: 1_000_000, tpm: 1_000_000_000, concurrency: 10_000 },
  admin: { rpm: 1_000_000, tpm: 1_000_000_000, concurrency: 10_000 },
});

export async function startStack(
  options: {
    vars?: Record<string, string>;
    /** The Worker's log level (default "error"); "info" shows the gateway's structured logs. */
    logLevel?: "none" | "error" | "warn" | "info" | "log" | "debug";
  } = {},
): Promise<Stack> {
  const stateDir = mkdtempSync(join(tmpdir(), "orchard-e2e-"));
  const cacheDir = resolve(REPO_ROOT, ".cache/orchard-test");
  const secret = randomBytes(32).toString("hex");
  // Rate limits out of reach unless a test sets RATE_LIMITS: e2e callers are one subject each.
  const vars = { RATE_LIMITS: E2E_RATE_LIMITS, ...options.vars };
  const gateway = await startLocalGateway({
    persistDir: stateDir,
    secret,
    vars,
    logLevel: options.logLevel ?? "error",
  });
  const agents = new Set<AgentProcess>();
  const adminToken = await mintToken({ secret, role: "admin", sub: "e2e-admin" });

  const stack: Stack = {
    gateway,
    origin: gateway.origin,
    secret,
    stateDir,
    cacheDir,
    token: (role, sub = `e2e-${role}`, ttlSeconds) => mintToken({ secret, role, sub, ttlSeconds }),
    async startAgent({ id = `agent-${process.pid}-${++agentCounter}`, args = [], env = {}, main } = {}) {
      const token = await mintToken({ secret, role: "agent", sub: id });
      const agent = spawnAgent(id, stack.origin, token, cacheDir, args, env, main);
      agents.add(agent);
      agent.child.once("exit", () => agents.delete(agent));
      await agent.waitForLog((l) => l.includes('"msg":"connected"'), 60_000);
      return agent;
    },
    async restartGateway({ downMs = 0 } = {}) {
      const port = Number(stack.gateway.url.port);
      await stack.gateway.dispose();
      if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
      // The old listener may take a moment to release the port.
      for (let attempt = 1; ; attempt++) {
        try {
          stack.gateway = await startLocalGateway({
            persistDir: stateDir,
            secret,
            vars,
            port,
            logLevel: options.logLevel ?? "error",
          });
          return;
        } catch (err) {
          if (attempt >= 5) throw err;
          await new Promise((r) => setTimeout(r, 200 * attempt));
        }
      }
    },
    async waitForAgents(predicate, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      let last: AgentView[] = [];
      while (Date.now() < deadline) {
        // A gateway being restarted refuses connections for a moment: keep polling.
        const res = await fetch(`${stack.origin}/agents`, {
          headers: { Authorization: `Bearer ${adminToken}` },
          signal: AbortSignal.timeout(5_000),
        }).catch(() => undefined);
        if (res?.ok) {
          const body = (await res.json()) as { agents: AgentView[] };
          last = body.agents;
          if (predicate(last)) return last;
        } else {
          await res?.body?.cancel();
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`agents never reached the expected state; last: ${JSON.stringify(last)}`);
    },
    async stop() {
      await Promise.all([...agents].map((a) => a.kill()));
      await stack.gateway.dispose();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
  return stack;
}

function spawnAgent(
  id: string,
  origin: string,
  token: string,
  cacheDir: string,
  args: string[],
  env: Record<string, string>,
  main = resolve(REPO_ROOT, "node-agent/main.ts"),
): AgentProcess {
  const child = spawn(process.execPath, ["--import", "tsx", main, "start", "--name", id, ...args], {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      ORCHARD_GATEWAY_URL: origin,
      ORCHARD_AGENT_TOKEN: token,
      ORCHARD_CACHE_DIR: cacheDir,
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  let partial = "";
  const onData = (d: Buffer) => {
    partial += d.toString();
    const parts = partial.split("\n");
    partial = parts.pop() ?? "";
    for (const p of parts) if (p.trim()) lines.push(p);
    for (const w of waiters) w();
  };
  child.stdout?.on("data", onData);
  child.stderr?.on("data", onData);
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));

  const agent: AgentProcess = {
    id,
    child,
    lines,
    waitForLog(predicate, timeoutMs = 30_000) {
      return new Promise((done, fail) => {
        const check = () => {
          const hit = lines.find(predicate);
          if (hit !== undefined) {
            cleanup();
            done(hit);
          } else if (child.exitCode !== null) {
            cleanup();
            fail(
              new Error(
                `agent ${id} exited (${child.exitCode}) before the expected log line:\n${lines.join("\n")}`,
              ),
            );
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          fail(
            new Error(
              `agent ${id}: expected log line not seen in ${timeoutMs} ms:\n${lines.slice(-20).join("\n")}`,
            ),
          );
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
          child.off("exit", check);
        };
        waiters.add(check);
        child.on("exit", check);
        check();
      });
    },
    waitForExit(timeoutMs = 30_000) {
      return Promise.race([
        exited,
        new Promise<never>((_, fail) =>
          setTimeout(
            () => fail(new Error(`agent ${id} did not exit within ${timeoutMs} ms`)),
            timeoutMs,
          ).unref(),
        ),
      ]);
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exited;
    },
  };
  return agent;
}

/** Reads an SSE response into its events. */
export async function readSse(res: Response): Promise<Array<{ event: string; data: string }>> {
  const text = await res.text();
  const events: Array<{ event: string; data: string }> = [];
  for (const block of text.split(/\n\n/)) {
    if (!block.trim()) continue;
    let event = "message";
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
    }
    events.push({ event, data: data.join("\n") });
  }
  return events;
}
