// The agent as a launchd user agent on macOS: the plist (a pure function of the definition), and
// the launchctl steps that load, unload and inspect it in the user's GUI domain (gui/<uid>).
import type { ServiceDefinition } from "./definition.ts";
import { LAUNCHD_LABEL } from "./paths.ts";
import { expectOk, type Run } from "./run.ts";

const HEADER = `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">`;

function xml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

const key = (name: string) => `  <key>${xml(name)}</key>`;
const string = (value: string, indent = "  ") => `${indent}<string>${xml(value)}</string>`;

/**
 * The plist: RunAtLoad, and KeepAlive restarting the agent after a failing exit (never after 0,
 * a drain) at most every ThrottleInterval seconds; ExitTimeOut is how long launchd waits after
 * SIGTERM (the agent drains) before SIGKILL. The token is not in it: the flags name the token file.
 */
export function launchdPlist(def: ServiceDefinition): string {
  const { stderrFile } = def.paths;
  const lines = [
    HEADER,
    // XML comments may not hold "--": no flag names in here.
    "<!-- Written by `orchard-agent install`; run install again to change it rather than editing it.",
    "     The agent token is not in it but in a file only this user can read. -->",
    '<plist version="1.0">',
    "<dict>",
    key("Label"),
    string(LAUNCHD_LABEL),
    key("ProgramArguments"),
    "  <array>",
    ...[def.program, ...def.args].map((arg) => string(arg, "    ")),
    "  </array>",
    key("WorkingDirectory"),
    string(def.workingDirectory),
    key("RunAtLoad"),
    "  <true/>",
    key("KeepAlive"),
    "  <dict>",
    "    <key>SuccessfulExit</key>",
    "    <false/>",
    "  </dict>",
    key("ThrottleInterval"),
    `  <integer>${def.restartDelaySeconds}</integer>`,
    key("ExitTimeOut"),
    `  <integer>${def.stopTimeoutSeconds}</integer>`,
    ...(stderrFile
      ? [key("StandardOutPath"), string(stderrFile), key("StandardErrorPath"), string(stderrFile)]
      : []),
    "</dict>",
    "</plist>",
  ];
  return `${lines.join("\n")}\n`;
}

export const launchdTarget = (uid: number) => `gui/${uid}/${LAUNCHD_LABEL}`;

/**
 * Replaces whatever is loaded under the label with the plist: bootout (its failure just means
 * nothing was loaded), enable (a `launchctl disable` would otherwise make bootstrap fail), bootstrap.
 */
export async function launchdLoad(run: Run, uid: number, plist: string): Promise<void> {
  await run("launchctl", ["bootout", launchdTarget(uid)]);
  await expectOk(run, "launchctl", ["enable", launchdTarget(uid)]);
  await expectOk(run, "launchctl", ["bootstrap", `gui/${uid}`, plist]);
}

/** Stops (SIGTERM: the agent drains) and unloads it; false when nothing was loaded. */
export async function launchdUnload(run: Run, uid: number): Promise<boolean> {
  const result = await run("launchctl", ["bootout", launchdTarget(uid)]);
  return result.code === 0;
}

export interface LaunchdState {
  loaded: boolean;
  /** launchctl's `state`: running, waiting (not running, will be started on demand or after throttling), ... */
  state?: string;
  pid?: number;
  /** The last exit code as launchctl prints it (a number, or e.g. "(never exited)"). */
  lastExit?: string;
  runs?: number;
}

/** What `launchctl print gui/<uid>/com.orchard.agent` says of the job (exit 113: not loaded). */
export async function launchdState(run: Run, uid: number): Promise<LaunchdState> {
  const result = await run("launchctl", ["print", launchdTarget(uid)]);
  if (result.code !== 0) return { loaded: false };
  return parseLaunchctlPrint(result.stdout);
}

/**
 * Reads the job's own top-level fields (one tab in) from `launchctl print`, ignoring the nested
 * blocks (arguments, environment, endpoints), which have keys of the same names.
 */
export function parseLaunchctlPrint(text: string): LaunchdState {
  const fields = new Map<string, string>();
  for (const line of text.split("\n")) {
    const match = /^\t([a-z][a-z ]*?) = (.*)$/.exec(line);
    if (match?.[1] && match[2] !== undefined && !fields.has(match[1])) fields.set(match[1], match[2].trim());
  }
  const number = (name: string) => {
    const value = Number(fields.get(name));
    return Number.isInteger(value) ? value : undefined;
  };
  const pid = number("pid");
  const runs = number("runs");
  const state = fields.get("state");
  const lastExit = fields.get("last exit code");
  return {
    loaded: true,
    ...(state === undefined ? {} : { state }),
    ...(pid === undefined ? {} : { pid }),
    ...(lastExit === undefined ? {} : { lastExit }),
    ...(runs === undefined ? {} : { runs }),
  };
}
