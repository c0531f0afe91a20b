// The full feature set's cost: one short non-streaming request (8 tokens, synthetic engine as fast
// as possible) through the bare relay, Orchard with every request-path feature on, and the SAME
// gateway build with them off, at concurrency 1 and 32, ABBA-interleaved within each repetition.
//
// "All on" is the bench's Orchard: requests by name resolved through the registry, a canary holding
// at 50% (on MODEL_1) and an A/B test split 0.5 (on MODEL_4) — one rollout per model is the
// gateway's rule, so requests alternate between the two models, each with its own end user — rate
// limits (RATE_LIMITS, out of reach), metrics recording, injection detection in "flag" mode and
// output sanitization with redaction (stack.ts ALL_ON_VARS). "All off" is a second Worker of the
// same snapshot with ALL_OFF_VARS, no registry activation (requests route by announced name) and
// no rollouts; its hub still records metrics (no setting turns that off), so metrics' share comes
// from the profile only (everything-profile.ts). The relay and "all off" get the same model mix.
import type { LoopResult } from "../lib/closed-loop.ts";
import {
  type Bench,
  type CpuShare,
  interleaved,
  MODEL_1,
  MODEL_4,
  measureHttp,
  requestSpec,
} from "../lib/context.ts";
import type { HttpRequestSpec } from "../lib/http-client.ts";
import { cpuTimeMs } from "../lib/procs.ts";
import { type Spread, spread, summarize } from "../lib/stats.ts";
import { cell, num, type TargetCheck, table } from "../lib/table.ts";
import { type FeatureProfile, profileFeatures } from "./everything-profile.ts";

export const EVERYTHING_TOKENS = 8;
const CONCURRENCY = [1, 32] as const;
type Target = "relay" | "off" | "on";
const TARGETS: readonly Target[] = ["relay", "off", "on"];
const LABEL: Record<Target, string> = {
  relay: "(b) bare relay",
  off: "Orchard, every feature off",
  on: "Orchard, every feature on",
};

export interface EverythingRow {
  target: Target;
  concurrency: number;
  p50: Spread;
  p99: Spread;
  rps: Spread;
  workerdCpuMs: Spread;
  errors: number;
  errorSamples: string[];
}

export interface EverythingResult {
  rows: EverythingRow[];
  /** p50 minus the relay's, paired per repetition, ms: all on, all off, and on − off. */
  ownCostP50: Record<number, { on: Spread; off: Spread; features: Spread }>;
  /** 1 − req/s ÷ the relay's, paired per repetition, %. */
  rpsDrop: Record<number, { on: Spread; off: Spread }>;
  /** Workerd CPU per request, all on − all off, paired per repetition, ms (at concurrency 32). */
  featuresCpuMs: Spread;
  /** Each Worker's workerd CPU with no traffic, ms per second (alarms, ticks, flushes), per repetition. */
  idleCpuMsPerS: Record<Target, Spread>;
  /** Each feature's share, from a profile of an all-on Worker (everything-profile.ts). */
  profile?: FeatureProfile;
  /** Why there is no profile, if there is none. */
  profileError?: string;
  checks: TargetCheck[];
  text: string;
}

/** The request mix: MODEL_1 (canary) and MODEL_4 (A/B test) in turn, for every target alike. */
function spec(bench: Bench, target: Target): HttpRequestSpec {
  const path = target === "relay" ? "relay" : "orchard";
  const one = requestSpec(bench, path, MODEL_1, EVERYTHING_TOKENS, false);
  const four = requestSpec(bench, path, MODEL_4, EVERYTHING_TOKENS, false);
  return { ...one, perRequestBodies: [one.body as string, four.body as string] };
}

/** How long each idle sample lasts: no request reaches any of the three Workers meanwhile. */
const IDLE_SAMPLE_MS = 3_000;

/** The three workerds' CPU over IDLE_SAMPLE_MS with no traffic, ms of CPU per second each. */
async function idleCpu(pids: Record<Target, number>): Promise<Record<Target, number>> {
  const read = () => TARGETS.map((t) => cpuTimeMs(pids[t]) ?? Number.NaN);
  const before = read();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, IDLE_SAMPLE_MS));
  const seconds = (performance.now() - t0) / 1000;
  const after = read();
  return Object.fromEntries(
    TARGETS.map((t, i) => [t, ((after[i] as number) - (before[i] as number)) / seconds]),
  ) as Record<Target, number>;
}

