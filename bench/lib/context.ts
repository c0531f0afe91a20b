// What every suite shares: the running targets and agents, the request shapes of each path, and a
// measuring helper that also charges CPU time to each process involved (workerd, its wrangler host,
// the agents, the load generator), which is what turns "slower" into "where".
import type { BenchAgentConfig } from "../agent.ts";
import { closedLoop, type LoopOptions, type LoopResult } from "./closed-loop.ts";
import { type HttpRequestSpec, LoadClient } from "./http-client.ts";
import { cpuTimeMs } from "./procs.ts";
import type { RunningAgent, RunningWorker } from "./stack.ts";

export type PathName = "relay" | "orchard";

export interface Bench {
  relay: RunningWorker;
  orchard: RunningWorker;
  /** The same gateway build with every request-path feature off (`--only everything`; see stack.ts ALL_OFF_VARS). */
  orchardOff?: RunningWorker;
  /** Synthetic agents; agents[0] alone serves MODEL_1, all of them serve MODEL_4 and MODEL_PACED. */
  agents: RunningAgent[];
  llama?: RunningAgent;
  userToken: string;
  reps: number;
  /** Whether rollouts run during the measurements (--rollouts on): agents also announce CANDIDATE_VERSION. */
  rollouts: boolean;
  /** Scales every measuring window (1 = default). */
  timeScale: number;
  log(line: string): void;
}

export const MODEL_1 = "synthetic-a1";
export const MODEL_4 = "synthetic-a4";
export const MODEL_PACED = "synthetic-paced";
export const PACED_TOKENS_PER_SECOND = 10;

/**
 * The second version synthetic agents announce beside MODEL_1 and MODEL_4 (as `name:2.0.0`) when
 * the run has rollouts: the hub registers it as an agent-local version, the canary and the A/B
 * test route to it (bench/lib/rollouts.ts). Same engine, same speed as the first.
 */
export const CANDIDATE_VERSION = "2.0.0";

export function syntheticEngine(first: boolean, candidates = false): BenchAgentConfig["engine"] {
  const withCandidate = (name: string) => [
    { name },
    ...(candidates ? [{ name: `${name}:${CANDIDATE_VERSION}` }] : []),
  ];
  return {
    kind: "synthetic",
    models: [
      ...(first ? withCandidate(MODEL_1) : []),
      ...withCandidate(MODEL_4),
      { name: MODEL_PACED, tokensPerSecond: PACED_TOKENS_PER_SECOND },
    ],
  };
}

/** The model names an engine serves, without the versioned ids (the relay and the registry route by name). */
export function modelNames(engine: BenchAgentConfig["engine"]): string[] {
  if (engine.kind === "ollama") return engine.models.map((m) => m.name);
  if (engine.kind !== "synthetic") return [engine.modelName];
  return engine.models.map((m) => m.name).filter((name) => !name.includes(":"));
}

/** Simulated end users the load generator cycles through (X-Orchard-User), so rollouts really split. */
export const END_USERS = 1000;

/**
 * `headers` once per simulated end user, each with its own X-Orchard-User: a rollout assigns arms by
 * a hash of the end user. Sent on both paths, so both carry the same bytes (the relay ignores it).
 */
function perEndUser(headers: Record<string, string>): Record<string, string>[] {
  return Array.from({ length: END_USERS }, (_, i) => ({ ...headers, "x-orchard-user": `bench-user-${i}` }));
}

/** The HTTP request each path is driven with. */
export function requestSpec(
  bench: Bench,
  path: PathName,
  model: string,
  maxTokens: number,
  stream: boolean,
): HttpRequestSpec {
  if (path === "relay") {
    const headers = { "content-type": "application/json" };
    return {
      method: "POST",
      path: "/",
      headers,
      perRequestHeaders: perEndUser(headers),
      body: JSON.stringify({ model, prompt: "bench", max_tokens: maxTokens }),
    };
  }
  const headers = { "content-type": "application/json", authorization: `Bearer ${bench.userToken}` };
  return {
    method: "POST",
    path: "/generate",
    headers,
    perRequestHeaders: perEndUser(headers),
    body: JSON.stringify({ model, prompt: "bench", max_tokens: maxTokens, stream }),
  };
}

export function origin(bench: Bench, path: PathName): string {
  return bench[path].directOrigin;
}

/** CPU milliseconds per completed request, per process involved. */
export interface CpuShare {
  workerd: number;
  wranglerHost: number;
  agents: number;
  loadGenerator: number;
}

export interface HttpRun extends LoopResult {
  cpuMsPerRequest: CpuShare;
  /** Load generator CPU use during the run, in % of one core. */
  loadGeneratorCpuPercent: number;
}

export async function measureHttp(
  bench: Bench,
  path: PathName,
  spec: HttpRequestSpec,
  loop: LoopOptions,
  agents: RunningAgent[],
): Promise<HttpRun> {
  const client = new LoadClient(origin(bench, path), loop.concurrency);
  const worker = bench[path];
  const pids = {
    workerd: [worker.userWorkerdPid],
    wranglerHost: [worker.host.pid],
    agents: agents.map((a) => a.proc.pid),
  };
  const cpu = (list: number[]) => list.reduce((sum, pid) => sum + (cpuTimeMs(pid) ?? 0), 0);
  const before = { workerd: cpu(pids.workerd), host: cpu(pids.wranglerHost), agents: cpu(pids.agents) };
  const self0 = process.cpuUsage();
  const t0 = performance.now();
  const result = await closedLoop(client.requestFn(spec), scaleLoop(bench, loop));
  const wall = performance.now() - t0;
  const self = process.cpuUsage(self0);
  await client.close();
  const n = Math.max(1, result.allCompleted);
  const selfMs = (self.user + self.system) / 1000;
  return {
    ...result,
    cpuMsPerRequest: {
      workerd: (cpu(pids.workerd) - before.workerd) / n,
      wranglerHost: (cpu(pids.wranglerHost) - before.host) / n,
      agents: (cpu(pids.agents) - before.agents) / n,
      loadGenerator: selfMs / n,
    },
    loadGeneratorCpuPercent: (selfMs / wall) * 100,
  };
}

export function scaleLoop(bench: Bench, loop: LoopOptions): LoopOptions {
  return {
    ...loop,
    warmupMs: Math.round(loop.warmupMs * bench.timeScale),
    durationMs: Math.round(loop.durationMs * bench.timeScale),
  };
}

/** An in-process baseline run inside an agent process (see bench/agent.ts). */
export async function measureInAgent(
  bench: Bench,
  agent: RunningAgent,
  type: "engine-run" | "loopback-run",
  model: string,
  maxTokens: number,
  loop: LoopOptions,
): Promise<LoopResult & { framesPerRequest?: Record<string, number> }> {
  const reply = await agent.proc.call<{ result: LoopResult; framesPerRequest?: Record<string, number> }>({
    type,
    model,
    maxTokens,
    loop: scaleLoop(bench, loop),
  });
  return { ...reply.result, ...(reply.framesPerRequest ? { framesPerRequest: reply.framesPerRequest } : {}) };
}

/** ABBA…: alternate which path goes first, so drift on a noisy machine does not favour either. */
export function interleaved<T>(items: readonly T[], rep: number): T[] {
  return rep % 2 === 0 ? [...items] : [...items].reverse();
}
