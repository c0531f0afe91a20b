// Where an installed agent's files live, per service manager: the service definition, the token
// file, the state file `status` reads, and (launchd, which does not rotate) the log files. A pure
// function of the platform, the home folder and the XDG variables, so tests can ask for a Mac's.
import { join } from "node:path";

export type ServiceManager = "launchd" | "systemd";

export const LAUNCHD_LABEL = "com.orchard.agent";
export const SYSTEMD_UNIT = "orchard-agent.service";

export interface ServicePaths {
  manager: ServiceManager;
  /** The plist in ~/Library/LaunchAgents, or the unit in ~/.config/systemd/user. */
  serviceFile: string;
  /** The agent token, mode 0600, in a 0700 folder. */
  tokenFile: string;
  /** What the running agent last reported (state-file.ts). */
  stateFile: string;
  /** launchd only: the agent's own rotating JSON log (systemd's journal rotates by itself). */
  logFile?: string;
  /** launchd only: the process's raw stdout/stderr (native libraries' output, a crash's trace). */
  stderrFile?: string;
}

export interface PathsHost {
  platform: NodeJS.Platform;
  home: string;
  env: { XDG_CONFIG_HOME?: string | undefined; XDG_STATE_HOME?: string | undefined };
}

export class UnsupportedPlatformError extends Error {
  readonly code = "ERR_SERVICE_PLATFORM";
  constructor(platform: string) {
    super(`install supports macOS (launchd) and Linux (systemd --user), not ${platform}`);
    this.name = "UnsupportedPlatformError";
  }
}

export function managerFor(platform: NodeJS.Platform): ServiceManager {
  if (platform === "darwin") return "launchd";
  if (platform === "linux") return "systemd";
  throw new UnsupportedPlatformError(platform);
}

export function servicePaths({ platform, home, env }: PathsHost): ServicePaths {
  const manager = managerFor(platform);
  if (manager === "launchd") {
    const support = join(home, "Library", "Application Support", "Orchard");
    const logs = join(home, "Library", "Logs", "Orchard");
    return {
      manager,
      serviceFile: join(home, "Library", "LaunchAgents", `${LAUNCHD_LABEL}.plist`),
      tokenFile: join(support, "agent-token"),
      stateFile: join(support, "agent-state.json"),
      logFile: join(logs, "agent.log"),
      stderrFile: join(logs, "agent.stderr.log"),
    };
  }
  // XDG says a relative value is invalid and must be ignored.
  const absolute = (value: string | undefined) => (value?.startsWith("/") ? value : undefined);
  const config = absolute(env.XDG_CONFIG_HOME) ?? join(home, ".config");
  const state = absolute(env.XDG_STATE_HOME) ?? join(home, ".local", "state");
  return {
    manager,
    serviceFile: join(config, "systemd", "user", SYSTEMD_UNIT),
    tokenFile: join(config, "orchard", "agent-token"),
    stateFile: join(state, "orchard", "agent-state.json"),
  };
}
