// Running the service manager's commands (launchctl, systemctl): one injectable function, so the
// install steps can be checked against a recording of what they would run where the manager is absent.
import { spawn } from "node:child_process";

export interface CommandResult {
  /** The exit code; 127 when the command is not there at all. */
  code: number;
  stdout: string;
  stderr: string;
}

export type Run = (command: string, args: string[]) => Promise<CommandResult>;

/** Runs a command without a shell and collects its output; a missing command is exit 127. */
export const runCommand: Run = (command, args) =>
  new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.on("error", (err: NodeJS.ErrnoException) =>
      resolve({ code: err.code === "ENOENT" ? 127 : 1, stdout, stderr: stderr || err.message }),
    );
    child.on("close", (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
  });

/** A service manager command that failed; its message carries the command and what it printed. */
export class ServiceCommandError extends Error {
  readonly code = "ERR_SERVICE_COMMAND";
  constructor(command: string, args: string[], result: CommandResult) {
    const said = (result.stderr || result.stdout).trim().split("\n")[0] ?? "";
    super(`\`${[command, ...args].join(" ")}\` failed (exit ${result.code})${said ? `: ${said}` : ""}`);
    this.name = "ServiceCommandError";
  }
}

export async function expectOk(run: Run, command: string, args: string[]): Promise<CommandResult> {
  const result = await run(command, args);
  if (result.code !== 0) throw new ServiceCommandError(command, args, result);
  return result;
}
