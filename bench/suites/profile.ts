// Where the time goes: V8 CPU profiles of the Worker (workerd, through wrangler's inspector proxy)
// for the bare relay and for Orchard under the same load, and of the agent process, attributed to
// modules and functions. Runs on separate Worker instances with the inspector on (it slows them),
// so it never touches the measured numbers. The raw .cpuprofile files open in Chrome DevTools.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import {
  type Bench,
  MODEL_1,
  measureHttp,
  type PathName,
  requestSpec,
  syntheticEngine,
} from "../lib/context.ts";
import { type CpuProfile, Inspector } from "../lib/inspector.ts";
import { bundleModuleMap, type ProfileSummary, summarizeProfile } from "../lib/profile-summary.ts";
import { startAgent, startOrchard, startRelay } from "../lib/stack.ts";
import { num, table } from "../lib/table.ts";
import { warmUp } from "./warmup.ts";

export interface ProfileRun {
  label: string;
  requests: number;
  worker: ProfileSummary;
  agent: ProfileSummary;
  files: { worker: string; agent: string };
}

const REPO_FILE = /^file:\/\/.*?\/((?:node-agent|bench|schema|scripts|gateway|node_modules)\/.*)$/;

/** A repo-relative path for the agent's frames (node_modules/… is grouped per library later). */
function agentModule(url: string): string {
  if (url.startsWith("node:")) return "node internals";
  return REPO_FILE.exec(url)?.[1] ?? url;
}

/**
 * A DevTools client on a Worker's inspector, ready to profile: the Network and Runtime domains off
 * (wrangler's inspector proxy otherwise keeps per-request events for a client to come, and during
 * a warm-up the relay's workerd grew past 2 GB and the run stalled, measured; console events would
 * be shipped for every log line, inflating logging ~10x), sampling every 100 µs.
 */
export async function openWorkerProfiler(url: string): Promise<Inspector> {
  const inspector = await Inspector.connect(url);
  await inspector.call("Network.disable").catch(() => undefined);
  await inspector.call("Runtime.disable").catch(() => undefined);
  await inspector.call("Profiler.enable");
  await inspector.call("Profiler.setSamplingInterval", { interval: 100 });
  return inspector;
}

/** Attributes a Worker's profile to modules: bundle lines mapped back through esbuild's markers. */
export async function summarizeWorkerProfile(
  inspector: Inspector,
  profile: CpuProfile,
): Promise<ProfileSummary> {
  await inspector.call("Debugger.enable");
  const maps = new Map<string, (line: number) => string>();
  for (const id of new Set(profile.nodes.map((n) => n.callFrame.scriptId))) {
    const node = profile.nodes.find((n) => n.callFrame.scriptId === id);
    if (node?.callFrame.url !== "index.js") continue;
    const { scriptSource } = await inspector.call<{ scriptSource: string }>("Debugger.getScriptSource", {
      scriptId: id,
    });
    maps.set(id, bundleModuleMap(scriptSource));
  }
  await inspector.call("Debugger.disable").catch(() => undefined);
  return summarizeProfile(profile, (id, line) => maps.get(id)?.(line));
}

