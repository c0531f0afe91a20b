// Finds the processes that launched npm start (npm, the `sh -c` it runs the script in, the tsx
// CLI) and reports when one of them is gone. npm forwards SIGINT/SIGTERM only to that `sh`,
// which dies without passing them on, and a SIGKILLed npm tells nobody: without this watch the
// stack would keep running with nobody left to stop it. Ancestors above npm (the shell that ran
// it, perhaps long gone after `nohup npm start &`) are not watched.
import { execFileSync } from "node:child_process";

interface ProcessInfo {
  ppid: number;
  args: string;
}

/** `ps` is on every macOS and Linux; without it (or for pid 1) there is nothing to watch. */
function processInfo(pid: number): ProcessInfo | undefined {
  if (pid <= 1) return undefined;
  try {
    const out = execFileSync("ps", ["-o", "ppid=", "-o", "args=", "-p", String(pid)], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    });
    const m = /^\s*(\d+)\s+(.*)$/.exec(out.trim());
    return m ? { ppid: Number(m[1]), args: m[2] as string } : undefined;
  } catch {
    return undefined;
  }
}

export interface Launcher {
  pid: number;
  args: string;
}

/**
 * The ancestors that exist only to run `script`: those whose command line names it (tsx, the
 * `sh -c`), then the package manager above them when it ran `script` as an npm script.
 */
export function findLaunchers(script: string, env: NodeJS.ProcessEnv = process.env): Launcher[] {
  const launchers: Launcher[] = [];
  let pid = process.ppid;
  for (let info = processInfo(pid); info; info = processInfo(pid)) {
    const mentionsScript = info.args.includes(script);
    if (mentionsScript || env.npm_lifecycle_script?.includes(script))
      launchers.push({ pid, args: info.args });
    if (!mentionsScript) break;
    pid = info.ppid;
  }
  return launchers;
}

/** Calls `onGone` once, within about `intervalMs`, when any of `launchers` has exited. */
export function watchLaunchers(
  launchers: Launcher[],
  onGone: (launcher: Launcher) => void,
  intervalMs = 1_000,
): () => void {
  if (launchers.length === 0) return () => {};
  const timer = setInterval(() => {
    const gone = launchers.find((l) => !isAlive(l.pid));
    if (!gone) return;
    clearInterval(timer);
    onGone(gone);
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
