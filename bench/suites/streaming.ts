// Streaming relay: tokens/s delivered to callers through one pool with 1, 8 and 32 concurrent
// streams of long generations (synthetic engine, as fast as possible), with 1 and 4 agents, against
// the token source alone in-process; and the time to first token each gateway adds (short streams,
// one at a time, relay and Orchard alternating).
import {
  type Bench,
  interleaved,
  MODEL_1,
  MODEL_4,
  measureHttp,
  measureInAgent,
  type PathName,
  requestSpec,
} from "../lib/context.ts";
import { type Spread, spread, summarize } from "../lib/stats.ts";
import { cell, type TargetCheck, table } from "../lib/table.ts";

export const STREAM_TOKENS = 2000;
const STREAMS = [1, 8, 32] as const;
const AGENT_COUNTS = [1, 4] as const;
const TTFT_TOKENS = 16;

export interface StreamingRow {
  path: "token source" | "agent loopback" | PathName;
  agents: number;
  streams: number;
  tokensPerSecond: Spread;
  ttftP50: Spread;
  streamP50: Spread;
  errors: number;
  errorSamples: string[];
}

export interface StreamingResult {
  rows: StreamingRow[];
  framesPerStream: Record<number, Record<string, number>>;
  ttft: { relay: { p50: Spread; p95: Spread }; orchard: { p50: Spread; p95: Spread }; addedP50: Spread };
  checks: TargetCheck[];
  text: string;
}

