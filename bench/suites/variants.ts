// Measured expected gains: each proposed optimization applied to a copy of the gateway and run at
// the same time as an unmodified copy (same agent process and engine, same load, same window):
// p50 at concurrency 1, req/s at concurrency 32, and workerd / wrangler-host CPU per request.

import { mintToken } from "../../scripts/lib/token.ts";
import {
  type Bench,
  MODEL_1,
  measureHttp,
  modelNames,
  requestSpec,
  syntheticEngine,
} from "../lib/context.ts";
import { LoadClient } from "../lib/http-client.ts";
import { cpuTimeMs } from "../lib/procs.ts";
import { routeThroughRegistry } from "../lib/registry-routing.ts";
import { type ActiveRollouts, benchRollouts, describeRollouts, stopRollouts } from "../lib/rollouts.ts";
import { type RunningWorker, startAgent, startOrchard } from "../lib/stack.ts";
import { type Spread, spread, summarize } from "../lib/stats.ts";
import { cell, table } from "../lib/table.ts";
import {
  combinedVariant,
  type PreparedVariant,
  prepareFromRef,
  prepareVariant,
  VARIANTS,
  type VariantSpec,
} from "../lib/variants.ts";
import { OVERHEAD_TOKENS } from "./overhead.ts";

/** Requests per second offered to each copy: well under what one workerd thread can serve. */
const PACE = 250;

export interface VariantResult {
  name: string;
  change: string;
  skipped?: string;
  /** Variant p50 − original p50 at the same pace, ms (negative = faster). */
  p50DeltaMs?: Spread;
  /** Req/s gain implied at saturation (one workerd thread): original CPU/request ÷ variant's − 1, %. */
  rpsGainPercent?: Spread;
  /** Variant − original workerd CPU per request, µs. */
  workerdCpuDeltaUs?: Spread;
  /** Variant − original wrangler-host CPU per request (it parses workerd's log lines), µs. */
  hostCpuDeltaUs?: Spread;
}

/**
 * Without `against`: every prototype in VARIANTS (and all of them together) against an unmodified
 * copy, then the agent's coalescing window. With `against` (a git ref): this checkout's gateway
 * against the gateway at that ref, the before/after of a change that landed, in the same run.
 */
