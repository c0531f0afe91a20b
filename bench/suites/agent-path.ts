// The agent path (issue 15, item 4): llama.cpp through the Agent against node-llama-cpp direct,
// measured so 5 % can be resolved. An agent process of its own (the demo model, one thread, a
// loopback hub, trace hooks on: bench/lib/agent-trace.ts), pinned to one CPU with `taskset` when
// the machine has it, then pairs of generations in ABBA order (direct, agent | agent, direct).
// Three readings:
//   ratio     agent tokens/s ÷ direct tokens/s, paired per pair: geometric mean, 95 % bootstrap CI
//   inside    the Agent's own time read directly inside the agent: the frame's parse and dispatch
//             (generate received → engine called), the time the Agent holds each piece before it
//             asks for the next (coalescer, chunk frame, ws send), and the end (engine ended → done
//             sent), as % of the agent's wall. An upper bound: an engine that computes ahead of
//             its consumer overlaps some of it.
//   engine    tokens ÷ the engine's span inside the Agent (called → ended), against direct
import { spawnSync } from "node:child_process";
import { cpus } from "node:os";
import { resolve } from "node:path";
import { DEMO_MODEL_NAME, ensureDemoModel } from "../../node-agent/demo-model.ts";
import { REPO_ROOT } from "../../scripts/lib/local-gateway.ts";
import type { AgentTraceDump } from "../lib/agent-trace.ts";
import type { Bench } from "../lib/context.ts";
import { startAgent } from "../lib/stack.ts";
import { num, table } from "../lib/table.ts";
import { LLAMA_MAX_TOKENS, LLAMA_PROMPT } from "./llama.ts";

export interface Interval {
  mean: number;
  low: number;
  high: number;
}

/** Mean and 95 % percentile-bootstrap interval of the mean (deterministic resampling). */
export function bootstrapMean(values: number[], resamples = 4000): Interval {
  const n = values.length;
  const mean = values.reduce((a, b) => a + b, 0) / Math.max(1, n);
  let seed = 0x9e3779b9;
  const rand = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 2 ** 32;
  };
  const means: number[] = [];
  for (let r = 0; r < resamples; r++) {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += values[Math.floor(rand() * n)] as number;
    means.push(sum / Math.max(1, n));
  }
  means.sort((a, b) => a - b);
  return {
    mean,
    low: means[Math.floor(resamples * 0.025)] as number,
    high: means[Math.ceil(resamples * 0.975) - 1] as number,
  };
}

export interface AgentPathResult {
  pairs: number;
  pinned: string;
  /** Agent ÷ direct tokens/s, %. */
  ratio: Interval;
  /** LlamaCppEngine alone ÷ direct, and Agent ÷ engine alone, tokens/s, %. */
  engineAlone: Interval;
  agentOverEngine: Interval;
  /** The Agent's own time, % of its wall (read inside the agent). */
  agentOwnPercent: Interval;
  /** Tokens/s inside the engine's iterator ÷ direct, %. */
  engineRatio: Interval;
  samples: {
    engineAloneTps: number;
    directTps: number;
    agentTps: number;
    agentOwnMs: number;
    outsideMs: number;
    engineMs: number;
    wallMs: number;
  }[];
  text: string;
}

/** Pins every thread of `pid` to the last CPU; says what it did. */
function pin(pid: number): string {
  const probe = spawnSync("taskset", ["--help"], { encoding: "utf8" });
  if (probe.error) return "not pinned (no taskset)";
  const cpu = cpus().length - 1;
  const r = spawnSync("taskset", ["-a", "-p", "-c", String(cpu), String(pid)], { encoding: "utf8" });
  return r.status === 0
    ? `pinned to CPU ${cpu} (taskset -a -p -c ${cpu})`
    : `not pinned (${r.stderr.trim()})`;
}

