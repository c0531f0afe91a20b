// Host facts and the decode rate in `health`: the parsers over real-looking vm_stat, sysctl, ioreg
// and /proc output (and broken output), the sampler over a scripted OS (which programs it runs,
// how often, what it leaves out and logs), execFile without a shell, the real /proc on Linux and
// the real commands on macOS, and tokens per second over finished generations.
import { existsSync, readFileSync } from "node:fs";
import os from "node:os";
import { describe, expect, it } from "vitest";
import {
  DecodeRate,
  type FinishedGeneration,
  TOKEN_RATE_WINDOW_MS,
} from "../../node-agent/health-reporter.ts";
import { execFileText, type HostFactsIo, HostFactsSampler } from "../../node-agent/host-facts.ts";
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
} from "../../node-agent/host-facts-parse.ts";
import { createLogger } from "../../node-agent/log.ts";
import { HostFacts } from "../../schema/protocol.ts";

// ---- fixtures ----

/** `vm_stat` on a 16 GB Apple Silicon Mac (16 KiB pages) running a model. */
const VM_STAT = `Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                                5312.
Pages active:                            352118.
Pages inactive:                          347021.
Pages speculative:                         3287.
Pages throttled:                              0.
Pages wired down:                        151472.
Pages purgeable:                          18765.
"Translation faults":                1286453012.
Pages copy-on-write:                   38245114.
Pages zero filled:                    612873325.
Pages reactivated:                     21476523.
Pages purged:                           4187221.
File-backed pages:                       278843.
Anonymous pages:                         423583.
Pages stored in compressor:              612847.
Pages occupied by compressor:            186023.
Decompressions:                        18738271.
Compressions:                          29453111.
Pageins:                               14232545.
Pageouts:                                 98223.
Swapins:                                 312877.
Swapouts:                                418223.
`;
const PAGE = 16384;
const VM_USED = (151472 + 352118 + 186023) * PAGE;
const VM_AVAILABLE = (5312 + 347021 + 3287 + 18765) * PAGE;

/** `ioreg -r -d 1 -w 0 -c IOAccelerator` on an M1 (one AGX accelerator), some keys elided. */
const IOREG_M1 = `+-o AGXAcceleratorG13G  <class AGXAcceleratorG13G, id 0x1000002a4, registered, matched, active, busy 0 (0 ms), retain 118>
    {
      "IOGLBundleName" = "AppleMetalOpenGLRenderer"
      "IOClass" = "AGXAcceleratorG13G"
      "IOPowerManagement" = {"ChildrenPowerState"=2,"DevicePowerState"=2,"CurrentPowerState"=2,"CapabilityFlags"=32768,"MaxPowerState"=2,"DriverPowerState"=0}
      "SchedulerState" = {"Stats"={"kTickleCount"=0},"Queues"=({"ExecStatsUS"=1302,"Utilization %"=99})}
      "CFBundleIdentifier" = "com.apple.AGXG13G"
      "IOMatchCategory" = "IOAccelerator"
      "MetalPluginName" = "AGXMetalG13G"
      "PerformanceStatistics" = {"In use system memory (driver)"=0,"Alloc system memory"=1599340544,"Tiler Utilization %"=12,"recoveryCount"=0,"lastRecoveryTime"=0,"Renderer Utilization %"=85,"TiledSceneBytes"=524288,"Device Utilization %"=87,"SplitSceneCount"=0,"Allocated PB Size"=2621440,"In use system memory"=372572160}
      "gpu-core-count" = 8
      "model" = "Apple M1"
    }
    
`;

/** An Intel Mac with its integrated GPU and a discrete one. */
const IOREG_TWO_GPUS = `+-o IntelAccelerator  <class IntelAccelerator, id 0x100000517, registered, matched, active, busy 0 (0 ms), retain 25>
    {
      "PerformanceStatistics" = {"Device Utilization %"=3,"GPU Activity(%)"=3,"Renderer Utilization %"=2}
    }
    
+-o AMDRadeonX6000_AMDNavi14GraphicsAccelerator  <class AMDRadeonX6000_AMDNavi14GraphicsAccelerator, id 0x100000744, registered, matched, active, busy 0 (0 ms), retain 30>
    {
      "PerformanceStatistics" = {"Device Utilization %"=41,"GPU Activity(%)"=41,"Renderer Utilization %"=38}
    }
`;

const SWAP = "total = 2048.00M  used = 1096.25M  free = 951.75M  (encrypted)\n";

