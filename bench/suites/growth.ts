// Growth: 1 → 10 → 100 → 1,000 streams open at once (synthetic engine at a set rate, so every
// stream of a wave stays open together), with latency percentiles, errors, and the resident memory
// of the gateway's workerd process and of the agents at the wave's peak. Relay and Orchard waves
// alternate.
import {
  type Bench,
  interleaved,
  MODEL_PACED,
  PACED_TOKENS_PER_SECOND,
  type PathName,
  requestSpec,
} from "../lib/context.ts";
import { LoadClient } from "../lib/http-client.ts";
import { cpuTimeMs, rssBytes } from "../lib/procs.ts";
import { type Spread, spread, summarize } from "../lib/stats.ts";
import { bytes, cell, type TargetCheck, table } from "../lib/table.ts";

const LEVELS = [1, 10, 100, 1000] as const;
export const GROWTH_TOKENS = 20;

export interface GrowthRow {
  path: PathName;
  streams: number;
  ttftP50: Spread;
  ttftP99: Spread;
  streamP50: Spread;
  streamP99: Spread;
  errors: number;
  errorSamples: string[];
  workerdPeakRss: Spread;
  agentsPeakRss: Spread;
  /** workerd CPU per agent frame (at this rate every token is its own frame, plus one `done`), µs. */
  workerdCpuPerFrameUs: Spread;
}

export interface GrowthResult {
  rows: GrowthRow[];
  /** (median peak RSS at 1,000 streams − at 1 stream) ÷ 999, per path and process. */
  bytesPerStream: Record<PathName, { workerd: number; agents: number }>;
  checks: TargetCheck[];
  text: string;
}

interface Wave {
  ttfts: number[];
  latencies: number[];
  errors: number;
  samples: string[];
  workerdPeak: number;
  agentsPeak: number;
  workerdCpuMs: number;
}

async function wave(bench: Bench, path: PathName, streams: number): Promise<Wave> {
  const workerdPid = bench[path].userWorkerdPid;
  const agentPids = bench.agents.map((a) => a.proc.pid);
  const agentsRss = () => agentPids.reduce((sum, pid) => sum + (rssBytes(pid) ?? 0), 0);
  const idle = { workerd: rssBytes(workerdPid) ?? 0, agents: agentsRss() };
  const peak = { ...idle };
  const sampler = setInterval(() => {
    peak.workerd = Math.max(peak.workerd, rssBytes(workerdPid) ?? 0);
    peak.agents = Math.max(peak.agents, agentsRss());
  }, 100);
  const client = new LoadClient(bench[path].directOrigin, streams);
  const spec = requestSpec(bench, path, MODEL_PACED, GROWTH_TOKENS, true);
  const out: Wave = {
    ttfts: [],
    latencies: [],
    errors: 0,
    samples: [],
    workerdPeak: 0,
    agentsPeak: 0,
    workerdCpuMs: 0,
  };
  const cpu0 = cpuTimeMs(workerdPid) ?? 0;
  await Promise.all(
    Array.from({ length: streams }, async () => {
      const t0 = performance.now();
      try {
        const r = await client.request(spec, { onTokens() {} });
        if (r.tokens !== GROWTH_TOKENS) throw new Error(`expected ${GROWTH_TOKENS} tokens, got ${r.tokens}`);
        out.latencies.push(performance.now() - t0);
        if (r.ttftMs !== undefined) out.ttfts.push(r.ttftMs);
      } catch (err) {
        out.errors += 1;
        if (out.samples.length < 3) out.samples.push(err instanceof Error ? err.message : String(err));
      }
    }),
  );
  clearInterval(sampler);
  out.workerdCpuMs = (cpuTimeMs(workerdPid) ?? 0) - cpu0;
  await client.close();
  out.workerdPeak = peak.workerd;
  out.agentsPeak = peak.agents;
  return out;
}

