// Children of npm start in process groups of their own (spawned with `detached: true`): end a
// whole group at once (the child and what it spawned: workerd, tsx's esbuild service), and
// wait for a child's exit.
import type { ChildProcess } from "node:child_process";

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Signals every process in `child`'s group; a group that is already gone is not an error. */
export function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
  }
}

export function waitForExit(child: ChildProcess): Promise<Exit> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((done) => child.once("exit", (code, signal) => done({ code, signal })));
}

export function describeExit({ code, signal }: Exit): string {
  return signal ?? `code ${code}`;
}
