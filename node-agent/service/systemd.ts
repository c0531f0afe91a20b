// The agent as a systemd user unit on Linux: the unit file (a pure function of the definition), and
// the `systemctl --user` steps that enable, disable and inspect it.
import type { ServiceDefinition } from "./definition.ts";
import { SYSTEMD_UNIT } from "./paths.ts";
import { expectOk, type Run } from "./run.ts";

/** What the agent's exit codes 2, 3 and 4 mean: causes a restart cannot fix (connection.ts's ExitCode). */
export const TERMINAL_EXIT_CODES = [2, 3, 4] as const;

/**
 * One word of ExecStart as systemd splits it: `%` (specifiers) doubled, `$` (variables) doubled in
 * the arguments (systemd expands none in the program's path, where `$$` would stay two), and
 * anything but plain path-like characters inside double quotes with C escapes.
 */
export function systemdWord(arg: string, position: "program" | "argument" = "argument"): string {
  const specifiers = arg.replace(/%/g, "%%");
  const literal = position === "program" ? specifiers : specifiers.replace(/\$/g, "$$$$");
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(literal)) return literal;
  const escaped = literal
    .replace(/\\/g, "\\\\")
    .replace(/"/g, '\\"')
    .replace(/\n/g, "\\n")
    .replace(/\t/g, "\\t");
  return `"${escaped}"`;
}

/**
 * The unit: restarted RestartSec after a failing exit, except the exits that would only fail again;
 * SIGTERM to the agent alone (it drains and then stops its engines' children), SIGKILL to the rest
 * after TimeoutStopSec; its JSON lines to the journal, which rotates them.
 */
export function systemdUnit(def: ServiceDefinition): string {
  const lines = [
    "# Written by `orchard-agent install`; run install again to change it rather than editing it.",
    "# The agent token is in the file --token-file names, readable only by this user.",
    "[Unit]",
    "Description=Orchard node agent (runs models for an Orchard gateway)",
    "",
    "[Service]",
    "Type=exec",
    `WorkingDirectory=${def.workingDirectory.replace(/%/g, "%%")}`,
    `ExecStart=${[systemdWord(def.program, "program"), ...def.args.map((arg) => systemdWord(arg))].join(" ")}`,
    "Restart=on-failure",
    `RestartSec=${def.restartDelaySeconds}`,
    "# 2: bad configuration, 3: token refused, 4: refused for good (e.g. superseded): fix, then install again.",
    `RestartPreventExitStatus=${TERMINAL_EXIT_CODES.join(" ")}`,
    "KillMode=mixed",
    `TimeoutStopSec=${def.stopTimeoutSeconds}`,
    "StandardOutput=journal",
    "StandardError=journal",
    "",
    "[Install]",
    "WantedBy=default.target",
  ];
  return `${lines.join("\n")}\n`;
}

export type UserManager = { available: true } | { available: false; reason: string };

/**
 * Whether `systemctl --user` reaches a user manager. Without one (no login session, a container
 * whose init is not systemd) every other step would fail with a less helpful message.
 */
export async function systemdUserManager(run: Run): Promise<UserManager> {
  const result = await run("systemctl", ["--user", "is-system-running"]);
  if (result.code === 127) return { available: false, reason: "systemctl is not installed" };
  const state = result.stdout.trim();
  // is-system-running exits non-zero for "degraded" too, whose manager works fine.
  if (["running", "degraded", "starting", "initializing", "maintenance"].includes(state)) {
    return { available: true };
  }
  const said = (result.stderr.trim().split("\n")[0] ?? "") || state || `exit ${result.code}`;
  return {
    available: false,
    reason: `no systemd user manager (systemctl --user is-system-running: ${said})`,
  };
}

/** Loads the (new) unit, enables it at login and starts it; restarts it when it was running already. */
export async function systemdEnable(run: Run): Promise<void> {
  const wasActive = (await run("systemctl", ["--user", "is-active", SYSTEMD_UNIT])).code === 0;
  await expectOk(run, "systemctl", ["--user", "daemon-reload"]);
  await expectOk(run, "systemctl", ["--user", "enable", "--now", SYSTEMD_UNIT]);
  if (wasActive) await expectOk(run, "systemctl", ["--user", "restart", SYSTEMD_UNIT]);
}

/** Stops it (SIGTERM: the agent drains) and disables it; false when systemd did not know it. */
export async function systemdDisable(run: Run): Promise<boolean> {
  const result = await run("systemctl", ["--user", "disable", "--now", SYSTEMD_UNIT]);
  return result.code === 0;
}

export async function systemdReload(run: Run): Promise<void> {
  await expectOk(run, "systemctl", ["--user", "daemon-reload"]);
}

/** Without lingering, a user's units stop at logout and start at login only. */
export async function systemdLingers(run: Run, user: string): Promise<boolean | undefined> {
  const result = await run("loginctl", ["show-user", user, "--property=Linger"]);
  if (result.code !== 0) return undefined;
  return result.stdout.trim() === "Linger=yes";
}

const SHOWN = ["LoadState", "ActiveState", "SubState", "MainPID", "NRestarts", "ExecMainStatus"] as const;
export type SystemdState = Partial<Record<(typeof SHOWN)[number], string>>;

export async function systemdState(run: Run): Promise<SystemdState> {
  const result = await run("systemctl", ["--user", "show", SYSTEMD_UNIT, `--property=${SHOWN.join(",")}`]);
  return result.code === 0 ? parseSystemctlShow(result.stdout) : {};
}

/** `Key=value` lines, as `systemctl show` prints them, for the properties status shows. */
export function parseSystemctlShow(text: string): SystemdState {
  const state: SystemdState = {};
  for (const line of text.split("\n")) {
    const eq = line.indexOf("=");
    const name = line.slice(0, eq) as (typeof SHOWN)[number];
    if (eq > 0 && SHOWN.includes(name)) state[name] = line.slice(eq + 1).trim();
  }
  return state;
}
