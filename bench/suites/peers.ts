// Peers side by side: the same OpenAI chat request through the token source directly, a plain
// Node reverse proxy, the Portkey AI gateway and Orchard, all in front of one synthetic token
// source over HTTP (bench/lib/peers.ts), non-streaming and streaming, at concurrency 1, 32 and 128.
// Within each repetition the peers run one after another in an order that alternates between
// repetitions (ABBA); numbers are median [min–max] over repetitions, and Orchard ÷ peer ratios are
// paired per repetition. A peer that fails (does not start, or answers errors) is a result.
import { closedLoop, type LoopResult } from "../lib/closed-loop.ts";
import { type Bench, interleaved, scaleLoop } from "../lib/context.ts";
import { LoadClient } from "../lib/http-client.ts";
import { type Peer, type PeerName, peerRequest, startPeers } from "../lib/peers.ts";
import { cpuTimeMs } from "../lib/procs.ts";
import { type Spread, spread, summarize } from "../lib/stats.ts";
import { cell, type TargetCheck, table } from "../lib/table.ts";

const CONCURRENCY = [1, 32, 128] as const;
export const PEER_MODES = [
  { name: "non-streaming", tokens: 8, stream: false },
  { name: "streaming", tokens: 64, stream: true },
] as const;
type Mode = (typeof PEER_MODES)[number]["name"];

export interface PeerRow {
  peer: PeerName;
  label: string;
  mode: Mode;
  concurrency: number;
  p50: Spread;
  p99: Spread;
  rps: Spread;
  /** CPU ms per request of the peer's own processes (not the token source's). */
  gatewayCpuMs: Spread;
  /** The same, per process (Orchard: workerd, wrangler host, agent), in the order of Peer.pids. */
  processCpuMs: Spread[];
  /** CPU ms per request of the token source serving this peer. */
  sourceCpuMs: Spread;
  errors: number;
  errorSamples: string[];
  /** Every repetition answered only errors: the peer failed this mode (none completing in the window is not a failure). */
  failed: boolean;
}

export interface PeerRatio {
  peer: PeerName;
  mode: Mode;
  concurrency: number;
  /** Orchard req/s ÷ peer req/s (> 1: Orchard serves more). */
  rps: Spread;
  /** Orchard p99 ÷ peer p99 (< 1: Orchard's tail is shorter). */
  p99: Spread;
}

interface Run {
  result: LoopResult;
  /** CPU ms per request: each of the peer's processes (Peer.pids), and the token source. */
  processCpuMs: number[];
  sourceCpuMs: number;
}

async function measure(
  bench: Bench,
  peer: Peer,
  sourcePid: number,
  mode: (typeof PEER_MODES)[number],
  concurrency: number,
  durationMs = 1500,
): Promise<Run> {
  const client = new LoadClient(peer.origin, concurrency);
  const cpu = () => [...peer.pids, sourcePid].map((pid) => cpuTimeMs(pid) ?? 0);
  const before = cpu();
  const loop = scaleLoop(bench, { concurrency, warmupMs: 300, durationMs, expectTokens: mode.tokens });
  const result: LoopResult = await closedLoop(
    client.requestFn(peerRequest(peer, mode.tokens, mode.stream)),
    loop,
  );
  await client.close();
  const perRequest = cpu().map((ms, i) => (ms - (before[i] as number)) / Math.max(1, result.allCompleted));
  return {
    result,
    processCpuMs: perRequest.slice(0, peer.pids.length),
    sourceCpuMs: perRequest.at(-1) as number,
  };
}

