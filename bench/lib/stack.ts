// Starts what the bench measures: the bare relay Worker and Orchard's gateway Worker (each in its
// own host process), and benchmark agents (real processes) connected to both at once.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { REPO_ROOT } from "../../scripts/lib/local-gateway.ts";
import { mintToken } from "../../scripts/lib/token.ts";
import type { BenchAgentConfig, EngineConfig } from "../agent.ts";
import { type BenchChild, spawnTs } from "./children.ts";
import { type PreparedVariant, prepareVariant } from "./variants.ts";
import type { WorkerEndpoints, WorkerHostConfig } from "./worker-host.ts";

export interface RunningWorker extends WorkerEndpoints {
  host: BenchChild;
  stateDir: string;
  stop(): Promise<void>;
}

export async function startWorker(
  name: string,
  config: Omit<WorkerHostConfig, "persistDir">,
): Promise<RunningWorker> {
  const stateDir = mkdtempSync(join(tmpdir(), `orchard-bench-${name}-`));
  const host = spawnTs(name, resolve(REPO_ROOT, "bench/lib/worker-host.ts"), [
    JSON.stringify({ ...config, persistDir: stateDir } satisfies WorkerHostConfig),
  ]);
  const ready = await host.waitFor<WorkerEndpoints>("ready", 180_000);
  return {
    ...ready,
    host,
    stateDir,
    async stop() {
      await host.stop();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** The queue out of the way (the relay path is measured, not queueing). */
const QUEUE_VARS = { QUEUE_MAX: "100000", QUEUE_TIMEOUT_MS: "120000" };

/**
 * Every request-path feature configuration can switch on, as the bench's Orchard runs: rate limits
 * on (their cost is measured) but out of reach, since every bench request is one subject; prompt
 * injection detection in "flag" mode; output sanitization with credential redaction.
 */
export const ALL_ON_VARS: Record<string, string> = {
  ...QUEUE_VARS,
  RATE_LIMITS: JSON.stringify({
    user: { rpm: 1_000_000_000, tpm: 1_000_000_000_000, concurrency: 1_000_000 },
    admin: { rpm: 1_000_000_000, tpm: 1_000_000_000_000, concurrency: 1_000_000 },
  }),
  INJECTION_POLICY: "flag",
  OUTPUT_REDACTION: "on",
};

/**
 * The same features switched off (the everything suite's "all off" gateway): no rate limiter, no
 * injection scoring, no credential redaction (control characters are stripped either way, and the
 * hub's metrics are recorded either way: no setting turns them off).
 */
export const ALL_OFF_VARS: Record<string, string> = {
  ...QUEUE_VARS,
  RATE_LIMITS: "off",
  INJECTION_POLICY: "off",
  OUTPUT_REDACTION: "off",
};

/**
 * Orchard's gateway with its queue and agent limits out of the way (the relay path is measured).
 * Without an explicit config it runs a snapshot of gateway/ and schema/ taken now: wrangler's
 * bundler watches its sources even with dev.watch off, so an edit to the tree during a run would
 * otherwise reload the Worker under load (measured: connections reset, then refused).
 */
export async function startOrchard(
  secret: string,
  extra: Partial<WorkerHostConfig> = {},
  name = "orchard",
): Promise<RunningWorker> {
  const snapshot =
    extra.config === undefined
      ? (prepareVariant({ name: "snapshot", change: "this checkout", patches: [] }) as PreparedVariant)
      : undefined;
  try {
    const worker = await startWorker(name, {
      config: snapshot?.configPath ?? "wrangler.toml",
      migrate: true,
      secrets: { JWT_SECRET: secret },
      vars: ALL_ON_VARS,
      ...extra,
    });
    return {
      ...worker,
      async stop() {
        await worker.stop();
        snapshot?.dispose();
      },
    };
  } catch (err) {
    snapshot?.dispose();
    throw err;
  }
}

export function startRelay(extra: Partial<WorkerHostConfig> = {}): Promise<RunningWorker> {
  return startWorker("relay", { config: "bench/relay/wrangler.toml", ...extra });
}

export interface RunningAgent {
  id: string;
  proc: BenchChild;
  stop(): Promise<void>;
}

export interface AgentTargets {
  orchard?: RunningWorker;
  relay?: RunningWorker;
  /**
   * More Orchard-protocol gateways (prototype variants, a git ref), each with its own Agent
   * instance; `protocol` pins the agent's hello to an older gateway's version.
   */
  more?: { label: string; worker: RunningWorker; protocol?: number }[];
  /** Model names this agent serves (the relay routes on them too). */
  models: string[];
}

export async function startAgent(
  id: string,
  secret: string,
  engine: EngineConfig,
  targets: AgentTargets,
  options: { capacity?: number; loopback?: boolean; flushMs?: number; trace?: boolean } = {},
): Promise<RunningAgent> {
  const gateways: BenchAgentConfig["gateways"] = [];
  if (targets.relay) {
    gateways.push({
      label: "relay",
      url: `${targets.relay.directOrigin.replace(/^http/, "ws")}/connect?models=${targets.models.join(",")}`,
      token: "unused",
    });
  }
  if (targets.orchard) {
    gateways.push({
      label: "orchard",
      url: `${targets.orchard.directOrigin.replace(/^http/, "ws")}/agents/connect`,
      token: await mintToken({ secret, role: "agent", sub: id, ttlSeconds: 24 * 3600 }),
    });
  }
  for (const extra of targets.more ?? []) {
    gateways.push({
      label: extra.label,
      url: `${extra.worker.directOrigin.replace(/^http/, "ws")}/agents/connect`,
      token: await mintToken({ secret, role: "agent", sub: id, ttlSeconds: 24 * 3600 }),
      ...(extra.protocol === undefined ? {} : { maxProtocol: extra.protocol }),
    });
  }
  const config: BenchAgentConfig = {
    id,
    engine,
    gateways,
    capacity: options.capacity ?? 1024,
    loopback: options.loopback ?? false,
    ...(options.flushMs === undefined ? {} : { flushMs: options.flushMs }),
    ...(options.trace ? { trace: true } : {}),
  };
  const proc = spawnTs(`agent ${id}`, resolve(REPO_ROOT, "bench/agent.ts"), [JSON.stringify(config)]);
  await proc.waitFor("ready", 120_000);
  return { id, proc, stop: () => proc.stop() };
}

export function newSecret(): string {
  return randomBytes(32).toString("hex");
}
