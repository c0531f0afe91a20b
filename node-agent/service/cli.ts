// `orchard-agent install | uninstall | status`: the agent as a launchd user agent (macOS) or a
// systemd user unit (Linux). The files are pure functions of the configuration (launchd.ts,
// systemd.ts); this is the shell that writes them and runs the service manager, through a host
// that tests replace.
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { homedir, userInfo } from "node:os";
import { ConfigError } from "../config.ts";
import { ExitCode } from "../connection.ts";
import { errorMessage } from "../log.ts";
import { foldersOf, type ServiceDefinition, serviceDefinition } from "./definition.ts";
import { agentLaunch, installSettings } from "./install-args.ts";
import { launchdLoad, launchdPlist, launchdState, launchdUnload } from "./launchd.ts";
import { type ServicePaths, servicePaths, UnsupportedPlatformError } from "./paths.ts";
import { LOG_KEEP, LOG_MAX_BYTES } from "./rotating-log.ts";
import { type Run, runCommand } from "./run.ts";
import { type AgentState, readStateFile } from "./state-file.ts";
import {
  systemdDisable,
  systemdEnable,
  systemdLingers,
  systemdReload,
  systemdState,
  systemdUnit,
  systemdUserManager,
} from "./systemd.ts";
import { writeTokenFile } from "./token-file.ts";

export interface ServiceHost {
  platform: NodeJS.Platform;
  home: string;
  uid: number;
  user: string;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** node, as the service will start it. */
  execPath: string;
  /** import.meta.url of the agent's entry (main.ts, or the package's dist/main.js). */
  mainUrl: string;
  run: Run;
  print(line: string): void;
  now(): Date;
}

export function processHost(mainUrl: string): ServiceHost {
  return {
    platform: process.platform,
    home: homedir(),
    uid: process.getuid?.() ?? 0,
    user: userInfo().username,
    env: process.env,
    cwd: process.cwd(),
    execPath: process.execPath,
    mainUrl,
    run: runCommand,
    print: (line) => process.stdout.write(`${line}\n`),
    now: () => new Date(),
  };
}

function prefix(command: string): string {
  return `orchard-agent ${command}`;
}

/** Splits install's own flags from the agent's. */
function installFlags(args: readonly string[]): { dryRun: boolean; node?: string; rest: string[] } {
  const rest: string[] = [];
  let dryRun = false;
  let node: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? "";
    if (arg === "--dry-run") dryRun = true;
    else if (arg === "--node") node = args[++i];
    else if (arg.startsWith("--node=")) node = arg.slice("--node=".length);
    else rest.push(arg);
  }
  if (node === "") throw new ConfigError("--node", "needs the path of a node executable");
  return { dryRun, ...(node === undefined ? {} : { node }), rest };
}

function pathsOf(host: ServiceHost): ServicePaths {
  return servicePaths({ platform: host.platform, home: host.home, env: host.env });
}

/** The service definition and its rendered file for this host's manager. */
export function renderService(
  host: ServiceHost,
  agentArgs: readonly string[],
  drainTimeoutMs: number,
  node = host.execPath,
): { definition: ServiceDefinition; text: string } {
  const paths = pathsOf(host);
  const definition = serviceDefinition(agentLaunch(host.mainUrl, node), agentArgs, paths, {
    workingDirectory: host.cwd,
    drainTimeoutMs,
  });
  const text = paths.manager === "launchd" ? launchdPlist(definition) : systemdUnit(definition);
  return { definition, text };
}

