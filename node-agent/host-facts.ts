// Samples the host facts an agent reports in `hello` and every `health` frame: memory in use and
// the OS's memory pressure, swap, CPU busy share, load average, and GPU utilization where the OS
// tells it without root.
//
// Sources. macOS: `vm_stat` (wired + active + compressed pages in use; free + inactive +
// speculative + purgeable available), `sysctl -n kern.memorystatus_vm_pressure_level` (the
// kernel's own pressure verdict, 1/2/4), `sysctl -n vm.swapusage`, and `ioreg -r -d 1 -w 0 -c
// IOAccelerator` ("Device Utilization %" in PerformanceStatistics, published without root on
// Apple Silicon). Linux: /proc/meminfo (MemTotal - MemAvailable; SwapTotal - SwapFree) and
// /proc/pressure/memory (PSI, mapped in host-facts-parse.ts). CPU everywhere: os.cpus() deltas.
//
// systeminformation (npm) was considered and not used: its mem() (read at 5.33.1) reports macOS
// `used` as os.totalmem() - os.freemem(), which counts the file cache macOS keeps full on purpose,
// and `active` as anonymous - purgeable + wired + compressed; it reads the page size with
// execSync (blocking the event loop) and pipes vm_stat through a shell into egrep; it has no
// memory pressure and no Apple GPU utilization (graphics() runs system_profiler, seconds long).
// The four programs above are run here with execFile (no shell), by absolute path, with a
// timeout, at most once per refresh interval; a source that fails is left out and logged once.
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import os from "node:os";
import type { HostFacts } from "../schema/protocol.ts";
import {
  parseIoregGpuPercent,
  parseMeminfo,
  parsePressureLevel,
  parsePsiSomeAvg10,
  parseSwapUsage,
  psiPressure,
  readVmStat,
  vmStatAvailableBytes,
  vmStatUsedBytes,
} from "./host-facts-parse.ts";
import { errorMessage, type Logger, silentLogger } from "./log.ts";

/** The facts only the OS's tools and files know, refreshed together. */
export type OsFacts = Partial<
  Pick<HostFacts, "memoryUsedBytes" | "memoryFreeBytes" | "memoryPressure" | "gpuPercent" | "swapUsedBytes">
>;

/** How the sampler reaches the OS; tests pass their own. */
export interface HostFactsIo {
  /** Runs a program directly (never through a shell) and resolves its stdout. */
  run(file: string, args: readonly string[]): Promise<string>;
  readText(path: string): Promise<string>;
}

/** A command that does not answer within this is killed, and its facts are left out. */
export const COMMAND_TIMEOUT_MS = 1_500;

/** Runs `file` with execFile: no shell, a timeout, output bounded (ioreg prints ~50 KB per GPU). */
export function execFileText(file: string, args: readonly string[], timeoutMs = COMMAND_TIMEOUT_MS) {
  return new Promise<string>((resolve, reject) => {
    execFile(
      file,
      args,
      { encoding: "utf8", timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024, windowsHide: true },
      (error, stdout) => (error ? reject(error) : resolve(stdout)),
    );
  });
}

export const systemIo: HostFactsIo = {
  run: (file, args) => execFileText(file, args),
  readText: (path) => readFile(path, "utf8"),
};

/** One thing read from the OS, and the facts it gives; undefined when its text does not parse. */
interface Source {
  name: string;
  read(io: HostFactsIo): Promise<string>;
  parse(text: string): OsFacts | undefined;
}

/** The facts that have a value, or undefined when none has. */
function present(facts: { [K in keyof OsFacts]: OsFacts[K] | undefined }): OsFacts | undefined {
  const known = Object.entries(facts).filter(([, value]) => value !== undefined);
  return known.length > 0 ? (Object.fromEntries(known) as OsFacts) : undefined;
}

