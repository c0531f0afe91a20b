// Samples the host facts an agent reports in `hello` and every `health` frame: memory, CPU busy
// share since the previous sample, load average, and (on Apple Silicon) the integrated GPU.
import { execFileSync } from "node:child_process";
import os from "node:os";
import type { HostFacts } from "../schema/protocol.ts";

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

export class HostFactsSampler {
  private lastCpu = cpuTotals();
  private lastProcessCpu = process.cpuUsage();
  private lastWall = process.hrtime.bigint();
  private readonly cpuModel = os.cpus()[0]?.model.trim().slice(0, 256) || undefined;
  private readonly gpu = knownGpu(process.platform, process.arch, this.cpuModel);

  /**
   * Current facts. cpuPercent is the whole host's busy share (0–100) since the previous call,
   * from os.cpus() time deltas; where os.cpus() is empty it falls back to this process's share
   * from process.cpuUsage().
   */
  sample(): HostFacts {
    const cpuCount = os.availableParallelism();
    const cpuPercent = this.cpuPercent(cpuCount);
    const load = os.loadavg()[0];
    return {
      platform: process.platform,
      arch: process.arch,
      cpus: cpuCount,
      ...(this.cpuModel ? { cpuModel: this.cpuModel } : {}),
      memoryTotalBytes: os.totalmem(),
      memoryFreeBytes: os.freemem(),
      rssBytes: process.memoryUsage.rss(),
      ...(load === undefined ? {} : { loadAverage1m: round2(load) }),
      ...(cpuPercent === undefined ? {} : { cpuPercent }),
      ...(this.gpu ? { gpu: this.gpu } : {}),
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

/**
 * Memory a model load can count on, in bytes. On macOS os.freemem() counts only pages nobody
 * holds, a small share of what the OS hands over on demand (file cache, inactive and purgeable
 * pages), so a load there would seem not to fit on a Mac with room to spare; vm_stat's free,
 * inactive, speculative and purgeable pages are used instead. Elsewhere (and if vm_stat fails)
 * os.freemem(), which on Linux is MemAvailable.
 */
export function availableMemoryBytes(
  platform: string = process.platform,
  vmStat: () => string = () => execFileSync("vm_stat", { encoding: "utf8", timeout: 2_000 }),
): number {
  if (platform !== "darwin") return os.freemem();
  try {
    return parseVmStat(vmStat()) ?? os.freemem();
  } catch {
    return os.freemem();
  }
}

/** Reclaimable bytes from `vm_stat` output, or undefined if it does not read as expected. */
export function parseVmStat(output: string): number | undefined {
  const pageSize = Number(/page size of (\d+) bytes/.exec(output)?.[1]);
  if (!Number.isFinite(pageSize) || pageSize <= 0) return undefined;
  const pages = (label: string) =>
    Number(new RegExp(`^${label}:\\s+(\\d+)\\.?$`, "m").exec(output)?.[1] ?? 0);
  const free =
    pages("Pages free") + pages("Pages inactive") + pages("Pages speculative") + pages("Pages purgeable");
  return free > 0 ? free * pageSize : undefined;
}