export async function installCommand(args: readonly string[], host: ServiceHost): Promise<number> {
  const say = (line: string) => host.print(`${prefix("install")}: ${line}`);
  let paths: ServicePaths;
  let flags: ReturnType<typeof installFlags>;
  let settings: ReturnType<typeof installSettings>;
  try {
    paths = pathsOf(host);
    flags = installFlags(args);
    settings = installSettings(flags.rest, host.env, paths.tokenFile, host.cwd);
  } catch (err) {
    if (err instanceof ConfigError) {
      say(`invalid configuration: ${err.message}`);
      return ExitCode.CONFIG;
    }
    if (err instanceof UnsupportedPlatformError) {
      say(err.message);
      return ExitCode.FAILURE;
    }
    throw err;
  }
  const { text } = renderService(host, settings.agentArgs, settings.config.drainTimeoutMs, flags.node);
  if (flags.dryRun) {
    host.print(`# ${paths.serviceFile}`);
    host.print(text.trimEnd());
    host.print(
      `# token: ${settings.token ? `written to ${paths.tokenFile} (mode 0600)` : `read from ${settings.tokenFile}`}`,
    );
    return ExitCode.OK;
  }

  const ran: string[] = [];
  const run: Run = (command, commandArgs) => {
    ran.push([command, ...commandArgs].join(" "));
    return host.run(command, commandArgs);
  };
  // Check the manager first: without one, nothing is written and nothing is left half done.
  if (paths.manager === "systemd") {
    const manager = await systemdUserManager(run);
    if (!manager.available) {
      say(
        `${manager.reason}; nothing was written. Run the agent with \`orchard-agent start\` instead, or log in with a user session.`,
      );
      return ExitCode.FAILURE;
    }
  }
  try {
    for (const folder of foldersOf(paths)) mkdirSync(folder, { recursive: true });
    if (settings.token) writeTokenFile(paths.tokenFile, settings.token);
    writeFileSync(paths.serviceFile, text, { mode: 0o644 });
    if (paths.manager === "launchd") await launchdLoad(run, host.uid, paths.serviceFile);
    else await systemdEnable(run);
  } catch (err) {
    say(`failed: ${errorMessage(err)}`);
    return ExitCode.FAILURE;
  }
  say(`wrote ${paths.serviceFile}`);
  say(`token: ${settings.tokenFile} (readable only by ${host.user})`);
  say(`logs: ${logsOf(paths)}`);
  for (const command of ran) say(`ran: ${command}`);
  if (paths.manager === "systemd" && (await systemdLingers(host.run, host.user)) === false) {
    say(
      `note: without lingering the agent runs only while ${host.user} is logged in: loginctl enable-linger ${host.user}`,
    );
  }
  say("check it with: orchard-agent status");
  return ExitCode.OK;
}

export async function uninstallCommand(_args: readonly string[], host: ServiceHost): Promise<number> {
  const say = (line: string) => host.print(`${prefix("uninstall")}: ${line}`);
  let paths: ServicePaths;
  try {
    paths = pathsOf(host);
  } catch (err) {
    if (!(err instanceof UnsupportedPlatformError)) throw err;
    say(err.message);
    return ExitCode.FAILURE;
  }
  const installed = existsSync(paths.serviceFile);
  try {
    if (paths.manager === "launchd") {
      if (await launchdUnload(host.run, host.uid)) say(`stopped and unloaded ${serviceName(paths, host)}`);
      removeFiles(paths);
    } else {
      const manager = await systemdUserManager(host.run);
      if (!manager.available) say(`${manager.reason}: removing the files only`);
      else if (installed && (await systemdDisable(host.run)))
        say(`stopped and disabled ${serviceName(paths, host)}`);
      removeFiles(paths);
      if (manager.available && installed) await systemdReload(host.run);
    }
  } catch (err) {
    say(`failed: ${errorMessage(err)}`);
    return ExitCode.FAILURE;
  }
  say(
    installed
      ? `removed ${paths.serviceFile} and the token file; logs stay in ${logsOf(paths)}`
      : "it was not installed",
  );
  return ExitCode.OK;
}

/** The service file, the token file install wrote and the state file; the logs stay. */
function removeFiles(paths: ServicePaths): void {
  for (const file of [paths.serviceFile, paths.tokenFile, paths.stateFile]) rmSync(file, { force: true });
}

export async function statusCommand(_args: readonly string[], host: ServiceHost): Promise<number> {
  let paths: ServicePaths;
  try {
    paths = pathsOf(host);
  } catch (err) {
    if (!(err instanceof UnsupportedPlatformError)) throw err;
    host.print(`${prefix("status")}: ${err.message}`);
    return ExitCode.FAILURE;
  }
  const installed = existsSync(paths.serviceFile);
  host.print(`service: ${serviceName(paths, host)}: ${installed ? paths.serviceFile : "not installed"}`);
  const running = await printRunning(paths, host);
  const read = readStateFile(paths.stateFile);
  if (read.ok) for (const line of describeState(read.state, host.now())) host.print(line);
  else host.print(`agent: ${read.reason}`);
  host.print(`logs: ${logsOf(paths)}`);
  return running ? ExitCode.OK : ExitCode.FAILURE;
}