const DARWIN_SOURCES: readonly Source[] = [
  {
    name: "vm_stat",
    read: (io) => io.run("/usr/bin/vm_stat", []),
    parse: (text) => {
      const vm = readVmStat(text);
      return (
        vm && present({ memoryUsedBytes: vmStatUsedBytes(vm), memoryFreeBytes: vmStatAvailableBytes(vm) })
      );
    },
  },
  {
    name: "sysctl kern.memorystatus_vm_pressure_level",
    read: (io) => io.run("/usr/sbin/sysctl", ["-n", "kern.memorystatus_vm_pressure_level"]),
    parse: (text) => present({ memoryPressure: parsePressureLevel(text) }),
  },
  {
    name: "sysctl vm.swapusage",
    read: (io) => io.run("/usr/sbin/sysctl", ["-n", "vm.swapusage"]),
    parse: (text) => present({ swapUsedBytes: parseSwapUsage(text) }),
  },
  {
    name: "ioreg IOAccelerator",
    read: (io) => io.run("/usr/sbin/ioreg", ["-r", "-d", "1", "-w", "0", "-c", "IOAccelerator"]),
    parse: (text) => present({ gpuPercent: parseIoregGpuPercent(text) }),
  },
];

const LINUX_SOURCES: readonly Source[] = [
  {
    name: "/proc/meminfo",
    read: (io) => io.readText("/proc/meminfo"),
    parse: (text) => {
      const mem = parseMeminfo(text);
      return (
        mem &&
        present({
          memoryUsedBytes: mem.usedBytes,
          memoryFreeBytes: mem.availableBytes,
          swapUsedBytes: mem.swapUsedBytes,
        })
      );
    },
  },
  {
    name: "/proc/pressure/memory",
    read: (io) => io.readText("/proc/pressure/memory"),
    parse: (text) => {
      const someAvg10 = parsePsiSomeAvg10(text);
      return present({ memoryPressure: someAvg10 === undefined ? undefined : psiPressure(someAvg10) });
    },
  },
];

/** No such program or file (ENOENT), or a kernel built without it (PSI off: EOPNOTSUPP). */
const absentCodes = new Set(["ENOENT", "EOPNOTSUPP"]);

function sourcesFor(platform: string): readonly Source[] {
  if (platform === "darwin") return DARWIN_SOURCES;
  if (platform === "linux") return LINUX_SOURCES;
  return [];
}

interface CpuTotals {
  busy: number;
  total: number;
}

/** Busy and total CPU time across all cores, in ms, from os.cpus(); undefined if unavailable. */
function cpuTotals(): CpuTotals | undefined {
  const cpus = os.cpus();
  if (cpus.length === 0) return undefined;
  let busy = 0;
  let total = 0;
  for (const { times } of cpus) {
    const all = times.user + times.nice + times.sys + times.irq + times.idle;
    total += all;
    busy += all - times.idle;
  }
  return { busy, total };
}

/**
 * The GPU, when it can be known without spawning a tool: Apple Silicon Macs have exactly one,
 * integrated and named after the chip. Elsewhere it is omitted (system_profiler takes a second).
 */
export function knownGpu(platform: string, arch: string, cpuModel: string | undefined): string | undefined {
  if (platform === "darwin" && arch === "arm64" && cpuModel?.startsWith("Apple ")) return `${cpuModel} GPU`;
  return undefined;
}

export interface HostFactsSamplerOptions {
  /** Told once when a source stops reading, and once when it reads again. */
  log?: Logger;
  /** Default process.platform. */
  platform?: string;
  io?: HostFactsIo;
  /** The OS is asked again only when its last answer is older than this. Default 1000. */
  minRefreshMs?: number;
  now?: () => number;
}

export class HostFactsSampler {
  private lastCpu = cpuTotals();
  private lastProcessCpu = process.cpuUsage();
  private lastWall = process.hrtime.bigint();
  private readonly cpuModel = os.cpus()[0]?.model.trim().slice(0, 256) || undefined;
  private readonly platform: string;
  private readonly gpu: string | undefined;
  private readonly sources: readonly Source[];
  private readonly io: HostFactsIo;
  private readonly log: Logger;
  private readonly minRefreshMs: number;
  private readonly now: () => number;
  private osFacts: OsFacts = {};
  private refreshedAt = Number.NEGATIVE_INFINITY;
  private refreshing: Promise<void> | undefined;
  private readonly failing = new Set<string>();

