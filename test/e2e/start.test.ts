// `npm start` and `npm run token` as a newcomer uses them: one command brings the stack up, the
// printed token and curl line work, Ctrl-C stops everything, and a second start works too. And
// `npm start` as a supervisor: every way of stopping it, with or without a terminal, leaves
// nothing running, and a crashed agent is restarted while the gateway keeps serving.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import {
  closeSync,
  copyFileSync,
  cpSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  symlinkSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ensureDemoModel } from "../../node-agent/demo-model.ts";
import { REPO_ROOT } from "../../scripts/lib/local-gateway.ts";
import type { Exit } from "../../scripts/lib/process-group.ts";
import { ReferenceEngine } from "../helpers/expected-text.ts";

const CACHE_DIR = join(REPO_ROOT, ".cache/orchard-test");

// A copy of the repository (sources only, node_modules linked) so the test creates its own
// .dev.vars and local state, as a fresh checkout would, without touching the developer's.
let workdir: string;

beforeAll(() => {
  workdir = mkdtempSync(join(tmpdir(), "orchard-start-"));
  for (const entry of [
    "package.json",
    "wrangler.toml",
    "tsconfig.base.json",
    "schema",
    "gateway",
    "node-agent",
    "scripts",
  ]) {
    cpSync(join(REPO_ROOT, entry), join(workdir, entry), { recursive: true });
  }
  symlinkSync(join(REPO_ROOT, "node_modules"), join(workdir, "node_modules"));
});

afterAll(() => {
  rmSync(workdir, { recursive: true, force: true });
});

async function freePort(): Promise<number> {
  return new Promise((done) => {
    const srv = createServer().listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => done(port));
    });
  });
}

