// Memory a model load can count on, for the agent's own check before a registry load. The facts
// reported in `hello` and `health` are sampled in host-facts.ts.
import { execFileSync } from "node:child_process";
import os from "node:os";
import { readVmStat, vmStatAvailableBytes } from "./host-facts-parse.ts";

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
  const vm = readVmStat(output);
  return vm && vmStatAvailableBytes(vm);
}
