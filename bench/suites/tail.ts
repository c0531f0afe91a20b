// The concurrency-32 tail (issue 15, item 3), with traces across every hop. Two parts:
// 1. p99 and p99.9 at concurrency 32, relay vs Orchard, on the bench's own (untraced) Workers, ABBA,
//    longer windows than the overhead table so p99.9 rests on thousands of requests.
// 2. The same load on a traced pair started here (BENCH_TRACE=1: a relay, an Orchard with every
//    feature on, one agent connected to both with its trace hooks; bench/lib/agent-trace.ts,
//    gateway/hub/bench-trace.ts): every request's timeline joined by request id, and for the slow
//    ones (> 150 ms) which segment took their time, against the event-loop lag on the agent
//    (monitorEventLoopDelay, timer stalls) and in workerd (a 5 ms self-rescheduling timer).
import { writeFileSync } from "node:fs";
import type { AgentTraceDump, AgentTraceRecord } from "../lib/agent-trace.ts";
import {
  type Bench,
  interleaved,
  MODEL_1,
  measureHttp,
  type PathName,
  requestSpec,
  syntheticEngine,
} from "../lib/context.ts";
import { ALL_ON_VARS, startAgent, startOrchard, startRelay } from "../lib/stack.ts";
import { percentile } from "../lib/stats.ts";
import { num, table } from "../lib/table.ts";
import {
  type ClientTrace,
  dominant,
  type Joined,
  join,
  SEGMENTS,
  type Segment,
  tracedLoop,
} from "../lib/trace-join.ts";
import { OVERHEAD_TOKENS } from "./overhead.ts";

const CONCURRENCY = 32;
export const SLOW_MS = 150;

interface TailStats {
  n: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  slowPercent: number;
}

function tailStats(latencies: number[]): TailStats {
  const s = [...latencies].sort((a, b) => a - b);
  return {
    n: s.length,
    p50: percentile(s, 50),
    p99: percentile(s, 99),
    p999: percentile(s, 99.9),
    max: s.length ? (s[s.length - 1] as number) : Number.NaN,
    slowPercent: s.length ? (s.filter((v) => v > SLOW_MS).length / s.length) * 100 : Number.NaN,
  };
}

export interface TailResult {
  untraced: Record<PathName, TailStats[]>;
  traced: Record<PathName, { stats: TailStats; slow: number; byDominant: Partial<Record<Segment, number>> }>;
  agentLoop: AgentTraceDump["loopDelay"][];
  text: string;
}

const statRow = (label: string, s: TailStats) => [
  label,
  String(s.n),
  num(s.p50, 1),
  num(s.p99, 1),
  num(s.p999, 1),
  num(s.max, 0),
  num(s.slowPercent, 2),
];

/** BENCH_TAIL_VARS='{"NAME":"value"}': vars for the traced Orchard only (an experiment's switch). */
function extraVars(): Record<string, string> {
  const raw = process.env.BENCH_TAIL_VARS;
  return raw ? (JSON.parse(raw) as Record<string, string>) : {};
}

