// What the MLX tests share: making sure the MLX runtime is installed (the project's postinstall
// does it; a tree installed before it existed gets it here, by the same installer), and the one
// reason MLX tests may skip — MLX truly cannot load on this machine. Under CI that is a failure.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { isMlxRuntimeInstalled } from "../../node-agent/engines/mlx/index.ts";
import { RUNTIME_DIR } from "../../node-agent/engines/mlx/runtime.ts";

const run = promisify(execFile);
const INSTALLER = fileURLToPath(new URL("../../node-agent/engines/mlx/install.mjs", import.meta.url));

let checked: Promise<string | undefined> | undefined;

/** Undefined when MLX loads here; else why not. Throws under CI instead of returning a reason. */
export function mlxSkipReason(): Promise<string | undefined> {
  checked ??= check();
  return checked;
}

async function check(): Promise<string | undefined> {
  let reason: string | undefined;
  if (!isMlxRuntimeInstalled()) {
    try {
      await run(process.execPath, [INSTALLER], { timeout: 300_000 });
    } catch (err) {
      reason = `the MLX runtime could not be installed: ${firstLine((err as { stderr?: string }).stderr ?? err)}`;
    }
  }
  if (!reason) {
    const probe = `const {core}=require(${JSON.stringify(`${RUNTIME_DIR}/node_modules/@frost-beta/mlx`)});core.eval(core.ones([2]))`;
    try {
      await run(process.execPath, ["-e", probe], { timeout: 60_000 });
    } catch (err) {
      reason = `MLX does not load on this machine: ${firstLine((err as { stderr?: string }).stderr ?? err)}`;
    }
  }
  if (reason && process.env.CI) throw new Error(`${reason} (CI must run the MLX tests)`);
  return reason;
}

function firstLine(value: unknown): string {
  const text = value instanceof Error ? value.message : String(value);
  return text.split("\n").find((line) => line.includes("Error")) ?? text.split("\n")[0] ?? "";
}

/** Set on Apple Silicon, where MLX runs on Metal; elsewhere Mac-only tests skip with this reason. */
export const NOT_A_MAC =
  process.platform === "darwin" && process.arch === "arm64"
    ? undefined
    : `Metal and unified memory need Apple Silicon; this is ${process.platform}-${process.arch}`;
