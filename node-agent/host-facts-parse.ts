// Pure parsers for the text the host-facts sampler reads (vm_stat, sysctl, ioreg, /proc/meminfo,
// /proc/pressure/memory): text in, numbers out, undefined for anything that does not read as
// expected — never a throw, so a changed or truncated output only leaves its fields out.
import type { HostFacts } from "../schema/protocol.ts";

export type MemoryPressure = NonNullable<HostFacts["memoryPressure"]>;

/** `vm_stat`'s page size and its page counts by label ("Pages wired down" -> n). */
export interface VmStat {
  pageSize: number;
  pages: ReadonlyMap<string, number>;
}

export function readVmStat(output: string): VmStat | undefined {
  const pageSize = Number(/page size of (\d+) bytes/.exec(output)?.[1]);
  if (!Number.isSafeInteger(pageSize) || pageSize <= 0) return undefined;
  const pages = new Map<string, number>();
  for (const line of output.split("\n")) {
    const match = /^"?([^":]+)"?:\s+(\d+)\.?\s*$/.exec(line);
    if (match?.[1] && match[2]) pages.set(match[1].trim(), Number(match[2]));
  }
  return { pageSize, pages };
}

/**
 * Memory in use on macOS: wired + active + compressed ("Pages occupied by compressor": the
 * physical pages the compressor holds, not "stored in", the logical pages it compressed) — the
 * pages the OS cannot hand over without paging out. undefined without wired and active counts.
 */
export function vmStatUsedBytes(vm: VmStat): number | undefined {
  const wired = vm.pages.get("Pages wired down");
  const active = vm.pages.get("Pages active");
  if (wired === undefined || active === undefined) return undefined;
  const compressed = vm.pages.get("Pages occupied by compressor") ?? 0; // absent before OS X 10.9
  return (wired + active + compressed) * vm.pageSize;
}

/**
 * Memory macOS hands to a new allocation without paging out: free, inactive, speculative and
 * purgeable pages. undefined when none of them is counted.
 */
export function vmStatAvailableBytes(vm: VmStat): number | undefined {
  const labels = ["Pages free", "Pages inactive", "Pages speculative", "Pages purgeable"];
  const pages = labels.reduce((sum, label) => sum + (vm.pages.get(label) ?? 0), 0);
  return pages > 0 ? pages * vm.pageSize : undefined;
}

/**
 * `sysctl -n kern.memorystatus_vm_pressure_level`: the kernel's memory pressure as libdispatch's
 * DISPATCH_MEMORYPRESSURE_* values (1 normal, 2 warn, 4 critical), what Activity Monitor colours
 * its pressure graph by. Readable without root on macOS (xnu checks PRIV_VM_PRESSURE only on
 * embedded targets).
 */
export function parsePressureLevel(output: string): MemoryPressure | undefined {
  switch (output.trim()) {
    case "1":
      return "normal";
    case "2":
      return "warn";
    case "4":
      return "critical";
    default:
      return undefined;
  }
}

const UNIT_BYTES: Record<string, number> = { K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** Swap in use from `sysctl -n vm.swapusage` ("total = 2048.00M  used = 1096.25M  free = …"). */
export function parseSwapUsage(output: string): number | undefined {
  const match = /\bused\s*=\s*(\d+(?:[.,]\d+)?)([KMGT])\b/.exec(output);
  if (!match?.[1] || !match[2]) return undefined;
  const bytes = Number(match[1].replace(",", ".")) * (UNIT_BYTES[match[2]] ?? Number.NaN);
  return Number.isFinite(bytes) ? Math.round(bytes) : undefined;
}

/**
 * GPU utilization (percent) from `ioreg -r -d 1 -w 0 -c IOAccelerator`: each accelerator's
 * "Device Utilization %" in its PerformanceStatistics. With several (an Intel Mac with a discrete
 * GPU), the busiest. undefined when no accelerator reports a value in 0–100.
 */
export function parseIoregGpuPercent(output: string): number | undefined {
  let busiest: number | undefined;
  for (const stats of output.matchAll(/"PerformanceStatistics"\s*=\s*\{([^}]*)\}/g)) {
    const value = Number(/"Device Utilization %"\s*=\s*(\d+)/.exec(stats[1] ?? "")?.[1] ?? Number.NaN);
    if (value >= 0 && value <= 100) busiest = Math.max(busiest ?? 0, value);
  }
  return busiest;
}

export interface MeminfoFacts {
  totalBytes: number;
  availableBytes: number;
  /** MemTotal - MemAvailable: what the kernel could not hand over without swapping or OOM. */
  usedBytes: number;
  /** SwapTotal - SwapFree; absent when either line is. */
  swapUsedBytes?: number;
}

/** /proc/meminfo (values in kB); undefined without a consistent MemTotal and MemAvailable. */
export function parseMeminfo(text: string): MeminfoFacts | undefined {
  const kb = (key: string) => {
    const value = new RegExp(`^${key}:\\s+(\\d+) kB$`, "m").exec(text)?.[1];
    return value === undefined ? undefined : Number(value) * 1024;
  };
  const total = kb("MemTotal");
  const available = kb("MemAvailable");
  if (total === undefined || available === undefined || total === 0 || available > total) return undefined;
  const swapTotal = kb("SwapTotal");
  const swapFree = kb("SwapFree");
  const swapUsed =
    swapTotal === undefined || swapFree === undefined ? undefined : Math.max(0, swapTotal - swapFree);
  return {
    totalBytes: total,
    availableBytes: available,
    usedBytes: total - available,
    ...(swapUsed === undefined ? {} : { swapUsedBytes: swapUsed }),
  };
}

/**
 * PSI thresholds on `some avg10` (the share of the last 10 s in which at least one task waited
 * for memory: reclaim, swap-in, refaults of evicted cache). Below 10 % such stalls are incidental;
 * from 10 % they cost every request visible latency (warn); from 40 % the host is thrashing
 * (critical). `full` (every task stalled at once) is what OOM killers such as systemd-oomd act on;
 * `some` rises first, which is what a warning is for.
 */
export const PSI_WARN_PERCENT = 10;
export const PSI_CRITICAL_PERCENT = 40;

/** `some avg10` from /proc/pressure/memory, percent. */
export function parsePsiSomeAvg10(text: string): number | undefined {
  const value = /^some\b.*\bavg10=(\d+(?:\.\d+)?)/m.exec(text)?.[1];
  if (value === undefined) return undefined;
  const percent = Number(value);
  return percent <= 100 ? percent : undefined;
}

export function psiPressure(someAvg10: number): MemoryPressure {
  if (someAvg10 >= PSI_CRITICAL_PERCENT) return "critical";
  if (someAvg10 >= PSI_WARN_PERCENT) return "warn";
  return "normal";
}
