// Child processes of the bench (Worker hosts, agents, the trivial server): each in its own process
// group, spoken to over IPC, stopped by pid (gracefully first, then the whole group by SIGKILL).
import { type ChildProcess, spawn } from "node:child_process";
import { REPO_ROOT } from "../../scripts/lib/local-gateway.ts";

export interface BenchChild {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** The last lines of its stdout/stderr, for error messages. */
  tail(lines?: number): string;
  /** Resolves with the first IPC message of `type` (rejects if the child exits first). */
  waitFor<T = Record<string, unknown>>(type: string, timeoutMs?: number): Promise<T>;
  /** Request/response over IPC: sends {id, ...msg}, resolves with the reply carrying the same id. */
  call<T = Record<string, unknown>>(msg: Record<string, unknown>, timeoutMs?: number): Promise<T>;
  send(msg: Record<string, unknown>): void;
  /** Asks it to stop (IPC "stop"), waits `graceMs`, then SIGKILLs its process group. */
  stop(graceMs?: number): Promise<void>;
}

const live = new Set<BenchChild>();
let nextCallId = 0;

/** Runs a TypeScript file under tsx as a child with IPC, in its own process group. */
export function spawnTs(name: string, file: string, args: string[] = [], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, ["--import", "tsx", file, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe", "ipc"],
    detached: true,
  });
  const lines: string[] = [];
  // BENCH_CHILD_OUTPUT=1 passes every child's output through (with BENCH_WORKER_LOG_LEVEL=info,
  // the Workers' own log lines), prefixed with the child's name, for diagnosis.
  const echo = process.env.BENCH_CHILD_OUTPUT === "1";
  const keep = (d: Buffer) => {
    if (echo)
      for (const line of d.toString().split("\n").filter(Boolean))
        process.stderr.write(`[${name}] ${line}\n`);
    lines.push(...d.toString().split("\n").filter(Boolean));
    if (lines.length > 200) lines.splice(0, lines.length - 200);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const pending = new Map<number, (m: Record<string, unknown>) => void>();
  child.on("message", (m: Record<string, unknown>) => {
    if (typeof m?.id === "number" && pending.has(m.id)) {
      const resolve = pending.get(m.id);
      pending.delete(m.id);
      resolve?.(m);
    }
  });
  const handle: BenchChild = {
    name,
    child,
    pid: child.pid as number,
    tail: (n = 40) => lines.slice(-n).join("\n"),
    waitFor<T>(type: string, timeoutMs = 120_000) {
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(
          () => fail(new Error(`${name}: no "${type}" within ${timeoutMs} ms`)),
          timeoutMs,
        );
        const onMessage = (m: Record<string, unknown>) => {
          if (m?.type === "failed") fail(new Error(`${name} failed: ${String(m.error)}`));
          else if (m?.type === type) {
            cleanup();
            resolve(m as T);
          }
        };
        const onExit = (code: number | null) => fail(new Error(`${name} exited (${code}) before "${type}"`));
        const fail = (err: Error) => {
          cleanup();
          reject(new Error(`${err.message}\n--- ${name} output ---\n${handle.tail()}`));
        };
        const cleanup = () => {
          clearTimeout(timer);
          child.off("message", onMessage);
          child.off("exit", onExit);
        };
        child.on("message", onMessage);
        child.once("exit", onExit);
      });
    },
    call<T>(msg: Record<string, unknown>, timeoutMs = 300_000) {
      const id = ++nextCallId;
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`${name}: no reply to ${String(msg.type)} within ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, (m) => {
          clearTimeout(timer);
          if (m.error !== undefined) reject(new Error(`${name}: ${String(m.error)}`));
          else resolve(m as T);
        });
        child.send({ ...msg, id });
      });
    },
    send(msg) {
      if (child.connected) child.send(msg);
    },
    async stop(graceMs = 5_000) {
      live.delete(handle);
      if (child.exitCode === null && child.signalCode === null) {
        handle.send({ type: "stop" });
        await Promise.race([exited, new Promise((r) => setTimeout(r, graceMs).unref())]);
      }
      killGroup(handle.pid);
      await Promise.race([exited, new Promise((r) => setTimeout(r, 2_000).unref())]);
    },
  };
  live.add(handle);
  return handle;
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // Already gone.
  }
}

/** Last resort on exit or interrupt: kill every child group still alive. */
export function killAllChildren(): void {
  for (const c of live) killGroup(c.pid);
  live.clear();
}
