// Turns a V8 CPU profile into "where the time went": self time per function and per module. The
// Worker runs as one esbuild bundle, whose `// path/to/module.ts` markers map each line back to the
// module it came from (gateway/…, schema/…, node_modules/zod/…).
import type { CpuProfile, CpuProfileNode } from "./inspector.ts";

export interface Attribution {
  name: string;
  selfMs: number;
  /** Share of the non-idle samples, %. */
  percent: number;
}

export interface ProfileSummary {
  /** Sampled time that was not idle, ms. */
  busyMs: number;
  /** Self time by module; native runtime calls (streams, WebSocket, fetch, crypto) are their own bucket. */
  byModule: Attribution[];
  byFunction: Attribution[];
  /** Self time with native runtime calls charged to the JavaScript function that made them. */
  byCallerModule: Attribution[];
  byCallerFunction: Attribution[];
}

/** Line index → module path, from esbuild's `// path` comments at the top level of the bundle. */
export function bundleModuleMap(source: string): (line: number) => string {
  const starts: { line: number; module: string }[] = [];
  const lines = source.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const m =
      /^\/\/ ((?:\.\.\/)*(?:node_modules|gateway|schema|bench|scripts|\.wrangler)[^\s]*\.(?:[cm]?js|ts))$/.exec(
        lines[i] as string,
      );
    if (m?.[1]) starts.push({ line: i, module: m[1].replace(/^(\.\.\/)+/, "") });
  }
  return (line) => {
    let lo = 0;
    let hi = starts.length - 1;
    let found = "(bundle prelude)";
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const s = starts[mid] as { line: number; module: string };
      if (s.line <= line) {
        found = s.module;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  };
}

/** Groups a module path into what a reader cares about (a library, or one of our files). */
export function moduleGroup(module: string): string {
  const lib = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(module);
  if (lib?.[1]) return `lib: ${lib[1]}`;
  return module;
}

export function summarizeProfile(
  profile: CpuProfile,
  moduleOf: (scriptId: string, line: number) => string | undefined,
): ProfileSummary {
  const byId = new Map<number, CpuProfileNode>(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const isNative = (n: CpuProfileNode) => n.callFrame.url === "" && !n.callFrame.functionName.startsWith("(");
  const selfUs = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  // Each sample's duration is the delta to the next one.
  for (let i = 0; i < samples.length; i++) {
    const us = deltas[i + 1] ?? 0;
    selfUs.set(samples[i] as number, (selfUs.get(samples[i] as number) ?? 0) + us);
  }
  const fn = new Map<string, number>();
  const mod = new Map<string, number>();
  const callerFn = new Map<string, number>();
  const callerMod = new Map<string, number>();
  const label = (node: CpuProfileNode) => {
    const { functionName, url, scriptId, lineNumber } = node.callFrame;
    let module: string;
    if (functionName.startsWith("("))
      module = functionName; // (program), (garbage collector)
    else if (url === "") module = "native runtime calls";
    else module = moduleOf(scriptId, lineNumber) ?? url;
    const group = module.startsWith("(") || module.startsWith("native") ? module : moduleGroup(module);
    return { group, fname: `${functionName || "(anonymous)"} — ${group}` };
  };
  let busy = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    const { functionName } = node.callFrame;
    if (functionName === "(idle)" || functionName === "(root)") continue;
    busy += us;
    const own = label(node);
    mod.set(own.group, (mod.get(own.group) ?? 0) + us);
    fn.set(own.fname, (fn.get(own.fname) ?? 0) + us);
    // Charge native time to the nearest JavaScript caller.
    let caller: CpuProfileNode | undefined = node;
    while (caller && isNative(caller)) caller = byId.get(parent.get(caller.id) ?? -1);
    const by = caller && caller.callFrame.functionName !== "(root)" ? label(caller) : own;
    callerMod.set(by.group, (callerMod.get(by.group) ?? 0) + us);
    callerFn.set(by.fname, (callerFn.get(by.fname) ?? 0) + us);
  }
  const list = (m: Map<string, number>) =>
    [...m.entries()]
      .map(([name, us]) => ({ name, selfMs: us / 1000, percent: busy > 0 ? (us / busy) * 100 : 0 }))
      .sort((a, b) => b.selfMs - a.selfMs);
  return {
    busyMs: busy / 1000,
    byModule: list(mod),
    byFunction: list(fn),
    byCallerModule: list(callerMod),
    byCallerFunction: list(callerFn),
  };
}