export async function runTail(bench: Bench, secret: string): Promise<TailResult> {
  const duration = Math.round(6_000 * bench.timeScale);
  const loop = { concurrency: CONCURRENCY, warmupMs: 500, durationMs: duration };
  // 1. the bench's own Workers, untraced
  const untraced: Record<PathName, TailStats[]> = { relay: [], orchard: [] };
  for (let rep = 0; rep < bench.reps; rep++) {
    for (const path of interleaved<PathName>(["relay", "orchard"], rep)) {
      const r = await measureHttp(
        bench,
        path,
        requestSpec(bench, path, MODEL_1, OVERHEAD_TOKENS, false),
        { ...loop, expectTokens: OVERHEAD_TOKENS },
        [bench.agents[0] as Bench["agents"][number]],
      );
      untraced[path].push(tailStats(r.latencies));
    }
    bench.log(`  tail: untraced rep ${rep + 1}/${bench.reps} done`);
  }

  // 2. a traced pair of its own
  bench.log("  tail: starting a traced relay, Orchard and agent (BENCH_TRACE=1)…");
  const [relay, orchard] = await Promise.all([
    startRelay({ vars: { BENCH_TRACE: "1" } }),
    startOrchard(secret, { vars: { ...ALL_ON_VARS, ...extraVars(), BENCH_TRACE: "1" } }, "orchard-trace"),
  ]);
  const engine = syntheticEngine(true, false);
  const agent = await startAgent(
    "bench-trace",
    secret,
    engine,
    { relay, orchard, models: [MODEL_1] },
    { capacity: 1024, trace: true },
  ).catch(async (err: unknown) => {
    await Promise.all([relay.stop(), orchard.stop()]);
    throw err;
  });
  const traced = {} as TailResult["traced"];
  const agentLoop: AgentTraceDump["loopDelay"][] = [];
  const joined: Record<PathName, Joined[]> = { relay: [], orchard: [] };
  const loadgenStalls: Record<PathName, [number, number][]> = { relay: [], orchard: [] };
  const rawTraces: Record<PathName, ClientTrace[]> = { relay: [], orchard: [] };
  try {
    const workers = { relay, orchard };
    const spec = (path: PathName) => requestSpec(bench, path, MODEL_1, OVERHEAD_TOKENS, false);
    // Orchard's JIT warms over ~10,000 requests (see warmup.ts); the relay after a few hundred.
    bench.log("  tail: warming the traced Workers…");
    await tracedLoop(orchard.directOrigin, spec("orchard"), {
      concurrency: CONCURRENCY,
      warmupMs: 0,
      durationMs: 12_000,
    });
    await tracedLoop(relay.directOrigin, spec("relay"), {
      concurrency: CONCURRENCY,
      warmupMs: 0,
      durationMs: 2_000,
    });
    await agent.proc.call({ type: "trace-dump" });
    for (let rep = 0; rep < bench.reps; rep++) {
      for (const path of interleaved<PathName>(["relay", "orchard"], rep)) {
        const { traces, stalls } = await tracedLoop(workers[path].directOrigin, spec(path), loop);
        loadgenStalls[path].push(...stalls);
        rawTraces[path].push(...traces);
        const dump = await agent.proc.call<AgentTraceDump>({ type: "trace-dump" }, 60_000);
        agentLoop.push(dump.loopDelay);
        const records = new Map<string, AgentTraceRecord>(dump.records.map((r) => [r.id, r]));
        for (const t of traces)
          if (t.status === 200) joined[path].push(join(t, records, dump.stalls, stalls));
      }
      bench.log(`  tail: traced rep ${rep + 1}/${bench.reps} done`);
    }
  } finally {
    await agent.stop();
    await Promise.all([relay.stop(), orchard.stop()]);
  }
  // BENCH_TAIL_DUMP=<file>: every traced request's raw timeline, for analysis beyond the tables.
  if (process.env.BENCH_TAIL_DUMP) {
    writeFileSync(process.env.BENCH_TAIL_DUMP, JSON.stringify({ traces: rawTraces, loadgenStalls }));
    bench.log(`  tail: raw traces written to ${process.env.BENCH_TAIL_DUMP}`);
  }

  const lines: string[] = [];
  lines.push(
    table(
      [
        `c=${CONCURRENCY}, 8 tokens, ${duration / 1000} s windows`,
        "n",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        `% > ${SLOW_MS} ms`,
      ],
      [
        ...(["relay", "orchard"] as const).flatMap((p) =>
          untraced[p].map((s, i) => statRow(`${p} untraced, rep ${i + 1}`, s)),
        ),
        ...(["relay", "orchard"] as const).map((p) =>
          statRow(`${p} traced (all reps)`, tailStats(joined[p].map((j) => j.totalMs))),
        ),
      ],
    ),
  );
  for (const path of ["relay", "orchard"] as const) {
    const all = joined[path];
    const slow = all.filter((j) => j.totalMs > SLOW_MS);
    const byDominant: Partial<Record<Segment, number>> = {};
    for (const j of slow) {
      const d = dominant(j);
      if (d) byDominant[d] = (byDominant[d] ?? 0) + 1;
    }
    traced[path] = { stats: tailStats(all.map((j) => j.totalMs)), slow: slow.length, byDominant };
    const at = (p: number) => (list: Joined[], s: Segment) => {
      const v = list
        .map((j) => j.segments[s])
        .filter((x): x is number => x !== undefined)
        .sort((a, b) => a - b);
      return v.length ? num(percentile(v, p), 1) : "–";
    };
    const [med, p99] = [at(50), at(99)];
    lines.push(
      "",
      table(
        [
          `${path} traced: where the time went (ms)`,
          "p50 all",
          "p99 all",
          `p50 slow (${slow.length})`,
          "largest in n slow",
        ],
        SEGMENTS.filter((s) => all.some((j) => j.segments[s] !== undefined)).map((s) => [
          s,
          med(all, s),
          p99(all, s),
          med(slow, s),
          String(byDominant[s] ?? 0),
        ]),
      ),
    );
    const lagged = (list: Joined[], f: (j: Joined) => number | undefined) =>
      list.filter((j) => (f(j) ?? 0) > 50).length;
    lines.push(
      `${path}: of ${slow.length} slow requests, ${lagged(slow, (j) => j.workerdTimerLagMs)} lived through a workerd timer ` +
        `> 50 ms late (of all ${all.length}: ${lagged(all, (j) => j.workerdTimerLagMs)}), ` +
        `${lagged(slow, (j) => j.agentStallMs)} through an agent event-loop stall > 50 ms (of all: ${lagged(all, (j) => j.agentStallMs)}), ` +
        `${lagged(slow, (j) => j.loadgenStallMs)} through a load-generator stall > 50 ms (of all: ${lagged(all, (j) => j.loadgenStallMs)}; ` +
        `its stalls > 10 ms: ${loadgenStalls[path].length}, worst ${num(Math.max(0, ...loadgenStalls[path].map((x) => x[1])), 0)} ms)`,
    );
  }
  lines.push(
    "",
    `agent event-loop delay per traced run (monitorEventLoopDelay, ms): ${agentLoop
      .map((d) => `p99 ${num(d.p99, 1)} max ${num(d.max, 0)}`)
      .join("; ")}`,
  );
  return { untraced, traced, agentLoop, text: lines.join("\n") };
}
