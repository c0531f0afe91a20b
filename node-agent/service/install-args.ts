// What `install` writes into the service: the agent's settings as given to install (flags, and
// ORCHARD_* variables turned into flags, since a service does not see the shell's environment),
// validated as `start` would, with the token replaced by the file that holds it.
import { createRequire } from "node:module";
import { homedir } from "node:os";
import { resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { type AgentConfig, ConfigError, loadConfig, readRawSettings, SETTINGS } from "../config.ts";
import type { AgentLaunch } from "./definition.ts";
import { readTokenFile } from "./token-file.ts";

/** Settings install handles itself rather than copying. */
const NOT_COPIED = new Set<string>(["token", "token-file", "fault"]);

export interface InstallSettings {
  config: AgentConfig;
  /** start's flags, `--name=value` each (a value may begin with a dash), ending in --token-file. */
  agentArgs: string[];
  /** The file the service reads the token from. */
  tokenFile: string;
  /** The token to write there; absent when the token already came from that file. */
  token?: string;
}

/**
 * Validates like `start` (a ConfigError names the setting), refuses injected faults, and keeps
 * the token out of the arguments: a token given as such is written to `defaultTokenFile`, a
 * --token-file the token came from is used as it is.
 */
export function installSettings(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  defaultTokenFile: string,
  cwd: string,
): InstallSettings {
  const config = loadConfig(argv, env);
  const raw = readRawSettings(argv, env);
  if (config.faults) {
    throw new ConfigError(raw.fault.label, "injects faults, for tests only; a service must not");
  }
  const given = raw["token-file"].values.at(-1);
  const givenFile = given === undefined ? undefined : resolve(cwd, given.replace(/^~(?=$|\/)/, homedir()));
  const fromFile = givenFile !== undefined && readsToken(givenFile, config.token);
  const tokenFile = fromFile ? givenFile : defaultTokenFile;

  const agentArgs: string[] = [];
  for (const name of Object.keys(SETTINGS) as (keyof typeof SETTINGS)[]) {
    if (NOT_COPIED.has(name)) continue;
    for (const value of raw[name].values) agentArgs.push(`--${name}=${value}`);
  }
  agentArgs.push(`--token-file=${tokenFile}`);
  return { config, agentArgs, tokenFile, ...(fromFile ? {} : { token: config.token }) };
}

function readsToken(path: string, token: string): boolean {
  try {
    return readTokenFile(path) === token;
  } catch {
    return false;
  }
}

/**
 * How to run this agent again: the package's bundled entry with node alone, or a checkout's
 * node-agent/main.ts with tsx's loader (by absolute URL, so the service's folder does not matter).
 */
export function agentLaunch(mainUrl: string, node: string): AgentLaunch {
  const entry = fileURLToPath(mainUrl);
  if (!entry.endsWith(".ts")) return { node, nodeArgs: [], entry };
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
  return { node, nodeArgs: ["--import", tsx], entry };
}
