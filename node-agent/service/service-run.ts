// `start` as a service runs it: --log-file (the agent's JSON lines to a size-rotated file instead of
// stderr) and --state-file (what `status` reads). `install` passes both (launchd) or the state file
// alone (systemd, whose journal keeps the logs). Without them `start` logs to stderr as always.
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { ConfigError } from "../config.ts";
import { createLogger, type Logger, type LogLevel } from "../log.ts";
import { RotatingLogFile } from "./rotating-log.ts";
import { type AgentSample, AgentStateWriter, passes } from "./state-file.ts";

export interface ServiceRunFlags {
  logFile?: string;
  stateFile?: string;
}

const FLAGS = { "--log-file": "logFile", "--state-file": "stateFile" } as const;

/** Takes the service flags out of start's arguments; the rest are the agent's settings. */
export function takeServiceRunFlags(args: readonly string[]): { flags: ServiceRunFlags; rest: string[] } {
  const flags: ServiceRunFlags = {};
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? "";
    const [name, inline] =
      arg.startsWith("--") && arg.includes("=")
        ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)]
        : [arg, undefined];
    const field = FLAGS[name as keyof typeof FLAGS];
    if (!field) {
      rest.push(arg);
      continue;
    }
    const value = inline ?? args[++i];
    if (value === undefined || value === "") throw new ConfigError(name, "needs a file");
    flags[field] = resolve(value);
  }
  return { flags, rest };
}

/** What the state file samples from the running agent (Agent and Engine satisfy these). */
export interface SampledAgent {
  readonly inFlight: number;
  readonly draining: boolean;
  readonly stats: { generationsFinished: number };
}
export interface SampledEngine {
  listModels(): Promise<Array<{ name: string; engine: string; loaded: boolean }>>;
}

export interface ServiceRun {
  log: Logger;
  /** Starts the state file's periodic writes, sampling this agent. */
  attach(agent: SampledAgent, engine: SampledEngine): void;
  /** The state file's last write, then the log file is closed. */
  finish(exit: { exitCode: number; reason: string }): Promise<void>;
}

export function openServiceRun(
  flags: ServiceRunFlags,
  config: { logLevel: LogLevel; agentId: string; gatewayUrl: string },
): ServiceRun {
  if (!flags.logFile && !flags.stateFile) {
    return { log: createLogger({ level: config.logLevel }), attach() {}, async finish() {} };
  }
  const file = flags.logFile ? new RotatingLogFile(flags.logFile) : undefined;
  const sink = file
    ? (line: string) => file.writeLine(line)
    : (line: string) => process.stderr.write(`${line}\n`);
  let sampled: { agent: SampledAgent; engine: SampledEngine } | undefined;
  const state = flags.stateFile ? stateWriter(flags.stateFile, config, () => sampled) : undefined;
  // The state file needs the info lines (connected, disconnected) even when fewer are logged.
  const level = config.logLevel === "debug" ? "debug" : "info";
  const write = (line: string) => {
    // The logger's lines are JSON by construction (log.ts); parsed once for both uses.
    const record = JSON.parse(line) as Record<string, unknown>;
    state?.observe(record);
    if (passes(record.level, config.logLevel)) sink(line);
  };
  return {
    log: createLogger({ level, write }),
    attach(agent, engine) {
      sampled = { agent, engine };
      state?.start();
    },
    async finish({ exitCode, reason }) {
      await state?.stop({ code: exitCode, reason });
      file?.close();
    },
  };
}

function stateWriter(
  path: string,
  config: { agentId: string; gatewayUrl: string },
  sampled: () => { agent: SampledAgent; engine: SampledEngine } | undefined,
): AgentStateWriter {
  mkdirSync(dirname(path), { recursive: true });
  return new AgentStateWriter({
    path,
    agentId: config.agentId,
    gateway: config.gatewayUrl,
    sample: async (): Promise<AgentSample> => {
      const now = sampled();
      if (!now) return { inFlight: 0, draining: false, generationsFinished: 0, models: [] };
      const models = await now.engine.listModels();
      return {
        inFlight: now.agent.inFlight,
        draining: now.agent.draining,
        generationsFinished: now.agent.stats.generationsFinished,
        models: models.map(({ name, engine, loaded }) => ({ name, engine, loaded })),
      };
    },
  });
}