export async function runStreaming(bench: Bench): Promise<StreamingResult> {
  const first = bench.agents[0];
  if (!first) throw new Error("no agent");
  const rows: StreamingRow[] = [];
  const framesPerStream: Record<number, Record<string, number>> = {};
  for (const agents of AGENT_COUNTS) {
    const model = agents === 1 ? MODEL_1 : MODEL_4;
    const involved = bench.agents.slice(0, agents);
    for (const streams of STREAMS) {
      const loop = { concurrency: streams, warmupMs: 300, durationMs: 1500, expectTokens: STREAM_TOKENS };
      type Rep = { tps: number; ttft: number; p50: number; errors: number; samples: string[] };
      const reps: Record<string, Rep[]> = {};
      const push = (path: string, rep: Rep) => {
        reps[path] = [...(reps[path] ?? []), rep];
      };
      for (let rep = 0; rep < bench.reps; rep++) {
        if (agents === 1) {
          const r = await measureInAgent(bench, first, "engine-run", MODEL_1, STREAM_TOKENS, {
            ...loop,
            durationMs: 800,
          });
          push("token source", {
            tps: r.tokensPerSecond,
            ttft: summarize(r.ttfts).p50,
            p50: summarize(r.latencies).p50,
            errors: r.errors,
            samples: r.errorSamples,
          });
          const a = await measureInAgent(bench, first, "loopback-run", MODEL_1, STREAM_TOKENS, {
            ...loop,
            durationMs: 1000,
          });
          if (a.framesPerRequest) framesPerStream[streams] = a.framesPerRequest;
          push("agent loopback", {
            tps: a.tokensPerSecond,
            ttft: summarize(a.ttfts).p50,
            p50: summarize(a.latencies).p50,
            errors: a.errors,
            samples: a.errorSamples,
          });
        }
        for (const path of interleaved<PathName>(["relay", "orchard"], rep)) {
          const r = await measureHttp(
            bench,
            path,
            requestSpec(bench, path, model, STREAM_TOKENS, true),
            loop,
            involved,
          );
          push(path, {
            tps: r.tokensPerSecond,
            ttft: summarize(r.ttfts).p50,
            p50: summarize(r.latencies).p50,
            errors: r.errors,
            samples: r.errorSamples,
          });
        }
      }
      for (const path of ["token source", "agent loopback", "relay", "orchard"] as const) {
        const list = reps[path];
        if (!list) continue;
        rows.push({
          path,
          agents: path === "token source" || path === "agent loopback" ? 1 : agents,
          streams,
          tokensPerSecond: spread(list.map((r) => r.tps)),
          ttftP50: spread(list.map((r) => r.ttft)),
          streamP50: spread(list.map((r) => r.p50)),
          errors: list.reduce((n, r) => n + r.errors, 0),
          errorSamples: list.flatMap((r) => r.samples).slice(0, 3),
        });
      }
      bench.log(`  streaming agents=${agents} streams=${streams} done`);
    }
  }

  // Time to first token, one stream at a time, short generations.
  const ttftReps: Record<PathName, { p50: number; p95: number }[]> = { relay: [], orchard: [] };
  for (let rep = 0; rep < bench.reps; rep++) {
    for (const path of interleaved<PathName>(["relay", "orchard"], rep)) {
      const r = await measureHttp(
        bench,
        path,
        requestSpec(bench, path, MODEL_1, TTFT_TOKENS, true),
        { concurrency: 1, warmupMs: 200, durationMs: 1200, expectTokens: TTFT_TOKENS },
        [first],
      );
      const s = summarize(r.ttfts);
      ttftReps[path].push({ p50: s.p50, p95: s.p95 });
    }
  }
  const ttft = {
    relay: { p50: spread(ttftReps.relay.map((r) => r.p50)), p95: spread(ttftReps.relay.map((r) => r.p95)) },
    orchard: {
      p50: spread(ttftReps.orchard.map((r) => r.p50)),
      p95: spread(ttftReps.orchard.map((r) => r.p95)),
    },
    addedP50: spread(ttftReps.orchard.map((o, i) => o.p50 - (ttftReps.relay[i]?.p50 ?? Number.NaN))),
  };

  const at32 = rows.filter((r) => r.path === "orchard" && r.streams === 32);
  const worst32 = at32.reduce(
    (lo, r) => (r.tokensPerSecond.median < lo.tokensPerSecond.median ? r : lo),
    at32[0] as StreamingRow,
  );
  const checks: TargetCheck[] = [
    {
      target: "Orchard ≥ 100,000 tokens/s at 32 streams (worse of 1 and 4 agents)",
      measured: `${cell(worst32.tokensPerSecond, 0)} tok/s (${worst32.agents} agent${worst32.agents > 1 ? "s" : ""})`,
      pass: worst32.tokensPerSecond.median >= 100_000,
    },
    {
      target: "Orchard TTFT within 2 ms of the bare relay (p50)",
      measured: `+${cell(ttft.addedP50, 3)} ms (${cell(ttft.orchard.p50, 3)} vs ${cell(ttft.relay.p50, 3)})`,
      pass: ttft.addedP50.median <= 2,
    },
  ];

  const label = (r: StreamingRow) =>
    r.path === "token source"
      ? "token source alone (in-process)"
      : r.path === "agent loopback"
        ? "Agent, loopback WS (in-process hub)"
        : `${r.path === "relay" ? "bare relay" : "Orchard SSE"}, ${r.agents} agent${r.agents > 1 ? "s" : ""}`;
  const text = [
    table(
      [`streams of ${STREAM_TOKENS} tokens`, "streams", "tokens/s", "TTFT p50 ms", "stream p50 ms", "err"],
      rows.map((r) => [
        label(r),
        String(r.streams),
        cell(r.tokensPerSecond, 0),
        cell(r.ttftP50, 2),
        cell(r.streamP50, 1),
        String(r.errors),
      ]),
    ),
    "",
    table(
      [`time to first token (${TTFT_TOKENS}-token streams, one at a time)`, "p50 ms", "p95 ms"],
      [
        ["bare relay", cell(ttft.relay.p50, 3), cell(ttft.relay.p95, 3)],
        ["Orchard", cell(ttft.orchard.p50, 3), cell(ttft.orchard.p95, 3)],
        ["added by Orchard (paired per repetition)", cell(ttft.addedP50, 3), ""],
      ],
    ),
    "",
    `agent → gateway frames per ${STREAM_TOKENS}-token stream (loopback hub): ${Object.entries(
      framesPerStream,
    )
      .map(
        ([streams, f]) =>
          `${streams} stream(s): ${Object.entries(f)
            .map(([t, n]) => `${n.toFixed(1)} ${t}`)
            .join(" + ")}`,
      )
      .join("; ")}`,
  ].join("\n");
  return { rows, ttft, framesPerStream, checks, text };
}