/** /proc/meminfo (the lines the parser reads, among others it ignores). */
const MEMINFO = `MemTotal:       24684084 kB
MemFree:         1056112 kB
MemAvailable:    9186752 kB
Buffers:           11776 kB
Cached:          7147796 kB
SwapCached:         4096 kB
Active:         12559948 kB
Inactive:        6632628 kB
SwapTotal:       8388604 kB
SwapFree:        6291452 kB
Dirty:               556 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
`;

const PSI = `some avg10=12.50 avg60=3.10 avg300=0.71 total=183745501
full avg10=4.20 avg60=1.05 avg300=0.24 total=67289145
`;

// ---- parsers ----

describe("macOS parsers", () => {
  it("count wired + active + compressed pages as in use, at the page size vm_stat names", () => {
    const vm = readVmStat(VM_STAT);
    expect(vm?.pageSize).toBe(PAGE);
    expect(vm && vmStatUsedBytes(vm)).toBe(VM_USED);
    expect(vm && vmStatAvailableBytes(vm)).toBe(VM_AVAILABLE);
    // 4 KiB pages (an Intel Mac) scale the same counts down.
    const intel = readVmStat(VM_STAT.replace("16384", "4096"));
    expect(intel && vmStatUsedBytes(intel)).toBe(VM_USED / 4);
  });

  it("leave vm_stat's facts out when its output is cut, headless or garbage", () => {
    expect(readVmStat("")).toBeUndefined();
    expect(readVmStat(VM_STAT.split("\n").slice(1).join("\n"))).toBeUndefined(); // no page size
    expect(readVmStat("Mach Virtual Memory Statistics: (page size of 0 bytes)\n")).toBeUndefined();
    const cut = readVmStat(VM_STAT.slice(0, VM_STAT.indexOf("Pages wired")));
    expect(cut && vmStatUsedBytes(cut)).toBeUndefined();
    const noise = readVmStat(
      "Mach Virtual Memory Statistics: (page size of 16384 bytes)\nPages wired down: lots\n",
    );
    expect(noise && vmStatUsedBytes(noise)).toBeUndefined();
    expect(noise && vmStatAvailableBytes(noise)).toBeUndefined();
  });

  it("read kern.memorystatus_vm_pressure_level as normal, warn and critical, and nothing else", () => {
    expect(parsePressureLevel("1\n")).toBe("normal");
    expect(parsePressureLevel("2\n")).toBe("warn");
    expect(parsePressureLevel("4\n")).toBe("critical");
    for (const odd of [
      "",
      "0\n",
      "3\n",
      "8\n",
      "sysctl: unknown oid 'kern.memorystatus_vm_pressure_level'",
      "1 2",
    ]) {
      expect(parsePressureLevel(odd)).toBeUndefined();
    }
  });

  it("read swap in use from vm.swapusage in its units", () => {
    expect(parseSwapUsage(SWAP)).toBe(Math.round(1096.25 * 1024 ** 2));
    expect(parseSwapUsage("total = 0.00M  used = 0.00M  free = 0.00M  \n")).toBe(0);
    expect(parseSwapUsage("total = 4.00G  used = 1.50G  free = 2.50G  (encrypted)")).toBe(1.5 * 1024 ** 3);
    expect(parseSwapUsage("total = 2048,00M  used = 12,50M  free = 2035,50M")).toBe(12.5 * 1024 ** 2);
    expect(parseSwapUsage("")).toBeUndefined();
    expect(parseSwapUsage("total = 2048.00M  used = lots")).toBeUndefined();
    expect(parseSwapUsage("used = 12")).toBeUndefined(); // no unit: no guess
  });

  it("read the GPU's Device Utilization % from PerformanceStatistics, the busiest of several", () => {
    // Not the scheduler queue's "Utilization %" (99) nor the renderer's (85).
    expect(parseIoregGpuPercent(IOREG_M1)).toBe(87);
    expect(parseIoregGpuPercent(IOREG_TWO_GPUS)).toBe(41);
    expect(
      parseIoregGpuPercent(IOREG_M1.replace('"Device Utilization %"=87', '"Device Utilization %"=0')),
    ).toBe(0);
  });

  it("leave the GPU out when no accelerator reports a sane utilization", () => {
    expect(parseIoregGpuPercent("")).toBeUndefined();
    // A VM's display driver: an accelerator without statistics.
    expect(
      parseIoregGpuPercent(
        '+-o AppleParavirtGPU  <class AppleParavirtGPU>\n    {\n      "IOClass" = "AppleParavirtGPU"\n    }\n',
      ),
    ).toBeUndefined();
    expect(parseIoregGpuPercent(IOREG_M1.replace("=87", "=187"))).toBeUndefined();
    expect(parseIoregGpuPercent(IOREG_M1.slice(0, IOREG_M1.indexOf("Device Utilization")))).toBeUndefined();
  });
});