export async function runProfile(
  bench: Bench,
  secret: string,
  outDir: string,
): Promise<{ runs: ProfileRun[]; text: string }> {
  mkdirSync(outDir, { recursive: true });
  bench.log("  profile: starting inspector-enabled Workers…");
  const [relay, orchard] = await Promise.all([
    startRelay({ inspector: true }),
    startOrchard(secret, { inspector: true }),
  ]);
  const models = (syntheticEngine(true) as { models: { name: string }[] }).models.map((m) => m.name);
  const agent = await startAgent("bench-profile", secret, syntheticEngine(true), { relay, orchard, models });
  const pb: Bench = { ...bench, relay, orchard, agents: [agent] };
  const runs: ProfileRun[] = [];
  const inspectors: Partial<Record<PathName, Inspector>> = {};
  try {
    // One DevTools client per Worker from the start (see openWorkerProfiler).
    for (const path of ["relay", "orchard"] as const) {
      inspectors[path] = await openWorkerProfiler(pb[path].inspectorUrl as string);
    }
    // JIT first (see warmup.ts): a profile of half-optimized code would blame the wrong lines.
    bench.log("  profile: warming up…");
    await warmUp(pb, { requests: 8_000, maxSeconds: 30 });
    const cases: { label: string; path: PathName; tokens: number; stream: boolean; concurrency: number }[] = [
      { label: "relay, 8 tokens, conc 32", path: "relay", tokens: 8, stream: false, concurrency: 32 },
      { label: "Orchard, 8 tokens, conc 32", path: "orchard", tokens: 8, stream: false, concurrency: 32 },
      {
        label: "relay, 2000-token streams, conc 8",
        path: "relay",
        tokens: 2000,
        stream: true,
        concurrency: 8,
      },
      {
        label: "Orchard SSE, 2000-token streams, conc 8",
        path: "orchard",
        tokens: 2000,
        stream: true,
        concurrency: 8,
      },
    ];
    for (const c of cases) {
      const inspector = inspectors[c.path] as Inspector;
      // Warm up without the profiler, then profile a fixed window.
      await measureHttp(
        pb,
        c.path,
        requestSpec(pb, c.path, MODEL_1, c.tokens, c.stream),
        { concurrency: c.concurrency, warmupMs: 0, durationMs: 700 },
        [agent],
      );
      await agent.proc.call({ type: "profile-start" });
      await inspector.call("Profiler.start");
      const r = await measureHttp(
        pb,
        c.path,
        requestSpec(pb, c.path, MODEL_1, c.tokens, c.stream),
        { concurrency: c.concurrency, warmupMs: 0, durationMs: 2500, expectTokens: c.tokens },
        [agent],
      );
      const { profile } = await inspector.call<{ profile: CpuProfile }>("Profiler.stop");
      const slug = c.label.replace(/[^a-z0-9]+/gi, "-").toLowerCase();
      const agentFile = resolve(outDir, `agent-${slug}.cpuprofile`);
      await agent.proc.call({ type: "profile-stop", path: agentFile });
      const workerFile = resolve(outDir, `workerd-${slug}.cpuprofile`);
      writeFileSync(workerFile, JSON.stringify(profile));

      const worker = await summarizeWorkerProfile(inspector, profile);
      const agentProfile = JSON.parse(readFileSync(agentFile, "utf8")) as CpuProfile;
      // The agent runs unbundled: its frames carry file URLs, attributed by path.
      const agentByPath: CpuProfile = {
        ...agentProfile,
        nodes: agentProfile.nodes.map((n) => ({
          ...n,
          callFrame: { ...n.callFrame, url: agentModule(n.callFrame.url) },
        })),
      };
      runs.push({
        label: c.label,
        requests: r.allCompleted,
        worker,
        agent: summarizeProfile(agentByPath, () => undefined),
        files: { worker: workerFile, agent: agentFile },
      });
      bench.log(`  profile: ${c.label} (${r.allCompleted} requests)`);
    }
  } finally {
    for (const inspector of Object.values(inspectors)) inspector.close();
    await agent.stop();
    await Promise.all([relay.stop(), orchard.stop()]);
  }

  const blocks: string[] = [];
  for (const run of runs) {
    const perReq = (ms: number) => num((ms * 1000) / Math.max(1, run.requests), 1);
    blocks.push(
      table(
        [`workerd — ${run.label}: module (runtime calls charged to their JS caller)`, "% busy", "µs/request"],
        run.worker.byCallerModule.slice(0, 14).map((a) => [a.name, num(a.percent, 1), perReq(a.selfMs)]),
      ),
      "",
    );
    if (run.label.startsWith("Orchard")) {
      blocks.push(
        table(
          [
            `workerd — ${run.label}: top functions (runtime calls charged to their JS caller)`,
            "% busy",
            "µs/request",
          ],
          run.worker.byCallerFunction
            .slice(0, 20)
            .map((a) => [a.name.slice(0, 100), num(a.percent, 1), perReq(a.selfMs)]),
        ),
        "",
      );
    }
    blocks.push(
      table(
        [`agent — ${run.label}: module (self time)`, "% busy", "µs/request"],
        run.agent.byCallerModule.slice(0, 8).map((a) => [a.name, num(a.percent, 1), perReq(a.selfMs)]),
      ),
      "",
    );
  }
  blocks.push(`raw profiles (open in Chrome DevTools → Performance): ${outDir}`);
  return { runs, text: blocks.join("\n") };
}
