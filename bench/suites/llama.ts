// The agent with a real engine: tokens/s of one generation on the demo model (llama.cpp, greedy,
// one thread, same prompt and max tokens) through Orchard end to end and through the Agent, against
// node-llama-cpp called directly. Every path runs once per repetition, in rotating order.
import type { Bench } from "../lib/context.ts";
import { cpuTimeMs } from "../lib/procs.ts";
import { type Spread, spread } from "../lib/stats.ts";
import { cell, type TargetCheck, table } from "../lib/table.ts";

export const LLAMA_PROMPT = "Once upon a time, in a lab full of Mac minis,";
export const LLAMA_MAX_TOKENS = 768;

type LlamaPath = "direct-completion" | "direct-evaluate" | "engine" | "agent-loopback" | "orchard";
const LABEL: Record<LlamaPath, string> = {
  "direct-completion": "node-llama-cpp direct (LlamaCompletion)",
  "direct-evaluate": "node-llama-cpp direct (sequence.evaluate)",
  engine: "LlamaCppEngine alone (in the agent process)",
  "agent-loopback": "Agent + engine, loopback WebSocket",
  orchard: "Orchard end to end (POST /generate)",
};

export interface LlamaRow {
  path: LlamaPath;
  tokensPerSecond: Spread;
  tokens: number[];
  /** Tokens/s ÷ the faster direct path's tokens/s in the same repetition, %. */
  percentOfDirect: Spread;
}

export interface LlamaResult {
  model: string;
  rows: LlamaRow[];
  gatewayCpuMsPerGeneration: Spread;
  checks: TargetCheck[];
  text: string;
}

export async function runLlama(
  bench: Bench,
  model: string,
  reps = Math.max(15, bench.reps),
): Promise<LlamaResult> {
  const agent = bench.llama;
  if (!agent) throw new Error("no llama.cpp agent");
  // What the local gateway (workerd + its wrangler host) burns per generation on the same cores.
  const gatewayCpu = () =>
    (cpuTimeMs(bench.orchard.userWorkerdPid) ?? 0) + (cpuTimeMs(bench.orchard.host.pid) ?? 0);
  const gatewayCpuPerGeneration: number[] = [];
  const once: Record<LlamaPath, () => Promise<{ tokens: number; ms: number }>> = {
    "direct-completion": () =>
      agent.proc.call({
        type: "llama-direct",
        prompt: LLAMA_PROMPT,
        maxTokens: LLAMA_MAX_TOKENS,
        mode: "completion",
      }),
    "direct-evaluate": () =>
      agent.proc.call({
        type: "llama-direct",
        prompt: LLAMA_PROMPT,
        maxTokens: LLAMA_MAX_TOKENS,
        mode: "evaluate",
      }),
    engine: () =>
      agent.proc.call({ type: "engine-once", model, prompt: LLAMA_PROMPT, maxTokens: LLAMA_MAX_TOKENS }),
    "agent-loopback": () =>
      agent.proc.call({ type: "loopback-once", model, prompt: LLAMA_PROMPT, maxTokens: LLAMA_MAX_TOKENS }),
    orchard: async () => {
      const cpu0 = gatewayCpu();
      const t0 = performance.now();
      const res = await fetch(`${bench.orchard.directOrigin}/generate`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${bench.userToken}` },
        body: JSON.stringify({ model, prompt: LLAMA_PROMPT, max_tokens: LLAMA_MAX_TOKENS, temperature: 0 }),
      });
      const body = (await res.json()) as { tokens_generated?: number };
      const ms = performance.now() - t0;
      if (!res.ok) throw new Error(`Orchard answered ${res.status}: ${JSON.stringify(body).slice(0, 200)}`);
      gatewayCpuPerGeneration.push(gatewayCpu() - cpu0);
      return { tokens: body.tokens_generated ?? 0, ms };
    },
  };
  const paths = Object.keys(once) as LlamaPath[];
  // One untimed pass each: model pages, contexts and JIT warm.
  for (const path of paths) await once[path]();
  const samples: Record<LlamaPath, { tokens: number; tps: number }[]> = {
    "direct-completion": [],
    "direct-evaluate": [],
    engine: [],
    "agent-loopback": [],
    orchard: [],
  };
  for (let rep = 0; rep < reps; rep++) {
    const order = paths.map((_, i) => paths[(i + rep) % paths.length] as LlamaPath);
    for (const path of order) {
      const r = await once[path]();
      samples[path].push({ tokens: r.tokens, tps: (r.tokens * 1000) / r.ms });
    }
  }
  // Paired per repetition: each path against the faster direct path of the same repetition.
  const direct = samples["direct-completion"].map((s, i) =>
    Math.max(s.tps, samples["direct-evaluate"][i]?.tps ?? 0),
  );
  const rows: LlamaRow[] = paths.map((path) => ({
    path,
    tokensPerSecond: spread(samples[path].map((s) => s.tps)),
    tokens: samples[path].map((s) => s.tokens),
    percentOfDirect: spread(samples[path].map((s, i) => (s.tps / (direct[i] as number)) * 100)),
  }));
  const byPath = (p: LlamaPath) => rows.find((r) => r.path === p) as LlamaRow;
  const checks: TargetCheck[] = [
    {
      target: "Agent (llama.cpp) ≥ 95% of node-llama-cpp direct tokens/s — through the Agent",
      measured: `${cell(byPath("agent-loopback").percentOfDirect, 1)} %`,
      pass: byPath("agent-loopback").percentOfDirect.median >= 95,
    },
    {
      target: "Agent (llama.cpp) ≥ 95% of node-llama-cpp direct tokens/s — through Orchard end to end",
      measured: `${cell(byPath("orchard").percentOfDirect, 1)} %`,
      pass: byPath("orchard").percentOfDirect.median >= 95,
    },
  ];
  const gatewayMs = spread(gatewayCpuPerGeneration.slice(-reps));
  const text = table(
    [
      `${model}, greedy, 1 thread, ${LLAMA_MAX_TOKENS} tokens, ${reps} reps`,
      "tokens/s",
      "% of direct (paired)",
      "tokens",
    ],
    rows.map((r) => [
      LABEL[r.path],
      cell(r.tokensPerSecond, 0),
      cell(r.percentOfDirect, 1),
      [...new Set(r.tokens)].join("/"),
    ]),
  );
  return {
    model,
    rows,
    gatewayCpuMsPerGeneration: gatewayMs,
    checks,
    text: `${text}\n\nthe local gateway (workerd + wrangler host) used ${cell(gatewayMs, 1)} ms of CPU per Orchard generation, on the same 2 cores as the model`,
  };
}