describe("Linux parsers", () => {
  it("count MemTotal - MemAvailable as in use and SwapTotal - SwapFree as swap", () => {
    expect(parseMeminfo(MEMINFO)).toEqual({
      totalBytes: 24684084 * 1024,
      availableBytes: 9186752 * 1024,
      usedBytes: (24684084 - 9186752) * 1024,
      swapUsedBytes: (8388604 - 6291452) * 1024,
    });
  });

  it("leave meminfo's facts out when MemAvailable is missing or inconsistent, swap when its lines are", () => {
    expect(parseMeminfo(MEMINFO.replace(/^MemAvailable:.*\n/m, ""))).toBeUndefined(); // kernels before 3.14
    expect(
      parseMeminfo(MEMINFO.replace("MemAvailable:    9186752", "MemAvailable:   99186752")),
    ).toBeUndefined();
    expect(parseMeminfo("")).toBeUndefined();
    expect(parseMeminfo("MemTotal: lots\nMemAvailable: some\n")).toBeUndefined();
    expect(parseMeminfo(MEMINFO.replace(/^SwapFree:.*\n/m, ""))).not.toHaveProperty("swapUsedBytes");
  });

  it("map PSI some avg10 to normal below 10 %, warn from 10 %, critical from 40 %", () => {
    expect(parsePsiSomeAvg10(PSI)).toBe(12.5);
    expect(parsePsiSomeAvg10("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")).toBe(0);
    expect([0, 9.99, 10, 39.99, 40, 100].map(psiPressure)).toEqual([
      "normal",
      "normal",
      "warn",
      "warn",
      "critical",
      "critical",
    ]);
  });

  it("leave PSI out when the some line is missing or odd", () => {
    expect(parsePsiSomeAvg10("")).toBeUndefined();
    expect(parsePsiSomeAvg10("full avg10=50.00 avg60=1.05 avg300=0.24 total=67289145\n")).toBeUndefined();
    expect(parsePsiSomeAvg10("some avg10=abc avg60=0.00\n")).toBeUndefined();
    expect(parsePsiSomeAvg10("some avg10=250.00 avg60=0.00\n")).toBeUndefined();
  });
});

// ---- the sampler over a scripted OS ----

type Answer = string | Error | Promise<string>;

/** An OS whose programs and files answer as scripted, recording what was asked. */
class ScriptedOs implements HostFactsIo {
  readonly calls: string[] = [];
  constructor(public answers: Record<string, Answer>) {}

  run(file: string, args: readonly string[]): Promise<string> {
    return this.answer([file, ...args].join(" "));
  }

  readText(path: string): Promise<string> {
    return this.answer(path);
  }

  private async answer(key: string): Promise<string> {
    this.calls.push(key);
    const answer = this.answers[key];
    if (answer === undefined) throw Object.assign(new Error(`ENOENT: ${key}`), { code: "ENOENT" });
    if (answer instanceof Error) throw answer;
    return answer;
  }
}

const MAC_ANSWERS: Record<string, Answer> = {
  "/usr/bin/vm_stat": VM_STAT,
  "/usr/sbin/sysctl -n kern.memorystatus_vm_pressure_level": "2\n",
  "/usr/sbin/sysctl -n vm.swapusage": SWAP,
  "/usr/sbin/ioreg -r -d 1 -w 0 -c IOAccelerator": IOREG_M1,
};