export async function runVariants(
  bench: Bench,
  secret: string,
  against?: string,
  /** With `against`: the git ref to compare with it instead of the working tree. */
  compare?: string,
): Promise<{ results: VariantResult[]; text: string }> {
  const prepared: PreparedVariant[] = [];
  const results: VariantResult[] = [];
  const usable: VariantSpec[] = [];
  let original: PreparedVariant;
  if (against !== undefined) {
    original = prepareFromRef(against);
    const tree =
      compare === undefined
        ? (prepareVariant({
            name: "this checkout",
            change: "the working tree",
            patches: [],
          }) as PreparedVariant)
        : prepareFromRef(compare);
    prepared.push(tree);
  } else {
    for (const spec of VARIANTS) {
      const p = prepareVariant(spec);
      if ("skipped" in p) results.push({ name: spec.name, change: spec.change, skipped: p.skipped });
      else {
        prepared.push(p);
        usable.push(spec);
      }
    }
    if (usable.length > 1) {
      const all = prepareVariant(combinedVariant(usable));
      if (!("skipped" in all)) prepared.push(all);
    }
    original = prepareVariant({
      name: "original",
      change: "unmodified copy",
      patches: [],
    }) as PreparedVariant;
  }
  const baseName = original.spec.name;
  bench.log(`  variants: starting ${prepared.length + 1} gateway copies…`);
  const workers = new Map<string, RunningWorker>();
  try {
    const started = await Promise.all(
      [original, ...prepared].map((v) =>
        startOrchard(secret, { config: v.configPath }, `variant ${v.spec.name}`),
      ),
    );
    for (const [i, v] of [original, ...prepared].entries())
      workers.set(v.spec.name, started[i] as RunningWorker);
    bench.log(`  baseline: ${original.spec.change}`);
    const engine = syntheticEngine(true, bench.rollouts);
    const models = modelNames(engine);
    const agent = await startAgent("bench-variants", secret, engine, {
      models,
      more: [original, ...prepared].map((v) => ({
        label: v.spec.name,
        worker: workers.get(v.spec.name) as RunningWorker,
        ...(v.protocol === undefined ? {} : { protocol: v.protocol }),
      })),
    });
    const rollouts: ActiveRollouts[] = [];
    try {
      // Each copy routes by name the way its build does: through the registry when it has one, and
      // (--rollouts on) through a canary and an A/B test when it has them, like the main run.
      for (const [name, worker] of workers) {
        const routing = await routeThroughRegistry(worker.directOrigin, secret, models);
        const active = await benchRollouts(worker.directOrigin, secret, routing, bench.rollouts, name);
        rollouts.push(active);
        bench.log(
          `  ${name}: requests by name: ${routing}; rollouts: ${describeRollouts(active).split(";")[0]}`,
        );
      }
      const base = workers.get(baseName) as RunningWorker;
      const warmBase: Bench = { ...bench, orchard: base };
      await measureHttp(
        warmBase,
        "orchard",
        requestSpec(warmBase, "orchard", MODEL_1, OVERHEAD_TOKENS, false),
        { concurrency: 16, warmupMs: 0, durationMs: 12000 },
        [agent],
      );
      for (const v of prepared) {
        const worker = workers.get(v.spec.name) as RunningWorker;
        // Orchard's code needs ~10,000 requests before V8 has optimized it (see warmup.ts): a fresh
        // copy gets them first, so it is not compared, cold, with the long-running unmodified copy.
        const warm: Bench = { ...bench, orchard: worker };
        await measureHttp(
          warm,
          "orchard",
          requestSpec(warm, "orchard", MODEL_1, OVERHEAD_TOKENS, false),
          { concurrency: 16, warmupMs: 0, durationMs: 8000 },
          [agent],
        );
        const baseCpu: number[] = [];
        const reps: { p50: number[]; rps: number[]; cpu: number[]; host: number[] } = {
          p50: [],
          rps: [],
          cpu: [],
          host: [],
        };
        for (let rep = 0; rep < Math.max(5, bench.reps); rep++) {
          // Both copies at the same fixed request rate, at the same time: well below saturation, so
          // CPU per request and latency compare like for like, and whatever else the machine does in
          // that window hits both alike.
          const [o, n] = await Promise.all(
            [base, worker].map((w) => {
              const vb: Bench = { ...bench, orchard: w };
              const spec = requestSpec(vb, "orchard", MODEL_1, OVERHEAD_TOKENS, false);
              const loop = {
                concurrency: 4,
                ratePerSecond: PACE,
                warmupMs: 300,
                durationMs: 2500,
                expectTokens: OVERHEAD_TOKENS,
              };
              return measureHttp(vb, "orchard", spec, loop, [agent]);
            }),
          );
          if (!o || !n) throw new Error("missing run");
          reps.p50.push(summarize(n.latencies).p50 - summarize(o.latencies).p50);
          reps.cpu.push((n.cpuMsPerRequest.workerd - o.cpuMsPerRequest.workerd) * 1000);
          reps.host.push((n.cpuMsPerRequest.wranglerHost - o.cpuMsPerRequest.wranglerHost) * 1000);
          reps.rps.push((o.cpuMsPerRequest.workerd / n.cpuMsPerRequest.workerd - 1) * 100);
          baseCpu.push(o.cpuMsPerRequest.workerd * 1000);
        }
        results.push({
          name: v.spec.name,
          change: v.spec.change,
          p50DeltaMs: spread(reps.p50),
          rpsGainPercent: spread(reps.rps),
          workerdCpuDeltaUs: spread(reps.cpu),
          hostCpuDeltaUs: spread(reps.host),
        });
        bench.log(
          `  variant ${v.spec.name}: workerd ${cell(spread(reps.cpu), 0)} µs/req of ${cell(spread(baseCpu), 0)}, p50 ${cell(spread(reps.p50), 3)} ms`,
        );
      }
      if (against === undefined) results.push(await agentFlushVariant(bench, secret, base));
    } finally {
      await Promise.all(rollouts.map((r) => stopRollouts(r)));
      await agent.stop();
    }
  } finally {
    await Promise.all([...workers.values()].map((w) => w.stop()));
    for (const v of [original, ...prepared]) v.dispose();
  }
  const text = table(
    [
      against === undefined
        ? `prototype (on a copy) vs unmodified copy, both at ${PACE} req/s`
        : `${prepared[0]?.spec.change} vs ${original.spec.change}, both at ${PACE} req/s`,
      "Δ workerd CPU µs/req",
      "implied req/s gain %",
      "Δ host CPU µs/req",
      "Δ p50 ms",
    ],
    results.map((r) =>
      r.skipped
        ? [r.name, `skipped: ${r.skipped}`, "", "", ""]
        : [
            r.name,
            cell(r.workerdCpuDeltaUs as Spread, 0),
            cell(r.rpsGainPercent as Spread, 1),
            cell(r.hostCpuDeltaUs as Spread, 0),
            cell(r.p50DeltaMs as Spread, 3),
          ],
    ),
  );
  return { results, text: `${text}\n\n${results.map((r) => `${r.name}: ${r.change}`).join("\n")}` };
}