function startStack(port: number): { child: ChildProcess; output: () => string; ready: Promise<string> } {
  const child = spawn(process.execPath, ["--import", "tsx", "scripts/start.ts"], {
    cwd: workdir,
    env: { ...process.env, PORT: String(port), ORCHARD_CACHE_DIR: CACHE_DIR },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const ready = new Promise<string>((done, fail) => {
    const onData = (d: Buffer) => {
      out += d.toString();
      if (out.includes("Ctrl-C stops everything")) done(out);
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => fail(new Error(`npm start exited (${code}) before it was ready:\n${out}`)));
  });
  return { child, output: () => out, ready };
}

async function stopWithCtrlC(child: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  child.kill("SIGINT");
  return exited;
}

interface Proc {
  pid: number;
  ppid: number;
  stat: string;
  args: string;
}

function processTable(): Proc[] {
  const ps = spawnSync("ps", ["-A", "-o", "pid=,ppid=,stat=,args="], { encoding: "utf8" });
  return ps.stdout
    .split("\n")
    .map((line) => /^\s*(\d+)\s+(\d+)\s+(\S+)\s+(.*)$/.exec(line))
    .filter((m) => m !== null)
    .map((m) => ({ pid: Number(m[1]), ppid: Number(m[2]), stat: m[3] as string, args: m[4] as string }));
}

/** `root` and every process below it, whatever session or process group it moved to. */
function processTree(root: number): Proc[] {
  const table = processTable();
  const tree = table.filter((p) => p.pid === root);
  for (let i = 0; i < tree.length; i++) {
    const parent = tree[i] as Proc;
    tree.push(...table.filter((p) => p.ppid === parent.pid));
  }
  return tree;
}

/** The processes of `pids` still running (zombies count as gone), after waiting up to `timeoutMs`. */
async function survivors(pids: Iterable<number>, timeoutMs: number): Promise<Proc[]> {
  const wanted = new Set(pids);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = processTable().filter((p) => wanted.has(p.pid) && !p.stat.startsWith("Z"));
    if (alive.length === 0 || Date.now() > deadline) return alive;
    await sleep(100);
  }
}

/** Every process of `procs` has exited within `timeoutMs`; npm start's output says why not. */
async function expectAllGone(procs: Proc[], timeoutMs: number, stack: { log: () => string }): Promise<void> {
  expect(
    await survivors(
      procs.map((p) => p.pid),
      timeoutMs,
    ),
    stack.log(),
  ).toEqual([]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function status(url: string): Promise<number> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    await res.body?.cancel();
    return res.status;
  } catch {
    return 0; // refused or timed out
  }
}

async function waitForStatus(url: string, want: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 0;
  while (Date.now() < deadline) {
    last = await status(url);
    if (last === want) return;
    await sleep(100);
  }
  throw new Error(`${url} did not answer ${want} within ${timeoutMs} ms (last: ${last || "no answer"})`);
}

interface Supervised {
  npm: ChildProcess;
  origin: string;
  log: () => string;
  /** npm's exit: its code, or the signal that ended it. */
  exited: Promise<Exit>;
  /** Every process started so far, as seen now: npm, sh, tsx, npm start's node, workerd, the agent. */
  tree: () => Proc[];
  agent: () => Proc | undefined;
  /** Every process tree() has seen, by pid, with its command line. */
  seen: Map<number, string>;
  /** Holds the log file. */
  dir: string;
}

const running = new Set<Supervised>();

/**
 * `npm start -- ARGS` as a process supervisor or `nohup` starts it: in a session of its own (setsid),
 * no terminal, stdin from /dev/null, output to a file.
 */
async function startWithoutTerminal(args: string[] = []): Promise<Supervised> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "orchard-start-log-"));
  const logFile = join(dir, "npm-start.log");
  const out = openSync(logFile, "w");
  const npm = spawn("npm", ["start", ...(args.length > 0 ? ["--", ...args] : [])], {
    cwd: workdir,
    env: {
      ...process.env,
      PORT: String(port),
      ORCHARD_CACHE_DIR: CACHE_DIR,
      npm_config_update_notifier: "false",
    },
    stdio: ["ignore", out, out],
    detached: true,
  });
  closeSync(out); // npm has its own copy
  const exited = new Promise<Exit>((r) => npm.once("exit", (code, signal) => r({ code, signal })));
  const pid = npm.pid as number;
  const seen = new Map<number, string>();
  const stack: Supervised = {
    npm,
    origin: `http://127.0.0.1:${port}`,
    log: () => readFileSync(logFile, "utf8"),
    exited,
    tree: () => {
      const tree = processTree(pid);
      for (const p of tree) seen.set(p.pid, p.args);
      return tree;
    },
    agent: () => stack.tree().find((p) => p.args.includes("node-agent/main.ts")),
    seen,
    dir,
  };
  running.add(stack);
  return stack;
}

/** npm start's own node process (tsx runs it with its preflight module). */
function supervisorOf(tree: Proc[]): Proc {
  const supervisor = tree.find((p) => p.args.includes("scripts/start.ts") && p.args.includes("preflight"));
  expect(supervisor, JSON.stringify(tree)).toBeDefined();
  return supervisor as Proc;
}

/** Ready as a user sees it: /ready answers 200 and npm start has printed its banner. */
async function waitUntilReady(stack: Supervised): Promise<Proc[]> {
  await waitForStatus(`${stack.origin}/ready`, 200, 60_000);
  const deadline = Date.now() + 10_000;
  while (!stack.log().includes("Ctrl-C stops everything") && Date.now() < deadline) await sleep(100);
  expect(stack.log()).toContain("Ctrl-C stops everything");
  const tree = stack.tree();
  // The check "nothing left running" is only worth something if it saw what was started.
  expect(tree.filter((p) => p.args.includes("workerd")).length, stack.log()).toBeGreaterThan(0);
  expect(tree.filter((p) => p.args.includes("node-agent/main.ts")).length, stack.log()).toBe(1);
  return tree;
}