export async function runGrowth(bench: Bench): Promise<GrowthResult> {
  const rows: GrowthRow[] = [];
  for (const streams of LEVELS) {
    const waves: Record<PathName, Wave[]> = { relay: [], orchard: [] };
    for (let rep = 0; rep < bench.reps; rep++) {
      for (const path of interleaved<PathName>(["orchard", "relay"], rep))
        waves[path].push(await wave(bench, path, streams));
    }
    for (const path of ["relay", "orchard"] as const) {
      const list = waves[path];
      const sums = list.map((w) => ({ ttft: summarize(w.ttfts), total: summarize(w.latencies) }));
      rows.push({
        path,
        streams,
        ttftP50: spread(sums.map((s) => s.ttft.p50)),
        ttftP99: spread(sums.map((s) => s.ttft.p99)),
        streamP50: spread(sums.map((s) => s.total.p50)),
        streamP99: spread(sums.map((s) => s.total.p99)),
        errors: list.reduce((n, w) => n + w.errors, 0),
        errorSamples: list.flatMap((w) => w.samples).slice(0, 3),
        workerdPeakRss: spread(list.map((w) => w.workerdPeak)),
        agentsPeakRss: spread(list.map((w) => w.agentsPeak)),
        workerdCpuPerFrameUs: spread(
          list.map((w) => (w.workerdCpuMs * 1000) / (streams * (GROWTH_TOKENS + 1))),
        ),
      });
    }
    for (const r of rows.filter((x) => x.streams === streams && x.errors > 0)) {
      bench.log(`  growth ${r.path} ${streams}: ${r.errors} errors, e.g. ${r.errorSamples.join(" | ")}`);
    }
    bench.log(`  growth ${streams} streams done`);
  }
  const peak = (path: PathName, streams: number) =>
    rows.find((r) => r.path === path && r.streams === streams) as GrowthRow;
  const top = LEVELS[LEVELS.length - 1] as number;
  const slope = (path: PathName, key: "workerdPeakRss" | "agentsPeakRss") =>
    (peak(path, top)[key].median - peak(path, 1)[key].median) / (top - 1);
  const bytesPerStream = {
    relay: { workerd: slope("relay", "workerdPeakRss"), agents: slope("relay", "agentsPeakRss") },
    orchard: { workerd: slope("orchard", "workerdPeakRss"), agents: slope("orchard", "agentsPeakRss") },
  };
  const at1000 = rows.find((r) => r.path === "orchard" && r.streams === 1000) as GrowthRow;
  const checks: TargetCheck[] = [
    {
      target: "Orchard: zero errors with 1,000 concurrent streams",
      measured: `${at1000.errors} errors in ${bench.reps} waves${at1000.errorSamples.length ? ` (${at1000.errorSamples[0]})` : ""}`,
      pass: at1000.errors === 0,
    },
  ];
  const ideal = (GROWTH_TOKENS / PACED_TOKENS_PER_SECOND) * 1000;
  const text = [
    table(
      [
        `${GROWTH_TOKENS} tokens at ${PACED_TOKENS_PER_SECOND} tok/s (ideal ${ideal} ms), 4 agents`,
        "streams",
        "TTFT p50",
        "TTFT p99",
        "stream p50",
        "stream p99",
        "err",
        "workerd peak RSS",
        "agents peak RSS",
        "workerd µs/frame (all-in)",
      ],
      rows.map((r) => [
        r.path === "relay" ? "bare relay" : "Orchard SSE",
        String(r.streams),
        cell(r.ttftP50, 1),
        cell(r.ttftP99, 1),
        cell(r.streamP50, 0),
        cell(r.streamP99, 0),
        String(r.errors),
        bytes(r.workerdPeakRss.median),
        bytes(r.agentsPeakRss.median),
        cell(r.workerdCpuPerFrameUs, 0),
      ]),
    ),
    "",
    table(
      [
        `memory per open stream: (peak at ${top} − peak at 1) ÷ ${top - 1}`,
        "gateway workerd",
        "agents (sum of 4)",
      ],
      (["relay", "orchard"] as const).map((p) => [
        p === "relay" ? "bare relay" : "Orchard",
        bytes(bytesPerStream[p].workerd),
        bytes(bytesPerStream[p].agents),
      ]),
    ),
  ].join("\n");
  return { rows, bytesPerStream, checks, text };
}
