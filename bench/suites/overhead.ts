// Overhead per request: one short non-streaming generation (8 tokens, synthetic engine, as fast as
// possible) through each path, at concurrency 1, 32 and 128. The same agent process and engine
// serve every path; relay and Orchard runs alternate ABBA within each repetition.
import type { LoopResult } from "../lib/closed-loop.ts";
import {
  type Bench,
  type CpuShare,
  interleaved,
  MODEL_1,
  measureHttp,
  measureInAgent,
  type PathName,
  requestSpec,
} from "../lib/context.ts";
import { type Spread, spread, summarize } from "../lib/stats.ts";
import { cell, num, type TargetCheck, table } from "../lib/table.ts";

export const OVERHEAD_TOKENS = 8;
const CONCURRENCY = [1, 32, 128] as const;

export type OverheadPath = "engine" | "agent-loopback" | PathName;

export interface OverheadRow {
  path: OverheadPath;
  concurrency: number;
  p50: Spread;
  p95: Spread;
  p99: Spread;
  rps: Spread;
  errors: number;
  errorSamples: string[];
  /** CPU ms per request by process (HTTP paths only). */
  cpu?: Record<keyof CpuShare, Spread>;
  loadGeneratorCpuPercent?: Spread;
}

export interface OverheadResult {
  rows: OverheadRow[];
  /** Orchard p50 − relay p50, paired per repetition, ms. */
  ownCostP50: Record<number, Spread>;
  /** 1 − Orchard req/s ÷ relay req/s, paired per repetition, %. */
  rpsDrop: Record<number, Spread>;
  /** The relay made to spend Orchard's workerd CPU per request, at concurrency 32. */
  cpuMatched?: CpuMatchedRelay;
  /** Frames the agent sends per 8-token request, by type (counted by the loopback hub). */
  framesPerRequest: Record<string, number>;
  checks: TargetCheck[];
  text: string;
}

export interface CpuMatchedRelay {
  /** Loop iterations per request that give the relay Orchard's workerd CPU per request. */
  burn: number;
  workerdCpuMs: Spread;
  rps: Spread;
  p99: Spread;
  /** 1 − its req/s ÷ the plain relay's median req/s at concurrency 32, %. */
  rpsDrop: Spread;
}

const MATCHED_CONCURRENCY = 32;
const CALIBRATION_BURN = 200_000;

/**
 * How many req/s Orchard's CPU per request alone costs on this platform: the bare relay with a
 * busy loop in its Worker (bench/relay `?burn=N`), N calibrated so its workerd CPU per request
 * matches Orchard's median at concurrency 32. What is left of Orchard's gap is not CPU.
 */
async function cpuMatchedRelay(
  bench: Bench,
  rows: OverheadRow[],
  agent: Bench["agents"][number],
): Promise<CpuMatchedRelay | undefined> {
  const at = (path: PathName) => rows.find((r) => r.path === path && r.concurrency === MATCHED_CONCURRENCY);
  const relay = at("relay");
  const orchard = at("orchard");
  if (!relay?.cpu || !orchard?.cpu) return undefined;
  const base = requestSpec(bench, "relay", MODEL_1, OVERHEAD_TOKENS, false);
  const loop = {
    concurrency: MATCHED_CONCURRENCY,
    warmupMs: 300,
    durationMs: 1500,
    expectTokens: OVERHEAD_TOKENS,
  };
  const run = (burn: number) =>
    measureHttp(bench, "relay", { ...base, path: `/?burn=${burn}` }, loop, [agent]);
  const calibration = await run(CALIBRATION_BURN);
  const msPerIteration = (calibration.cpuMsPerRequest.workerd - relay.cpu.workerd.median) / CALIBRATION_BURN;
  const gapMs = orchard.cpu.workerd.median - relay.cpu.workerd.median;
  if (!(msPerIteration > 0) || !(gapMs > 0)) return undefined;
  const burn = Math.min(10_000_000, Math.round(gapMs / msPerIteration));
  const reps: LoopResult[] = [];
  const cpu: number[] = [];
  for (let rep = 0; rep < bench.reps; rep++) {
    const r = await run(burn);
    reps.push(r);
    cpu.push(r.cpuMsPerRequest.workerd);
  }
  bench.log(`  overhead: CPU-matched relay (burn ${burn}) done`);
  return {
    burn,
    workerdCpuMs: spread(cpu),
    rps: spread(reps.map((r) => r.requestsPerSecond)),
    p99: spread(reps.map((r) => summarize(r.latencies).p99)),
    rpsDrop: spread(reps.map((r) => (1 - r.requestsPerSecond / relay.rps.median) * 100)),
  };
}