  /** Starts reading the OS at once, so the first `hello` has its facts. */
  constructor(options: HostFactsSamplerOptions = {}) {
    this.platform = options.platform ?? process.platform;
    this.gpu = knownGpu(this.platform, process.arch, this.cpuModel);
    this.sources = sourcesFor(this.platform);
    this.io = options.io ?? systemIo;
    this.log = options.log ?? silentLogger;
    this.minRefreshMs = options.minRefreshMs ?? 1_000;
    this.now = options.now ?? (() => performance.now());
    void this.refresh();
  }

  /**
   * Current facts without waiting: the OS's as last read (asking again in the background when
   * stale). cpuPercent is the host's busy share (0–100) since the previous call, from os.cpus()
   * time deltas; where os.cpus() is empty, this process's share from process.cpuUsage().
   */
  sample(): HostFacts {
    void this.refresh();
    return this.facts();
  }

  /** Facts with the OS's read afresh, unless its last answer is younger than minRefreshMs. */
  async fresh(): Promise<HostFacts> {
    await this.refresh();
    return this.facts();
  }

  /** Reads every source once (one read at a time, shared by concurrent callers). */
  refresh(): Promise<void> {
    if (this.refreshing) return this.refreshing;
    if (this.now() - this.refreshedAt < this.minRefreshMs) return Promise.resolve();
    this.refreshedAt = this.now();
    this.refreshing = Promise.all(this.sources.map((source) => this.read(source)))
      .then((parts) => {
        this.osFacts = Object.assign({}, ...parts);
      })
      .finally(() => {
        this.refreshing = undefined;
      });
    return this.refreshing;
  }

  private async read(source: Source): Promise<OsFacts> {
    let facts: OsFacts | undefined;
    let error: string;
    let errorCode: unknown;
    try {
      facts = source.parse(await source.read(this.io));
      error = "its output did not read as expected";
    } catch (err) {
      error = errorMessage(err);
      errorCode = (err as { code?: unknown } | undefined)?.code;
    }
    if (facts) {
      if (this.failing.delete(source.name))
        this.log.info("host fact source reads again", { source: source.name });
      return facts;
    }
    if (!this.failing.has(source.name)) {
      this.failing.add(source.name);
      // A tool or file this OS does not have is how the host is, not a fault worth a warning.
      const absent = absentCodes.has(String(errorCode));
      this.log[absent ? "info" : "warn"]("host fact source unavailable; its facts are left out", {
        source: source.name,
        error,
      });
    }
    return {};
  }

  private facts(): HostFacts {
    const cpuCount = os.availableParallelism();
    const cpuPercent = this.cpuPercent(cpuCount);
    const load = os.loadavg()[0];
    const { memoryFreeBytes, ...osFacts } = this.osFacts;
    return {
      platform: this.platform,
      arch: process.arch,
      cpus: cpuCount,
      ...(this.cpuModel ? { cpuModel: this.cpuModel } : {}),
      memoryTotalBytes: os.totalmem(),
      memoryFreeBytes: memoryFreeBytes ?? os.freemem(),
      rssBytes: process.memoryUsage.rss(),
      ...(load === undefined ? {} : { loadAverage1m: round2(load) }),
      ...(cpuPercent === undefined ? {} : { cpuPercent }),
      ...(this.gpu ? { gpu: this.gpu } : {}),
      ...osFacts,
    };
  }

  private cpuPercent(cpuCount: number): number | undefined {
    const now = cpuTotals();
    const wall = process.hrtime.bigint();
    const processCpu = process.cpuUsage();
    let percent: number | undefined;
    if (now && this.lastCpu && now.total > this.lastCpu.total) {
      percent = ((now.busy - this.lastCpu.busy) / (now.total - this.lastCpu.total)) * 100;
    } else if (!now) {
      const wallMicros = Number(wall - this.lastWall) / 1000;
      const used =
        processCpu.user - this.lastProcessCpu.user + (processCpu.system - this.lastProcessCpu.system);
      if (wallMicros > 0) percent = (used / (wallMicros * Math.max(1, cpuCount))) * 100;
    }
    this.lastCpu = now;
    this.lastWall = wall;
    this.lastProcessCpu = processCpu;
    return percent === undefined ? undefined : round2(Math.min(100, Math.max(0, percent)));
  }
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