/** JIT warm-up of the all-off Worker, as warmup.ts does for the others (counted in requests). */
async function warmUpOff(bench: Bench, requests = 12_000, maxMs = 45_000): Promise<number> {
  let served = 0;
  for (const t0 = performance.now(); served < requests && performance.now() - t0 < maxMs; ) {
    const r = await measureHttp(
      bench,
      "orchard",
      spec(bench, "off"),
      { concurrency: 12, warmupMs: 0, durationMs: 5000 },
      bench.agents,
    );
    served += r.allCompleted;
  }
  return served;
}

export async function runEverything(bench: Bench, secret: string): Promise<EverythingResult> {
  const off = bench.orchardOff;
  if (!off) throw new Error("the everything suite needs the all-off gateway (bench.orchardOff)");
  const benchOf: Record<Target, Bench> = { relay: bench, on: bench, off: { ...bench, orchard: off } };
  const warmed = await warmUpOff(benchOf.off);
  bench.log(`  everything: all-off Worker warmed up (${warmed} requests)`);
  const runs = new Map<string, { loop: LoopResult; cpu: CpuShare }[]>();
  const pids: Record<Target, number> = {
    relay: bench.relay.userWorkerdPid,
    on: bench.orchard.userWorkerdPid,
    off: off.userWorkerdPid,
  };
  const idle: Record<Target, number>[] = [];
  for (const c of CONCURRENCY) {
    const loop = { concurrency: c, warmupMs: 300, durationMs: 1500, expectTokens: EVERYTHING_TOKENS };
    for (let rep = 0; rep < bench.reps; rep++) {
      for (const target of interleaved(TARGETS, rep)) {
        const b = benchOf[target];
        const r = await measureHttp(
          b,
          target === "relay" ? "relay" : "orchard",
          spec(b, target),
          loop,
          b.agents,
        );
        const key = `${target}@${c}`;
        runs.set(key, [...(runs.get(key) ?? []), { loop: r, cpu: r.cpuMsPerRequest }]);
      }
      bench.log(`  everything c=${c} rep ${rep + 1}/${bench.reps} done`);
    }
    // Between the concurrency levels and at the end: what each Worker spends with nothing to serve.
    idle.push(await idleCpu(pids));
  }
  const idleCpuMsPerS = Object.fromEntries(
    TARGETS.map((t) => [t, spread(idle.map((sample) => sample[t]))]),
  ) as Record<Target, Spread>;

  const get = (t: Target, c: number) => runs.get(`${t}@${c}`) ?? [];
  const rows: EverythingRow[] = [];
  for (const c of CONCURRENCY) {
    for (const target of TARGETS) {
      const reps = get(target, c);
      const sums = reps.map((r) => summarize(r.loop.latencies));
      rows.push({
        target,
        concurrency: c,
        p50: spread(sums.map((s) => s.p50)),
        p99: spread(sums.map((s) => s.p99)),
        rps: spread(reps.map((r) => r.loop.requestsPerSecond)),
        workerdCpuMs: spread(reps.map((r) => r.cpu.workerd)),
        errors: reps.reduce((n, r) => n + r.loop.errors, 0),
        errorSamples: reps.flatMap((r) => r.loop.errorSamples).slice(0, 2),
      });
    }
  }
  const p50 = (r: { loop: LoopResult }) => summarize(r.loop.latencies).p50;
  const paired = (
    a: Target,
    b: Target,
    c: number,
    f: (x: { loop: LoopResult; cpu: CpuShare }, y: { loop: LoopResult; cpu: CpuShare }) => number,
  ) =>
    spread(
      get(a, c).map((x, i) => {
        const y = get(b, c)[i];
        return y ? f(x, y) : Number.NaN;
      }),
    );
  const ownCostP50: EverythingResult["ownCostP50"] = {};
  const rpsDrop: EverythingResult["rpsDrop"] = {};
  for (const c of CONCURRENCY) {
    ownCostP50[c] = {
      on: paired("on", "relay", c, (x, y) => p50(x) - p50(y)),
      off: paired("off", "relay", c, (x, y) => p50(x) - p50(y)),
      features: paired("on", "off", c, (x, y) => p50(x) - p50(y)),
    };
    const drop = (x: { loop: LoopResult }, y: { loop: LoopResult }) =>
      (1 - x.loop.requestsPerSecond / y.loop.requestsPerSecond) * 100;
    rpsDrop[c] = { on: paired("on", "relay", c, drop), off: paired("off", "relay", c, drop) };
  }
  const featuresCpuMs = paired("on", "off", 32, (x, y) => x.cpu.workerd - y.cpu.workerd);
  const featuresCpuMs1 = paired("on", "off", 1, (x, y) => x.cpu.workerd - y.cpu.workerd);
  /** A row's median of `field` (NaN when the row is missing). */
  const median = (t: Target, c: number, field: "rps" | "workerdCpuMs") =>
    rows.find((r) => r.target === t && r.concurrency === c)?.[field].median ?? Number.NaN;
  const own1 = ownCostP50[1] as EverythingResult["ownCostP50"][number];
  const drop32 = rpsDrop[32] as EverythingResult["rpsDrop"][number];
  const checks: TargetCheck[] = [
    {
      target: "Everything on: own cost over the relay at p50, concurrency 1 ≤ 0.5 ms",
      measured: `${cell(own1.on, 3)} ms`,
      pass: own1.on.median <= 0.5,
    },
    {
      target: "Everything on: req/s ≥ 85% of the relay's at concurrency 32",
      measured: `${cell(drop32.on, 1)} % fewer`,
      pass: drop32.on.median <= 15,
    },
  ];

  const text = [
    table(
      [
        "path (8 tokens, non-streaming, MODEL_1/MODEL_4 in turn)",
        "conc",
        "p50 ms",
        "p99 ms",
        "req/s",
        "workerd CPU ms/req",
        "err",
      ],
      rows.map((r) => [
        LABEL[r.target],
        String(r.concurrency),
        cell(r.p50, 3),
        cell(r.p99, 2),
        cell(r.rps, 0),
        cell(r.workerdCpuMs, 3),
        r.errors > 0 ? `${r.errors} (${r.errorSamples[0]?.slice(0, 80) ?? ""})` : "0",
      ]),
    ),
    "",
    table(
      ["derived (paired per repetition)", ...CONCURRENCY.map((c) => `conc ${c}`)],
      [
        [
          "own cost p50 over the relay, all on, ms",
          ...CONCURRENCY.map((c) => cell(ownCostP50[c]?.on as Spread, 3)),
        ],
        [
          "own cost p50 over the relay, all off, ms",
          ...CONCURRENCY.map((c) => cell(ownCostP50[c]?.off as Spread, 3)),
        ],
        [
          "the features' cost at p50 (on − off), ms",
          ...CONCURRENCY.map((c) => cell(ownCostP50[c]?.features as Spread, 3)),
        ],
        ["req/s below the relay, all on, %", ...CONCURRENCY.map((c) => cell(rpsDrop[c]?.on as Spread, 1))],
        ["req/s below the relay, all off, %", ...CONCURRENCY.map((c) => cell(rpsDrop[c]?.off as Spread, 1))],
      ],
    ),
    "",
    `the features' workerd CPU per request at concurrency 32 (on − off): ${cell(featuresCpuMs, 3)} ms` +
      ` (implied req/s bound: all off ${num(1000 / median("off", 32, "workerdCpuMs"), 0)},` +
      ` all on ${num(1000 / median("on", 32, "workerdCpuMs"), 0)})`,
    `the features' workerd CPU per request at concurrency 1 (on − off): ${cell(featuresCpuMs1, 3)} ms`,
    `idle workerd CPU, no traffic, ms per second (${idle.length} samples of ${IDLE_SAMPLE_MS / 1000} s): ` +
      TARGETS.map((t) => `${LABEL[t]} ${cell(idleCpuMsPerS[t], 1)}`).join(", ") +
      `; spread over concurrency 1's req/s that is ≈ ${TARGETS.map((t) => `${num(idleCpuMsPerS[t].median / median(t, 1, "rps"), 3)}`).join(" / ")} ms per request`,
  ].join("\n");
  const onCpu = median("on", 32, "workerdCpuMs");
  let profile: FeatureProfile | undefined;
  let profileError: string | undefined;
  try {
    profile = await profileFeatures(bench, secret, onCpu);
  } catch (err) {
    profileError = err instanceof Error ? err.message : String(err);
    bench.log(`  everything: no profile (${profileError.slice(0, 200)})`);
  }
  const rolloutsNote = bench.rollouts
    ? "all on: registry routing, the canary (MODEL_1) and the A/B test (MODEL_4) of the run header, RATE_LIMITS, metrics, INJECTION_POLICY flag, OUTPUT_REDACTION on; all off: RATE_LIMITS off, INJECTION_POLICY off, OUTPUT_REDACTION off, no registry activation, no rollouts (metrics are recorded either way)"
    : "--rollouts off: the all-on row has no canary or A/B test in this run";
  return {
    rows,
    ownCostP50,
    rpsDrop,
    featuresCpuMs,
    idleCpuMsPerS,
    ...(profile ? { profile } : {}),
    ...(profileError ? { profileError } : {}),
    checks,
    text: [
      text,
      rolloutsNote,
      "",
      profile ? profile.text : `each feature's share: no profile (${profileError?.slice(0, 300)})`,
    ].join("\n"),
  };
}