export async function runAgentPath(bench: Bench, secret: string): Promise<AgentPathResult> {
  const pairs = Math.max(6, bench.reps * 8);
  const modelPath = await ensureDemoModel(resolve(REPO_ROOT, ".cache/orchard-test"));
  const agent = await startAgent(
    "bench-agent-path",
    secret,
    { kind: "llamacpp", modelName: DEMO_MODEL_NAME, modelPath, threads: 1 },
    { models: [DEMO_MODEL_NAME] },
    { loopback: true, capacity: 1, trace: true },
  );
  const samples: AgentPathResult["samples"] = [];
  let pinned = "";
  try {
    pinned = pin(agent.proc.pid);
    const direct = () =>
      agent.proc.call<{ tokens: number; ms: number }>({
        type: "llama-direct",
        prompt: LLAMA_PROMPT,
        maxTokens: LLAMA_MAX_TOKENS,
        mode: "completion",
      });
    const viaAgent = async () => {
      const r = await agent.proc.call<{ tokens: number; ms: number }>({
        type: "loopback-once",
        model: DEMO_MODEL_NAME,
        prompt: LLAMA_PROMPT,
        maxTokens: LLAMA_MAX_TOKENS,
      });
      const dump = await agent.proc.call<AgentTraceDump>({ type: "trace-dump" });
      const rec = dump.records.find((x) => x.got !== undefined && x.doneSent !== undefined);
      if (!rec) throw new Error("agent-path: no trace record for the generation (trace hooks off?)");
      const at = (x: number | undefined) => x ?? Number.NaN;
      const own =
        at(rec.engineCalled) - at(rec.got) + at(rec.consumerMs) + (at(rec.doneSent) - at(rec.engineEnd));
      const outside = at(rec.engineCalled) - at(rec.got) + (at(rec.doneSent) - at(rec.engineEnd));
      return { ...r, engineMs: at(rec.engineEnd) - at(rec.engineCalled), ownMs: own, outsideMs: outside };
    };
    // The Agent's own engine called alone (LlamaCppEngine.generate in the same process).
    const engineAlone = () =>
      agent.proc.call<{ tokens: number; ms: number }>({
        type: "engine-once",
        model: DEMO_MODEL_NAME,
        prompt: LLAMA_PROMPT,
        maxTokens: LLAMA_MAX_TOKENS,
      });
    await direct();
    await viaAgent();
    await engineAlone();
    for (let i = 0; i < pairs; i++) {
      let d: { tokens: number; ms: number } | undefined;
      let a: Awaited<ReturnType<typeof viaAgent>> | undefined;
      // ABBA over the pair, the engine-alone run before or after it in turn.
      let e = i % 4 < 2 ? await engineAlone() : undefined;
      if (i % 2 === 0) {
        d = await direct();
        a = await viaAgent();
      } else {
        a = await viaAgent();
        d = await direct();
      }
      e ??= await engineAlone();
      samples.push({
        engineAloneTps: (e.tokens * 1000) / e.ms,
        directTps: (d.tokens * 1000) / d.ms,
        agentTps: (a.tokens * 1000) / a.ms,
        agentOwnMs: a.ownMs,
        outsideMs: a.outsideMs,
        engineMs: a.engineMs,
        wallMs: a.ms,
      });
      if (i % 4 === 3) bench.log(`  agent path: ${i + 1}/${pairs} pairs`);
    }
  } finally {
    await agent.stop();
  }
  const pct = (v: number[]) => bootstrapMean(v.map((x) => Math.log(x))); // geometric means
  const exp = (iv: Interval): Interval => ({
    mean: Math.exp(iv.mean) * 100,
    low: Math.exp(iv.low) * 100,
    high: Math.exp(iv.high) * 100,
  });
  const ratio = exp(pct(samples.map((s) => s.agentTps / s.directTps)));
  const engineRatio = exp(pct(samples.map((s) => (s.agentTps * s.wallMs) / s.engineMs / s.directTps)));
  const engineAlone = exp(pct(samples.map((s) => s.engineAloneTps / s.directTps)));
  const agentOverEngine = exp(pct(samples.map((s) => s.agentTps / s.engineAloneTps)));
  const agentOwnPercent = bootstrapMean(samples.map((s) => (s.agentOwnMs / s.wallMs) * 100));
  const iv = (x: Interval, d = 1) => `${num(x.mean, d)} [${num(x.low, d)}–${num(x.high, d)}]`;
  const text = [
    table(
      [
        `${DEMO_MODEL_NAME}, greedy, 1 thread, ${LLAMA_MAX_TOKENS} tokens, ${pairs} ABBA pairs, ${pinned}`,
        "mean [95% CI]",
      ],
      [
        ["Agent ÷ direct tokens/s, % (paired, geometric mean, bootstrap)", iv(ratio)],
        ["LlamaCppEngine alone ÷ direct tokens/s, %", iv(engineAlone)],
        ["Agent ÷ LlamaCppEngine alone tokens/s, % (the Agent's own cost)", iv(agentOverEngine)],
        ["the engine inside the Agent (tokens ÷ its span) ÷ direct tokens/s, %", iv(engineRatio)],
        ["the Agent's own time, % of its wall (dispatch + per-piece hold + end)", iv(agentOwnPercent, 2)],
        [
          "the Agent's time outside the engine's span (dispatch + end), % of its wall",
          iv(bootstrapMean(samples.map((s) => (s.outsideMs / s.wallMs) * 100)), 2),
        ],
        [
          "the Agent's own time per generation, ms (median)",
          num(
            [...samples.map((s) => s.agentOwnMs)].sort((a, b) => a - b)[samples.length >> 1] ?? Number.NaN,
            1,
          ),
        ],
      ],
    ),
    "",
    "the CI on the ratio resolves 5 % when its width is under 5 points; the in-process rows need no ratio of two noisy rates: time outside the engine's span is a floor of the Agent's cost, the per-piece hold an upper bound (an engine that computes ahead overlaps it)",
  ].join("\n");
  return { pairs, pinned, ratio, engineAlone, agentOverEngine, agentOwnPercent, engineRatio, samples, text };
}
