// Machine facts printed at the top of every run and stored with its results.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { availableParallelism, loadavg, totalmem } from "node:os";
import { resolve } from "node:path";
import { REPO_ROOT } from "../../scripts/lib/local-gateway.ts";

export interface MachineFacts {
  date: string;
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  node: string;
  platform: string;
  gitCommit: string;
  /** Files changed in the working tree versus the commit (the code measured is the tree). */
  gitDirtyFiles: number;
  wrangler: string;
  workerd: string;
  openFilesLimit: string;
  loadAverageAtStart: number[];
}

function git(args: string[]): string {
  try {
    return execFileSync("git", args, { cwd: REPO_ROOT, encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
}

function packageVersion(name: string): string {
  try {
    const pkg = JSON.parse(readFileSync(resolve(REPO_ROOT, "node_modules", name, "package.json"), "utf8"));
    return String(pkg.version);
  } catch {
    return "unknown";
  }
}

export function machineFacts(): MachineFacts {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const cpuModel = /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.trim() ?? "unknown";
  let openFilesLimit = "unknown";
  try {
    openFilesLimit = execFileSync("sh", ["-c", "echo $(ulimit -Sn) soft / $(ulimit -Hn) hard"], {
      encoding: "utf8",
    }).trim();
  } catch {
    // keep unknown
  }
  const status = git(["status", "--porcelain"]);
  return {
    date: new Date().toISOString(),
    cpuModel,
    cores: availableParallelism(),
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    gitCommit: git(["rev-parse", "HEAD"]),
    gitDirtyFiles: status === "unknown" || status === "" ? 0 : status.split("\n").length,
    wrangler: packageVersion("wrangler"),
    workerd: packageVersion("workerd"),
    openFilesLimit,
    loadAverageAtStart: loadavg().map((v) => Math.round(v * 100) / 100),
  };
}

export function formatFacts(f: MachineFacts): string {
  return [
    `date        ${f.date}`,
    `git         ${f.gitCommit}${f.gitDirtyFiles ? ` + ${f.gitDirtyFiles} uncommitted file(s) (the tree is what runs)` : ""}`,
    `cpu         ${f.cpuModel}, ${f.cores} cores, ${f.memoryGiB} GiB`,
    `runtime     node ${f.node} (${f.platform}), wrangler ${f.wrangler}, workerd ${f.workerd}`,
    `open files  ${f.openFilesLimit}`,
    `load avg    ${f.loadAverageAtStart.join(" ")} at start (other work on this machine shows up here)`,
  ].join("\n");
}

/** Busy and total CPU time of the whole machine so far (ms), from /proc/stat. */
function machineCpu(): { busy: number; total: number; steal: number } {
  const cols = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "")
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = cols;
  const busy = user + nice + system + irq + softirq + steal;
  return { busy: busy * 10, total: (busy + idle + iowait) * 10, steal: steal * 10 };
}

/**
 * How busy the machine was with work that is not this benchmark: machine CPU minus the CPU of this
 * process and its descendants. Descendants are sampled every second, so children that exit before
 * the end (stopped Workers, agents) still count (up to their last second).
 */
export class ForeignLoadMonitor {
  private readonly machine0 = machineCpu();
  private readonly first = new Map<number, number>();
  private readonly last = new Map<number, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly pids: () => number[],
    private readonly cpuMs: (pid: number) => number | undefined,
  ) {
    this.sample(true);
    this.timer = setInterval(() => this.sample(false), 1_000);
    this.timer.unref();
  }

  private sample(initial: boolean): void {
    for (const pid of this.pids()) {
      const ms = this.cpuMs(pid);
      if (ms === undefined) continue;
      // A process born after the start counts from zero.
      if (!this.first.has(pid)) this.first.set(pid, initial ? ms : 0);
      this.last.set(pid, ms);
    }
  }

  /** Other processes' CPU as % of all cores, and the benchmark's own, since construction. */
  stop(): { foreignPercent: number; benchPercent: number; stealPercent: number } {
    this.sample(false);
    clearInterval(this.timer);
    const m = machineCpu();
    const total = Math.max(1, m.total - this.machine0.total);
    let bench = 0;
    for (const [pid, ms] of this.last) bench += ms - (this.first.get(pid) ?? 0);
    const busy = m.busy - this.machine0.busy;
    return {
      foreignPercent: Math.max(0, ((busy - bench) / total) * 100),
      benchPercent: (bench / total) * 100,
      // CPU the hypervisor gave to other guests while this one wanted it.
      stealPercent: ((m.steal - this.machine0.steal) / total) * 100,
    };
  }
}