export async function runPeers(
  bench: Bench,
  secret: string,
): Promise<{
  rows: PeerRow[];
  ratios: PeerRatio[];
  failedToStart: string[];
  checks: TargetCheck[];
  text: string;
}> {
  const started = await startPeers(bench.orchard, secret, bench.userToken, bench.log);
  const { peers } = started;
  const runs = new Map<string, Run[]>();
  const key = (p: PeerName, m: Mode, c: number) => `${p}/${m}/${c}`;
  try {
    // JIT first: each peer serves both modes for a while before anything is measured (Orchard's
    // chat route longer: its Worker needs ~10,000 requests, see warmup.ts; /generate is warm already).
    for (const peer of peers) {
      const ms = peer.name === "orchard" ? 5_000 : 1_500;
      for (const mode of PEER_MODES)
        await measure({ ...bench, timeScale: 1 }, peer, started.sourcePid, mode, 8, ms);
    }
    bench.log("  peers: warmed up");
    for (const mode of PEER_MODES) {
      for (const c of CONCURRENCY) {
        for (let rep = 0; rep < bench.reps; rep++) {
          for (const peer of interleaved(peers, rep)) {
            const k = key(peer.name, mode.name, c);
            const earlier = runs.get(k) ?? [];
            // A peer that answered nothing but errors in its first repetition is not run again.
            if (earlier.length > 0 && earlier.every((r) => r.result.completed === 0 && r.result.errors > 0))
              continue;
            runs.set(k, [...earlier, await measure(bench, peer, started.sourcePid, mode, c)]);
          }
        }
        bench.log(`  peers: ${mode.name} c=${c} done`);
      }
    }
  } finally {
    await started.stop();
  }

  const rows: PeerRow[] = [];
  for (const mode of PEER_MODES) {
    for (const c of CONCURRENCY) {
      for (const peer of peers) {
        const reps = runs.get(key(peer.name, mode.name, c)) ?? [];
        const ok = reps.filter((r) => r.result.completed > 0);
        const sums = ok.map((r) => summarize(r.result.latencies));
        rows.push({
          peer: peer.name,
          label: peer.label,
          mode: mode.name,
          concurrency: c,
          p50: spread(sums.map((s) => s.p50)),
          p99: spread(sums.map((s) => s.p99)),
          rps: spread(ok.map((r) => r.result.requestsPerSecond)),
          gatewayCpuMs: spread(ok.map((r) => r.processCpuMs.reduce((a, b) => a + b, 0))),
          processCpuMs: peer.pids.map((_, i) => spread(ok.map((r) => r.processCpuMs[i] as number))),
          sourceCpuMs: spread(ok.map((r) => r.sourceCpuMs)),
          errors: reps.reduce((n, r) => n + r.result.errors, 0),
          errorSamples: [...new Set(reps.flatMap((r) => r.result.errorSamples))].slice(0, 2),
          failed: reps.length > 0 && ok.length === 0 && reps.some((r) => r.result.errors > 0),
        });
      }
    }
  }

  const ratios: PeerRatio[] = [];
  for (const mode of PEER_MODES) {
    for (const c of CONCURRENCY) {
      const orchard = runs.get(key("orchard", mode.name, c)) ?? [];
      for (const peer of peers.filter((p) => p.name !== "orchard")) {
        const other = runs.get(key(peer.name, mode.name, c)) ?? [];
        const paired = orchard.map((o, i) => [o.result, other[i]?.result] as const);
        const both = paired.filter(([o, p]) => o.completed > 0 && (p?.completed ?? 0) > 0);
        ratios.push({
          peer: peer.name,
          mode: mode.name,
          concurrency: c,
          rps: spread(both.map(([o, p]) => o.requestsPerSecond / (p as LoopResult).requestsPerSecond)),
          p99: spread(
            both.map(([o, p]) => summarize(o.latencies).p99 / summarize((p as LoopResult).latencies).p99),
          ),
        });
      }
    }
  }

  const checks: TargetCheck[] = [];
  for (const mode of PEER_MODES) {
    const r = ratios.find((x) => x.peer === "portkey" && x.mode === mode.name && x.concurrency === 32);
    const portkeyRow = rows.find((x) => x.peer === "portkey" && x.mode === mode.name && x.concurrency === 32);
    if (!r || !portkeyRow || portkeyRow.failed) continue;
    checks.push({
      target: `Orchard beats Portkey at concurrency 32, ${mode.name} (req/s ratio > 1, p99 ratio < 1)`,
      measured: `req/s ×${cell(r.rps, 2)}, p99 ×${cell(r.p99, 2)}`,
      pass: r.rps.median > 1 && r.p99.median < 1,
    });
  }

  const failedToStart = started.failed.map((f) => `${f.label}: did not start (${f.reason.slice(0, 300)})`);
  const resultOf = (r: PeerRow) =>
    r.failed
      ? `FAILED: ${r.errorSamples[0]?.slice(0, 120) ?? "errors"}`
      : r.rps.reps.length === 0
        ? "none finished inside the window"
        : String(r.errors);
  const text = [
    table(
      [
        "peer (OpenAI chat, same token source)",
        "mode",
        "conc",
        "p50 ms",
        "p99 ms",
        "req/s",
        "gateway CPU ms/req",
        "source CPU ms/req",
        "err",
      ],
      rows.map((r) => [
        r.label,
        r.mode === "streaming" ? `SSE ${PEER_MODES[1].tokens} tok` : `JSON ${PEER_MODES[0].tokens} tok`,
        String(r.concurrency),
        cell(r.p50, 3),
        cell(r.p99, 2),
        cell(r.rps, 0),
        cell(r.gatewayCpuMs, 3),
        cell(r.sourceCpuMs, 3),
        resultOf(r),
      ]),
    ),
    "",
    table(
      [
        "Orchard ÷ peer, paired per repetition",
        "mode",
        "conc",
        "req/s ratio (>1: Orchard more)",
        "p99 ratio (<1: Orchard shorter)",
      ],
      ratios.map((r) => [
        peers.find((p) => p.name === r.peer)?.label ?? r.peer,
        r.mode,
        String(r.concurrency),
        cell(r.rps, 2),
        cell(r.p99, 2),
      ]),
    ),
    "",
    table(
      ["Orchard's gateway CPU by process", "conc", "workerd ms/req", "wrangler host", "agent", "req/s bound"],
      rows
        .filter((r) => r.peer === "orchard" && !r.failed && r.rps.reps.length > 0)
        .map((r) => {
          const [workerd, host, agent] = r.processCpuMs as [Spread, Spread, Spread];
          return [
            r.mode,
            String(r.concurrency),
            cell(workerd, 3),
            cell(host, 3),
            cell(agent, 3),
            workerd.median > 0 ? String(Math.round(1000 / workerd.median)) : "n/a",
          ];
        }),
    ),
    ...(failedToStart.length ? ["", ...failedToStart] : []),
    "",
    "gateway CPU: the peer's own processes (proxy; Portkey; Orchard's workerd + wrangler host + its agent), not the token source's;",
    "source CPU: the token source's, per request of that peer. req/s bound: 1000 ÷ workerd ms/req (one workerd thread runs the Worker and its hub here)",
  ].join("\n");
  return { rows, ratios, failedToStart, checks, text };
}