afterEach(async () => {
  // A failed test must not leave its stack behind for the next one (or the developer).
  // Orphans have left the tree, so every process ever seen goes, if its pid still runs the same.
  for (const stack of running) {
    stack.tree();
    for (const p of processTable()) {
      if (stack.seen.get(p.pid) !== p.args) continue;
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {}
    }
    rmSync(stack.dir, { recursive: true, force: true });
  }
  running.clear();
});

describe("npm start", () => {
  it("serves a completion with the printed token, stops on Ctrl-C, and starts again", async () => {
    const port = await freePort();
    // The demo model is deterministic at temperature 0: the same engine in this process says what
    // the agent must answer.
    const reference = await ReferenceEngine.start(await ensureDemoModel(CACHE_DIR));
    const expected = await reference.answer({ messages: [{ role: "user", content: "Hello" }], maxTokens: 8 });
    await reference.close();
    for (const round of [1, 2]) {
      const { child, ready, output } = startStack(port);
      const banner = await ready;
      expect(banner).toContain(`http://127.0.0.1:${port}`);
      // It says which engine it chose: here no Mac and no Ollama, so llama.cpp with the demo model.
      expect(banner.match(/^Engine: .*$/gm), banner).toEqual([
        expect.stringMatching(
          /^Engine: llama\.cpp with the built-in demo model \(MLX needs Apple Silicon; no Ollama server answers at http:\/\/localhost:11434\)$/,
        ),
      ]);
      const userToken = /User token\s+(\S+)/.exec(banner)?.[1];
      expect(userToken, `round ${round}`).toBeTruthy();
      const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
        method: "POST",
        headers: { Authorization: `Bearer ${userToken}`, "Content-Type": "application/json" },
        body: JSON.stringify({
          model: "demo-random-weights",
          messages: [{ role: "user", content: "Hello" }],
          max_tokens: 8,
          temperature: 0,
        }),
      });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { choices: Array<{ message: { content: string } }> };
      expect(body.choices[0]?.message.content).toBe(expected.text);
      const started = processTree(child.pid as number);
      expect(started.some((p) => p.args.includes("node-agent/main.ts"))).toBe(true);
      expect(await stopWithCtrlC(child)).toBe(0);
      // Everything it started is gone: the port is free again, and no agent is left reconnecting.
      await expect(fetch(`http://127.0.0.1:${port}/health`)).rejects.toThrow();
      await expectAllGone(started, 5_000, { log: output });
    }
  });

  it("refuses a bad PORT with one clear line and exit code 2", () => {
    const r = spawnSync(process.execPath, ["--import", "tsx", "scripts/start.ts"], {
      cwd: workdir,
      env: { ...process.env, PORT: "http" },
      encoding: "utf8",
    });
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe('start: PORT="http" is not a TCP port (1-65535)');
  });

  it("refuses a port that is in use with one clear line and exit code 1", async () => {
    const port = await freePort();
    const taken = createServer().listen(port, "127.0.0.1");
    await once(taken, "listening");
    try {
      const r = spawnSync(process.execPath, ["--import", "tsx", "scripts/start.ts"], {
        cwd: workdir,
        env: { ...process.env, PORT: String(port) },
        encoding: "utf8",
        timeout: 30_000,
      });
      expect(r.status, r.stderr).toBe(1);
      expect(r.stderr.trim()).toBe(
        `start: port ${port} is in use (another npm start?). Stop it or set PORT.`,
      );
    } finally {
      taken.close();
    }
  });

  it.each([
    ["--bogus", "--bogus: unknown option"],
    ["--capacity 0", "--capacity: "],
  ])("refuses the agent flag `%s` with one line and exit code 2 before starting anything", (flags, says) => {
    const started = Date.now();
    const r = spawnSync(process.execPath, ["--import", "tsx", "scripts/start.ts", ...flags.split(" ")], {
      cwd: workdir,
      env: { ...process.env, PORT: "1" },
      encoding: "utf8",
      timeout: 30_000,
    });
    expect(r.status, r.stderr).toBe(2);
    const lines = r.stderr.trim().split("\n");
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toContain(`start: invalid agent configuration: ${says}`);
    // Nothing was started: no migrations, no gateway (PORT=1 could not have been bound anyway).
    expect(r.stdout).not.toContain("Applying D1 migrations");
    expect(Date.now() - started).toBeLessThan(15_000);
  });
});