/** Tokens/s of the paced streams in the coalescing comparison: a 20–60 tok/s model is typical on a Mac. */
const FLUSH_RATE = 40;
const FLUSH_TOKENS = 80;
const FLUSH_STREAMS = 20;

/**
 * Agent side: the chunk coalescing window (flushMs 16, the default, vs 50) with a model at 40 tok/s,
 * where a 16 ms window sends every token alone. Two agents on the same gateway copy, ABBA waves.
 */
async function agentFlushVariant(
  bench: Bench,
  secret: string,
  gateway: RunningWorker,
): Promise<VariantResult> {
  const name = "agent-flush-50ms";
  const change = `agent: chunk coalescing window flushMs 50 instead of 16 (a ${FLUSH_RATE} tok/s model; first token still immediate)`;
  const start = (flushMs: number) =>
    startAgent(
      `bench-flush-${flushMs}`,
      secret,
      { kind: "synthetic", models: [{ name: `paced-f${flushMs}`, tokensPerSecond: FLUSH_RATE }] },
      { models: [`paced-f${flushMs}`], more: [{ label: "original", worker: gateway }] },
      { flushMs },
    );
  const [a16, a50] = await Promise.all([start(16), start(50)]);
  const admin = await mintToken({ secret, role: "admin", sub: "bench-admin" });
  const frames = async (agentId: string) => {
    const res = await fetch(`${gateway.directOrigin}/agents`, {
      headers: { authorization: `Bearer ${admin}` },
    });
    const body = (await res.json()) as { agents: { id: string; framesReceived?: number }[] };
    return body.agents.find((a) => a.id === agentId)?.framesReceived ?? Number.NaN;
  };
  const wave = async (flushMs: number) => {
    const vb: Bench = { ...bench, orchard: gateway };
    const spec = requestSpec(vb, "orchard", `paced-f${flushMs}`, FLUSH_TOKENS, true);
    const client = new LoadClient(gateway.directOrigin, FLUSH_STREAMS);
    const f0 = await frames(`bench-flush-${flushMs}`);
    const c0 = cpuTimeMs(gateway.userWorkerdPid) ?? 0;
    const ttfts: number[] = [];
    await Promise.all(
      Array.from({ length: FLUSH_STREAMS }, async () => {
        const r = await client.request(spec, { onTokens() {} });
        if (r.tokens !== FLUSH_TOKENS) throw new Error(`expected ${FLUSH_TOKENS} tokens, got ${r.tokens}`);
        if (r.ttftMs !== undefined) ttfts.push(r.ttftMs);
      }),
    );
    const cpuUs = (((cpuTimeMs(gateway.userWorkerdPid) ?? 0) - c0) * 1000) / FLUSH_STREAMS;
    await client.close();
    return {
      cpuUs,
      frames: ((await frames(`bench-flush-${flushMs}`)) - f0) / FLUSH_STREAMS,
      ttft: summarize(ttfts).p50,
    };
  };
  try {
    const reps = {
      cpu: [] as number[],
      frames16: [] as number[],
      frames50: [] as number[],
      ttft: [] as number[],
      gain: [] as number[],
    };
    for (let rep = 0; rep < Math.max(4, bench.reps); rep++) {
      const order = rep % 2 === 0 ? [16, 50] : [50, 16];
      const got: Record<number, { cpuUs: number; frames: number; ttft: number }> = {};
      for (const f of order) got[f] = await wave(f);
      const [o, n] = [got[16], got[50]] as { cpuUs: number; frames: number; ttft: number }[];
      if (!o || !n) continue;
      reps.cpu.push(n.cpuUs - o.cpuUs);
      reps.frames16.push(o.frames);
      reps.frames50.push(n.frames);
      reps.ttft.push(n.ttft - o.ttft);
      reps.gain.push((o.cpuUs / n.cpuUs - 1) * 100);
    }
    bench.log(
      `  variant ${name}: frames/stream ${cell(spread(reps.frames16), 1)} → ${cell(spread(reps.frames50), 1)}, workerd ${cell(spread(reps.cpu), 0)} µs/stream`,
    );
    return {
      name,
      change: `${change}; frames per ${FLUSH_TOKENS}-token stream ${cell(spread(reps.frames16), 1)} → ${cell(spread(reps.frames50), 1)}; this row is per stream (Δ CPU, gain in streams/s) and its Δ p50 is TTFT`,
      workerdCpuDeltaUs: spread(reps.cpu),
      rpsGainPercent: spread(reps.gain),
      hostCpuDeltaUs: spread([]),
      p50DeltaMs: spread(reps.ttft),
    };
  } finally {
    await Promise.all([a16.stop(), a50.stop()]);
  }
}
