// What an installed agent runs and how it is kept running, independent of the service manager:
// launchd.ts and systemd.ts render it as a plist or a unit, both pure functions of this value.
import { dirname } from "node:path";
import type { ServicePaths } from "./paths.ts";

/** Seconds between restarts after a failing exit (launchd's ThrottleInterval, systemd's RestartSec). */
export const RESTART_DELAY_SECONDS = 10;
/** After SIGTERM, how long the manager waits beyond the agent's drain timeout before SIGKILL. */
export const STOP_MARGIN_SECONDS = 10;

export interface ServiceDefinition {
  /** The executable (node) and everything after it, up to and including the agent's flags. */
  program: string;
  args: string[];
  /** Relative paths among the flags mean what they meant where `install` ran. */
  workingDirectory: string;
  paths: ServicePaths;
  restartDelaySeconds: number;
  stopTimeoutSeconds: number;
}

export interface AgentLaunch {
  /** node, and any flags of its own (tsx's loader when the agent runs from a checkout). */
  node: string;
  nodeArgs: string[];
  /** The agent's entry: dist/main.js of the package, or node-agent/main.ts of a checkout. */
  entry: string;
}

/**
 * The agent started as `start` with `agentArgs` (which must name the token file, never the token),
 * plus the service flags: the state file always, the log file where the manager keeps no logs.
 */
export function serviceDefinition(
  launch: AgentLaunch,
  agentArgs: readonly string[],
  paths: ServicePaths,
  options: { workingDirectory: string; drainTimeoutMs: number },
): ServiceDefinition {
  const serviceFlags = ["--state-file", paths.stateFile];
  if (paths.logFile) serviceFlags.push("--log-file", paths.logFile);
  return {
    program: launch.node,
    args: [...launch.nodeArgs, launch.entry, "start", ...agentArgs, ...serviceFlags],
    workingDirectory: options.workingDirectory,
    paths,
    restartDelaySeconds: RESTART_DELAY_SECONDS,
    stopTimeoutSeconds: Math.ceil(options.drainTimeoutMs / 1000) + STOP_MARGIN_SECONDS,
  };
}

/** The folders `install` creates before writing; the token's is made 0700 by writeTokenFile. */
export function foldersOf(paths: ServicePaths): string[] {
  const files = [paths.serviceFile, paths.stateFile, paths.logFile, paths.stderrFile];
  return [...new Set(files.filter((f): f is string => f !== undefined).map((f) => dirname(f)))];
}