function harness(platform: string, answers: Record<string, Answer>) {
  const io = new ScriptedOs(answers);
  const lines: Array<Record<string, unknown>> = [];
  let now = 0;
  const sampler = new HostFactsSampler({
    platform,
    io,
    minRefreshMs: 1_000,
    now: () => now,
    log: createLogger({ level: "debug", write: (line) => lines.push(JSON.parse(line)) }),
  });
  return {
    io,
    sampler,
    lines,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

describe("HostFactsSampler", () => {
  it("on macOS runs vm_stat, two sysctls and ioreg by absolute path, and reports what they say", async () => {
    const { io, sampler, lines } = harness("darwin", MAC_ANSWERS);
    const facts = await sampler.fresh();
    expect([...io.calls].sort()).toEqual(Object.keys(MAC_ANSWERS).sort());
    expect(facts).toMatchObject({
      platform: "darwin",
      memoryTotalBytes: os.totalmem(),
      memoryUsedBytes: VM_USED,
      memoryFreeBytes: VM_AVAILABLE,
      memoryPressure: "warn",
      swapUsedBytes: Math.round(1096.25 * 1024 ** 2),
      gpuPercent: 87,
    });
    expect(HostFacts.parse(facts)).toEqual(facts);
    expect(lines).toEqual([]);
  });

  it("leaves out what a failing, hanging-up or garbled source would give, and logs each once", async () => {
    const { io, sampler, lines, advance } = harness("darwin", {
      ...MAC_ANSWERS,
      "/usr/sbin/ioreg -r -d 1 -w 0 -c IOAccelerator": Object.assign(new Error("Command failed: killed"), {
        code: null,
        killed: true,
      }),
      "/usr/sbin/sysctl -n kern.memorystatus_vm_pressure_level": "sysctl: unknown oid\n",
    });
    for (let i = 0; i < 3; i++) {
      const facts = await sampler.fresh();
      expect(facts).not.toHaveProperty("gpuPercent");
      expect(facts).not.toHaveProperty("memoryPressure");
      expect(facts).toMatchObject({ memoryUsedBytes: VM_USED, swapUsedBytes: expect.any(Number) });
      expect(HostFacts.safeParse(facts).success).toBe(true);
      advance(1_000);
    }
    expect(io.calls.filter((c) => c.includes("ioreg"))).toHaveLength(3);
    // One line per source over three reads (in whichever order the reads ended).
    expect(lines.map((l) => [l.level, l.source, l.error]).sort()).toEqual([
      ["warn", "ioreg IOAccelerator", "Command failed: killed"],
      ["warn", "sysctl kern.memorystatus_vm_pressure_level", "its output did not read as expected"],
    ]);
    // Reads again: logged once more, and the fact is back.
    io.answers["/usr/sbin/ioreg -r -d 1 -w 0 -c IOAccelerator"] = IOREG_TWO_GPUS;
    expect(await sampler.fresh()).toMatchObject({ gpuPercent: 41 });
    expect(lines.at(-1)).toMatchObject({
      level: "info",
      msg: "host fact source reads again",
      source: "ioreg IOAccelerator",
    });
    // And a fact is never carried over from an earlier read once its source fails again.
    advance(1_000);
    io.answers["/usr/sbin/ioreg -r -d 1 -w 0 -c IOAccelerator"] = "";
    expect(await sampler.fresh()).not.toHaveProperty("gpuPercent");
    expect(lines.at(-1)).toMatchObject({ level: "warn", source: "ioreg IOAccelerator" });
  });

  it("falls back to os.freemem for free memory when vm_stat fails, and logs a missing tool as info", async () => {
    const { sampler, lines } = harness("darwin", { "/usr/sbin/sysctl -n vm.swapusage": SWAP });
    const facts = await sampler.fresh();
    expect(facts).toMatchObject({ swapUsedBytes: expect.any(Number) });
    expect(Object.keys(facts)).not.toContain("memoryUsedBytes");
    expect(Math.abs(facts.memoryFreeBytes - os.freemem())).toBeLessThan(256 * 1024 * 1024);
    expect(lines.map((l) => [l.level, l.source]).sort()).toEqual([
      ["info", "ioreg IOAccelerator"],
      ["info", "sysctl kern.memorystatus_vm_pressure_level"],
      ["info", "vm_stat"],
    ]);
  });

  it("asks the OS at most once per minRefreshMs, once for concurrent callers, and never makes sample() wait", async () => {
    let release!: (text: string) => void;
    const slowVmStat = new Promise<string>((resolve) => {
      release = resolve;
    });
    const { io, sampler, advance } = harness("darwin", { ...MAC_ANSWERS, "/usr/bin/vm_stat": slowVmStat });
    // The constructor's read is still waiting on vm_stat: sample() answers at once without it.
    const early = sampler.sample();
    expect(early).not.toHaveProperty("memoryUsedBytes");
    expect(HostFacts.safeParse(early).success).toBe(true);
    const both = Promise.all([sampler.fresh(), sampler.fresh()]);
    release(VM_STAT);
    const [a, b] = await both;
    expect(a.memoryUsedBytes).toBe(VM_USED);
    expect(b.memoryUsedBytes).toBe(VM_USED);
    expect(io.calls.filter((c) => c === "/usr/bin/vm_stat")).toHaveLength(1);
    advance(999);
    await sampler.fresh();
    sampler.sample();
    expect(io.calls.filter((c) => c === "/usr/bin/vm_stat")).toHaveLength(1);
    advance(1);
    await sampler.fresh();
    expect(io.calls.filter((c) => c === "/usr/bin/vm_stat")).toHaveLength(2);
    expect(io.calls).toHaveLength(8); // four sources, twice
  });

  it("on Linux reads /proc/meminfo and /proc/pressure/memory, and no program", async () => {
    const { io, sampler, lines } = harness("linux", {
      "/proc/meminfo": MEMINFO,
      "/proc/pressure/memory": PSI,
    });
    const facts = await sampler.fresh();
    expect(io.calls.sort()).toEqual(["/proc/meminfo", "/proc/pressure/memory"]);
    expect(facts).toMatchObject({
      memoryUsedBytes: (24684084 - 9186752) * 1024,
      memoryFreeBytes: 9186752 * 1024,
      swapUsedBytes: (8388604 - 6291452) * 1024,
      memoryPressure: "warn",
    });
    expect(facts).not.toHaveProperty("gpuPercent");
    expect(lines).toEqual([]);
  });

  it("on Linux without PSI (EOPNOTSUPP) leaves pressure out and logs it once as info", async () => {
    const off = Object.assign(new Error("EOPNOTSUPP: operation not supported on socket, read"), {
      code: "EOPNOTSUPP",
    });
    const { sampler, lines, advance } = harness("linux", {
      "/proc/meminfo": MEMINFO,
      "/proc/pressure/memory": off,
    });
    expect(await sampler.fresh()).not.toHaveProperty("memoryPressure");
    advance(5_000);
    expect(await sampler.fresh()).toMatchObject({ memoryUsedBytes: expect.any(Number) });
    expect(lines.map((l) => [l.level, l.source])).toEqual([["info", "/proc/pressure/memory"]]);
  });

  it("on another OS reads nothing and reports the portable facts", async () => {
    const { io, sampler } = harness("win32", {});
    const facts = await sampler.fresh();
    expect(io.calls).toEqual([]);
    expect(Object.keys(facts).filter((k) => /memoryUsed|Pressure|gpuPercent|swap/.test(k))).toEqual([]);
    expect(facts).toMatchObject({ platform: "win32", cpus: os.availableParallelism() });
  });

  it("reports the host's CPU busy share since the previous sample, within 0–100", async () => {
    const { sampler } = harness("linux", {});
    sampler.sample();
    const spinUntil = Date.now() + 50;
    while (Date.now() < spinUntil) {} // one core busy
    const { cpuPercent } = sampler.sample();
    expect(cpuPercent).toBeGreaterThan(0);
    expect(cpuPercent).toBeLessThanOrEqual(100);
  });
});

// ---- the real OS ----

describe("on this host", () => {
  it.skipIf(process.platform !== "linux")(
    "needs Linux (/proc/meminfo): reads the real /proc, and the numbers are sane",
    async () => {
      const sampler = new HostFactsSampler();
      const facts = await sampler.fresh();
      expect(HostFacts.parse(facts)).toEqual(facts);
      const total = facts.memoryTotalBytes;
      const used = facts.memoryUsedBytes ?? Number.NaN;
      expect(used).toBeGreaterThan(0);
      expect(used).toBeLessThanOrEqual(total);
      expect(facts.memoryFreeBytes).toBeLessThanOrEqual(total);
      // Both halves come from one read of /proc/meminfo, whose MemTotal is os.totalmem().
      expect(Math.abs(used + facts.memoryFreeBytes - total)).toBeLessThan(1024 * 1024);
      // Against an independent read a moment later: memory moves, but not by gigabytes.
      const again = parseMeminfo(readFileSync("/proc/meminfo", "utf8"));
      expect(Math.abs((again?.usedBytes ?? 0) - used)).toBeLessThan(1024 ** 3);
      expect(facts.swapUsedBytes).toBeGreaterThanOrEqual(0);
      if (existsSync("/proc/pressure/memory")) {
        expect(["normal", "warn", "critical"]).toContain(facts.memoryPressure);
      } else {
        expect(facts).not.toHaveProperty("memoryPressure");
      }
      expect(facts).not.toHaveProperty("gpuPercent");
    },
  );

  it.skipIf(process.platform !== "darwin")(
    "needs macOS (vm_stat, sysctl, ioreg): reads the real commands, and the numbers are sane",
    async () => {
      const sampler = new HostFactsSampler();
      const facts = await sampler.fresh();
      expect(HostFacts.parse(facts)).toEqual(facts);
      expect(facts.memoryUsedBytes).toBeGreaterThan(0);
      expect(facts.memoryUsedBytes).toBeLessThanOrEqual(facts.memoryTotalBytes);
      // What macOS can hand over is far more than its free pages alone.
      expect(facts.memoryFreeBytes).toBeGreaterThanOrEqual(os.freemem());
      expect(["normal", "warn", "critical"]).toContain(facts.memoryPressure);
      expect(facts.swapUsedBytes).toBeGreaterThanOrEqual(0);
      if (process.arch === "arm64") {
        expect(facts.gpuPercent).toBeGreaterThanOrEqual(0);
        expect(facts.gpuPercent).toBeLessThanOrEqual(100);
      }
    },
  );
});

describe("execFileText", () => {
  const node = process.execPath;

  it("passes arguments to the program as they are, through no shell", async () => {
    const tricky = "$(echo injected); echo also | cat > /dev/null `true` 'quoted'";
    const out = await execFileText(node, ["-e", "process.stdout.write(process.argv[1])", tricky]);
    expect(out).toBe(tricky);
  });

  it("kills a program that does not answer within the timeout", async () => {
    const started = performance.now();
    await expect(execFileText(node, ["-e", "setTimeout(() => {}, 20000)"], 300)).rejects.toMatchObject({
      killed: true,
    });
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it("rejects with ENOENT for a program that is not there", async () => {
    await expect(execFileText("/nonexistent/vm_stat", [])).rejects.toMatchObject({ code: "ENOENT" });
  });
});

// ---- tokens per second ----

function finished(
  completionTokens: number,
  firstTokenMs: number | null,
  totalMs: number,
  finishReason: FinishedGeneration["finishReason"] = "stop",
): FinishedGeneration {
  return { finishReason, usage: { promptTokens: 5, completionTokens }, timings: { firstTokenMs, totalMs } };
}

describe("DecodeRate", () => {
  it("is tokens after the first over the time after the first token, summed over generations", () => {
    let now = 0;
    const rate = new DecodeRate(() => now);
    expect(rate.perSecond()).toBe(0);
    // 10 tokens in the 500 ms after the first; the 100 ms to the first token (the prompt) is left out.
    rate.record(finished(11, 100, 600));
    expect(rate.perSecond()).toBe(20);
    now = 1_000;
    // 100 more in 1 s: (10 + 100) / 1.5 s, not the mean of the two rates (20 and 100).
    rate.record(finished(101, 50, 1_050, "length"));
    expect(rate.perSecond()).toBe(Math.round((110 / 1.5) * 100) / 100);
  });

  it("leaves out cancelled generations and those with nothing to time", () => {
    const rate = new DecodeRate(() => 0);
    rate.record(finished(50, 10, 110, "cancelled"));
    rate.record(finished(1, 10, 110)); // one token: no decode time
    rate.record(finished(0, null, 5)); // nothing generated
    rate.record(finished(3, 10, 10)); // no time after the first token
    expect(rate.perSecond()).toBe(0);
    rate.record(finished(5, 10, 210));
    expect(rate.perSecond()).toBe(20);
  });

  it("forgets generations older than its window", () => {
    let now = 0;
    const rate = new DecodeRate(() => now);
    rate.record(finished(11, 0, 1_000)); // 10 tok/s
    now = 30_000;
    rate.record(finished(41, 0, 1_000)); // 40 tok/s
    expect(rate.perSecond()).toBe(25);
    now = TOKEN_RATE_WINDOW_MS - 1;
    expect(rate.perSecond()).toBe(25);
    now = TOKEN_RATE_WINDOW_MS + 10_000; // the first has left the window, the second has not
    expect(rate.perSecond()).toBe(40);
    now = 30_000 + TOKEN_RATE_WINDOW_MS + 10_000;
    expect(rate.perSecond()).toBe(0);
  });
});