async function printRunning(paths: ServicePaths, host: ServiceHost): Promise<boolean> {
  if (paths.manager === "launchd") {
    const state = await launchdState(host.run, host.uid);
    if (!state.loaded) {
      host.print("running: no (not loaded in launchd)");
      return false;
    }
    const running = state.state === "running" && state.pid !== undefined;
    const exit = state.lastExit === undefined ? "" : `, last exit ${describeExit(state.lastExit)}`;
    const runs = state.runs === undefined ? "" : `, ${state.runs} run(s)`;
    host.print(
      `running: ${running ? `yes, pid ${state.pid}` : `no (launchd: ${state.state ?? "unknown"})`}${exit}${runs}`,
    );
    return running;
  }
  const manager = await systemdUserManager(host.run);
  if (!manager.available) {
    host.print(`running: unknown (${manager.reason})`);
    return false;
  }
  const state = await systemdState(host.run);
  const running = state.ActiveState === "active" && state.SubState === "running";
  const exit = state.ExecMainStatus ? `, last exit ${describeExit(state.ExecMainStatus)}` : "";
  const restarts = state.NRestarts ? `, ${state.NRestarts} restart(s)` : "";
  host.print(
    `running: ${running ? `yes, pid ${state.MainPID}` : `no (systemd: ${state.ActiveState ?? "unknown"}/${state.SubState ?? "unknown"})`}${exit}${restarts}`,
  );
  return running;
}

const EXIT_MEANING: Record<string, string> = {
  "0": "ok or drained",
  "1": "failure",
  "2": "bad configuration",
  "3": "token refused",
  "4": "refused for good",
};

function describeExit(code: string): string {
  const meaning = EXIT_MEANING[code];
  return meaning ? `${code} (${meaning})` : code;
}

/** The state file in words: the connection, work in flight, models, and how fresh it is. */
export function describeState(state: AgentState, now: Date): string[] {
  const age = Math.max(0, Math.round((now.getTime() - Date.parse(state.updatedAt)) / 1000));
  const stale = state.connection !== "stopped" && age * 1000 > 3 * state.intervalMs;
  const lines = [
    `agent: ${state.agentId}, pid ${state.pid}, started ${state.startedAt}; reported ${age} s ago${stale ? " (stale: the agent has stopped updating it)" : ""}`,
  ];
  const connection =
    state.connection === "connected"
      ? `connected to ${state.gateway} since ${state.connectedAt}`
      : `${state.connection} (${state.gateway})`;
  lines.push(`gateway: ${connection}`);
  if (state.lastDisconnect)
    lines.push(`last disconnect: ${state.lastDisconnect.at} ${state.lastDisconnect.message}`);
  if (state.lastError) lines.push(`last error: ${state.lastError.at} ${state.lastError.message}`);
  lines.push(
    `work: ${state.inFlight} in flight${state.draining ? ", draining" : ""}, ${state.generationsFinished} finished since start`,
  );
  const models = state.models.map((m) => `${m.name} (${m.engine}${m.loaded ? "" : ", not loaded"})`);
  lines.push(`models: ${models.length > 0 ? models.join(", ") : "none"}`);
  if (state.exit)
    lines.push(`exited: ${describeExit(String(state.exit.code))} at ${state.exit.at}: ${state.exit.reason}`);
  return lines;
}

function serviceName(paths: ServicePaths, host: ServiceHost): string {
  return paths.manager === "launchd"
    ? `launchd gui/${host.uid}/com.orchard.agent`
    : "systemd --user orchard-agent.service";
}

function logsOf(paths: ServicePaths): string {
  if (paths.logFile) {
    const mib = LOG_MAX_BYTES / 1024 / 1024;
    return `${paths.logFile} (rotated at ${mib} MiB, ${LOG_KEEP} old files kept; raw process output in ${paths.stderrFile})`;
  }
  return "the journal: journalctl --user -u orchard-agent";
}