const LABEL: Record<OverheadPath, string> = {
  engine: "(a) engine in-process",
  "agent-loopback": "(a') Agent, loopback WS",
  relay: "(b) bare relay (workerd)",
  orchard: "(c) Orchard POST /generate",
};

export async function runOverhead(bench: Bench): Promise<OverheadResult> {
  const agent = bench.agents[0];
  if (!agent) throw new Error("no agent");
  const runs = new Map<string, { loop: LoopResult; cpu?: CpuShare; lg?: number }[]>();
  const add = (path: OverheadPath, c: number, r: { loop: LoopResult; cpu?: CpuShare; lg?: number }) => {
    const key = `${path}@${c}`;
    runs.set(key, [...(runs.get(key) ?? []), r]);
  };
  let framesPerRequest: Record<string, number> = {};
  for (const c of CONCURRENCY) {
    const loop = { concurrency: c, warmupMs: 300, durationMs: 1500, expectTokens: OVERHEAD_TOKENS };
    for (let rep = 0; rep < bench.reps; rep++) {
      add("engine", c, {
        loop: await measureInAgent(bench, agent, "engine-run", MODEL_1, OVERHEAD_TOKENS, {
          ...loop,
          warmupMs: 100,
          durationMs: 500,
        }),
      });
      const viaAgent = await measureInAgent(bench, agent, "loopback-run", MODEL_1, OVERHEAD_TOKENS, {
        ...loop,
        durationMs: 1000,
      });
      if (c === 1 && viaAgent.framesPerRequest) framesPerRequest = viaAgent.framesPerRequest;
      add("agent-loopback", c, { loop: viaAgent });
      for (const path of interleaved<PathName>(["relay", "orchard"], rep)) {
        const r = await measureHttp(
          bench,
          path,
          requestSpec(bench, path, MODEL_1, OVERHEAD_TOKENS, false),
          loop,
          [agent],
        );
        add(path, c, { loop: r, cpu: r.cpuMsPerRequest, lg: r.loadGeneratorCpuPercent });
      }
      bench.log(`  overhead c=${c} rep ${rep + 1}/${bench.reps} done`);
    }
  }

  const rows: OverheadRow[] = [];
  for (const c of CONCURRENCY) {
    for (const path of ["engine", "agent-loopback", "relay", "orchard"] as const) {
      const reps = runs.get(`${path}@${c}`) ?? [];
      const sums = reps.map((r) => summarize(r.loop.latencies));
      const row: OverheadRow = {
        path,
        concurrency: c,
        p50: spread(sums.map((s) => s.p50)),
        p95: spread(sums.map((s) => s.p95)),
        p99: spread(sums.map((s) => s.p99)),
        rps: spread(reps.map((r) => r.loop.requestsPerSecond)),
        errors: reps.reduce((n, r) => n + r.loop.errors, 0),
        errorSamples: reps.flatMap((r) => r.loop.errorSamples).slice(0, 3),
      };
      if (reps[0]?.cpu) {
        const keys = Object.keys(reps[0].cpu) as (keyof CpuShare)[];
        row.cpu = Object.fromEntries(
          keys.map((k) => [k, spread(reps.map((r) => r.cpu?.[k] ?? Number.NaN))]),
        ) as Record<keyof CpuShare, Spread>;
        row.loadGeneratorCpuPercent = spread(reps.map((r) => r.lg ?? Number.NaN));
      }
      rows.push(row);
    }
  }

  const ownCostP50: Record<number, Spread> = {};
  const rpsDrop: Record<number, Spread> = {};
  for (const c of CONCURRENCY) {
    const relay = runs.get(`relay@${c}`) ?? [];
    const orchard = runs.get(`orchard@${c}`) ?? [];
    ownCostP50[c] = spread(
      orchard.map((o, i) => summarize(o.loop.latencies).p50 - summarize(relay[i]?.loop.latencies ?? []).p50),
    );
    rpsDrop[c] = spread(
      orchard.map(
        (o, i) => (1 - o.loop.requestsPerSecond / (relay[i]?.loop.requestsPerSecond ?? Number.NaN)) * 100,
      ),
    );
  }

  const cpuMatched = await cpuMatchedRelay(bench, rows, agent);

  const checks: TargetCheck[] = [
    {
      target: "Orchard's own cost (c − b) at p50, concurrency 1 ≤ 0.5 ms",
      measured: `${cell(ownCostP50[1] as Spread, 3)} ms`,
      pass: (ownCostP50[1] as Spread).median <= 0.5,
    },
    {
      target: "Orchard req/s ≥ 85% of the relay's at concurrency 32 (≤ 15% fewer)",
      measured: `${cell(rpsDrop[32] as Spread, 1)} % fewer`,
      pass: (rpsDrop[32] as Spread).median <= 15,
    },
  ];

  const text = [
    table(
      ["path (8 tokens, non-streaming)", "conc", "p50 ms", "p95 ms", "p99 ms", "req/s", "err"],
      rows.map((r) => [
        LABEL[r.path],
        String(r.concurrency),
        cell(r.p50, 3),
        cell(r.p95, 3),
        cell(r.p99, 3),
        cell(r.rps, 0),
        String(r.errors),
      ]),
    ),
    "",
    table(
      [
        "CPU ms per request (HTTP paths)",
        "conc",
        "workerd",
        "wrangler host",
        "agent",
        "load gen",
        "load gen %core",
      ],
      rows
        .filter((r) => r.cpu)
        .map((r) => [
          LABEL[r.path],
          String(r.concurrency),
          cell(r.cpu?.workerd as Spread, 3),
          cell(r.cpu?.wranglerHost as Spread, 3),
          cell(r.cpu?.agents as Spread, 3),
          cell(r.cpu?.loadGenerator as Spread, 3),
          cell(r.loadGeneratorCpuPercent as Spread, 0),
        ]),
    ),
    "",
    table(
      ["derived", "conc 1", "conc 32", "conc 128"],
      [
        ["Orchard own cost p50 (c − b), ms", ...CONCURRENCY.map((c) => cell(ownCostP50[c] as Spread, 3))],
        ["Orchard req/s below relay, %", ...CONCURRENCY.map((c) => cell(rpsDrop[c] as Spread, 1))],
        // One workerd thread runs both the Worker and the hub locally: its CPU per request bounds req/s.
        ...(["relay", "orchard"] as const).map((path) => [
          `${path === "relay" ? "relay" : "Orchard"} req/s bound, 1000 ÷ workerd CPU ms/req`,
          ...CONCURRENCY.map((c) => {
            const cpu = rows.find((r) => r.path === path && r.concurrency === c)?.cpu?.workerd;
            return cpu ? num(1000 / cpu.median, 0) : "n/a";
          }),
        ]),
      ],
    ),
  ].join("\n");
  const frames = Object.entries(framesPerRequest)
    .map(([type, n]) => `${n.toFixed(2)} ${type}`)
    .join(" + ");
  const matched = cpuMatched
    ? `\n\n${table(
        [
          `bare relay burning Orchard's workerd CPU (burn ${cpuMatched.burn}), conc ${MATCHED_CONCURRENCY}`,
          "workerd CPU ms/req",
          "req/s",
          "p99 ms",
          "req/s below plain relay, %",
        ],
        [
          [
            "(b+) CPU-matched relay: what Orchard's CPU alone costs",
            cell(cpuMatched.workerdCpuMs, 3),
            cell(cpuMatched.rps, 0),
            cell(cpuMatched.p99, 1),
            cell(cpuMatched.rpsDrop, 1),
          ],
        ],
      )}`
    : "";
  return {
    rows,
    ownCostP50,
    rpsDrop,
    ...(cpuMatched ? { cpuMatched } : {}),
    framesPerRequest,
    checks,
    text: `${text}${matched}\n\nagent → gateway frames per ${OVERHEAD_TOKENS}-token request: ${frames}`,
  };
}