describe("npm start as a supervisor, started without a terminal", () => {
  // How each signal path reaches npm start: the whole process group (a supervisor, `kill -- -PGID`,
  // Ctrl-C in a terminal), npm alone (it forwards to `sh`, which dies without passing it on), or
  // npm start's own node process alone. SIGKILL leaves no handler a chance: the children notice.
  it.each([
    { signal: "SIGTERM", to: "group" },
    { signal: "SIGINT", to: "group" },
    { signal: "SIGTERM", to: "npm" },
    { signal: "SIGTERM", to: "start.ts" },
    { signal: "SIGKILL", to: "npm" },
    { signal: "SIGKILL", to: "start.ts" },
  ] as const)("stops everything on $signal to $to", { timeout: 120_000 }, async ({ signal, to }) => {
    const stack = await startWithoutTerminal();
    const started = await waitUntilReady(stack);
    const target = { group: -(stack.npm.pid as number), npm: stack.npm.pid as number };
    process.kill(to === "start.ts" ? supervisorOf(started).pid : target[to], signal);

    await expectAllGone(started, 30_000, stack);
    expect(await status(`${stack.origin}/health`)).toBe(0);
    if (signal !== "SIGKILL" || to === "npm") {
      expect(stack.log()).toContain("Stopping");
      expect(stack.log()).toContain("Stopped.");
      // The agent was drained, not killed.
      expect(stack.log()).toContain('"msg":"drained"');
    }
    // Only a signal to start.ts alone lets npm see how it ended; npm itself dies of the others.
    if (to === "start.ts" && signal === "SIGTERM")
      expect(await stack.exited).toEqual({ code: 0, signal: null });
  });

  it("a second signal during the drain stops everything at once", { timeout: 90_000 }, async () => {
    const stack = await startWithoutTerminal();
    const started = await waitUntilReady(stack);
    // A stopped agent never finishes its drain: without the second signal npm start would wait
    // for the drain deadline (30 s by default).
    process.kill((stack.agent() as Proc).pid, "SIGSTOP");
    process.kill(-(stack.npm.pid as number), "SIGTERM");
    await sleep(1_500);
    // npm is gone by now (it dies as soon as its `sh` does); npm start's node is not.
    const second = Date.now();
    process.kill(supervisorOf(started).pid, "SIGTERM");
    await expectAllGone(started, 10_000, stack);
    expect(Date.now() - second).toBeLessThan(10_000);
    expect(stack.log()).toContain("second SIGTERM: stopping now");
  });

  it("restarts a crashed agent while the gateway keeps serving", { timeout: 120_000 }, async () => {
    const stack = await startWithoutTerminal();
    await waitUntilReady(stack);
    const first = stack.agent() as Proc;

    const health: number[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        health.push(await status(`${stack.origin}/health`));
        await sleep(100);
      }
    })();
    process.kill(first.pid, "SIGKILL");
    await waitForStatus(`${stack.origin}/ready`, 503, 10_000);
    await waitForStatus(`${stack.origin}/ready`, 200, 60_000);
    polling = false;
    await poller;

    const second = stack.agent();
    expect(second?.pid, stack.log()).toBeDefined();
    expect(second?.pid).not.toBe(first.pid);
    expect(health.length).toBeGreaterThan(10);
    expect(health.filter((s) => s !== 200)).toEqual([]);
    expect(stack.log()).toMatch(/start: the agent exited \(SIGKILL\) after \d+s; restarting it in 1s/);

    const started = stack.tree();
    process.kill(-(stack.npm.pid as number), "SIGTERM");
    await expectAllGone(started, 30_000, stack);
  });

  it("stops when its agent is revoked, and the next npm start restores its own agent", {
    timeout: 120_000,
  }, async () => {
    const first = await startWithoutTerminal();
    const started = await waitUntilReady(first);
    const adminToken = /Admin token\s+(\S+)/.exec(first.log())?.[1];
    expect(adminToken, first.log()).toBeTruthy();
    const revoke = await fetch(`${first.origin}/agents/local-vm/revoke`, {
      method: "POST",
      headers: { Authorization: `Bearer ${adminToken}` },
    });
    expect(revoke.status).toBe(200);
    // Revoked is terminal for the agent (exit 3): restarting it would be refused the same way.
    const exit = await Promise.race([first.exited, sleep(30_000).then(() => "still running")]);
    expect(exit, first.log()).toEqual({ code: 3, signal: null });
    expect(first.log()).toContain("a restarted agent would be refused the same way");
    await expectAllGone(started, 10_000, first);

    // The local agent is npm start's own: the next start restores it instead of stopping again.
    const second = await startWithoutTerminal();
    await waitUntilReady(second);
    expect(second.log()).toContain(
      "The local agent local-vm was revoked in the local database; npm start restored it.",
    );
    const events = await fetch(`${second.origin}/agents/local-vm/events`, {
      headers: { Authorization: `Bearer ${/Admin token\s+(\S+)/.exec(second.log())?.[1]}` },
    });
    const body = (await events.json()) as {
      agent: { revoked: boolean };
      events: { action: string; actor: string }[];
    };
    expect(body.agent.revoked).toBe(false);
    expect(body.events.slice(0, 2).map((e) => [e.action, e.actor])).toEqual([
      ["agent.restore", "local-admin"],
      ["agent.revoke", "local-admin"],
    ]);
    const tree = second.tree();
    process.kill(-(second.npm.pid as number), "SIGTERM");
    await expectAllGone(tree, 30_000, second);
  });

  it("stops with the agent's message when a restarted agent finds its configuration bad", {
    timeout: 120_000,
  }, async () => {
    // A model file that disappears while npm start runs: the restarted agent refuses to start
    // (exit 2), and restarting it again would fail the same way.
    const modelDir = mkdtempSync(join(tmpdir(), "orchard-start-model-"));
    const model = join(modelDir, "tiny.gguf");
    copyFileSync(await ensureDemoModel(CACHE_DIR), model);
    const stack = await startWithoutTerminal(["--model", `tiny=${model}`]);
    const started = await waitUntilReady(stack);
    rmSync(modelDir, { recursive: true });
    process.kill((stack.agent() as Proc).pid, "SIGKILL");

    const exit = await Promise.race([stack.exited, sleep(30_000).then(() => "still running")]);
    expect(exit, stack.log()).toEqual({ code: 2, signal: null });
    expect(stack.log()).toContain(`orchard-agent: invalid configuration: --model`);
    expect(stack.log()).toContain("start: the agent's configuration is invalid (exit 2");
    expect(stack.log().match(/restarting it in/g)).toHaveLength(1);
    await expectAllGone(started, 10_000, stack);
  });
});

describe("npm run token", () => {
  it("prints a token on the last line signed with the local secret", () => {
    const r = spawnSync(
      process.execPath,
      ["--import", "tsx", "scripts/token.ts", "--role", "admin", "--sub", "ops"],
      {
        cwd: workdir,
        encoding: "utf8",
      },
    );
    expect(r.status).toBe(0);
    const token = r.stdout.trim().split("\n").at(-1) ?? "";
    const payload = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString()) as Record<
      string,
      unknown
    >;
    expect(payload).toMatchObject({ role: "admin", sub: "ops" });
    expect((payload.exp as number) - (payload.iat as number)).toBe(3600);
  });

  it("rejects a bad --ttl with exit code 2", () => {
    const r = spawnSync(
      process.execPath,
      ["--import", "tsx", "scripts/token.ts", "--role", "user", "--sub", "a", "--ttl", "soon"],
      {
        cwd: workdir,
        encoding: "utf8",
      },
    );
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("--ttl");
  });
});
