#!/usr/bin/env node
// Installs the MLX engine's runtime (node-agent/engines/mlx/runtime: node-mlx and its LLM package)
// from its own lockfile, apart from the project. The registry's only node-mlx (0.0.7) has an install
// script that downloads the binary for this platform from GitHub: on macOS that is the Metal build,
// so scripts run there; on Linux x64 the tarball already holds a working CPU binary and the download
// fails without internet, so scripts are off. `--ignore-scripts` is global to an install, which is
// why this is a folder of its own: the project's other packages (node-llama-cpp) keep their scripts.
// Plain JavaScript, so `npm ci`'s postinstall runs it before any TypeScript tooling is there.
//
//   node node-agent/engines/mlx/install.mjs               install or fail (exit 1)
//   node node-agent/engines/mlx/install.mjs --if-possible never fails: postinstall, offline machines
//   ORCHARD_MLX_INSTALL_SCRIPTS=on|off                    override the platform's choice of scripts
//   ORCHARD_MLX_SKIP_INSTALL=1                            do nothing
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const runtimeDir = join(dirname(fileURLToPath(import.meta.url)), "runtime");
const stampFile = join(runtimeDir, "node_modules", ".orchard-mlx-install.json");
const lockDir = join(runtimeDir, ".install-lock");
const ifPossible = process.argv.includes("--if-possible");
/** npm passes its whole configuration down as npm_config_*; only these make sense for a nested ci. */
const KEPT_NPM_CONFIG = new Set([
  "cache",
  "registry",
  "userconfig",
  "globalconfig",
  "cafile",
  "proxy",
  "https_proxy",
  "noproxy",
]);

function say(line) {
  process.stderr.write(`orchard mlx install: ${line}\n`);
}

function runScripts() {
  const override = process.env.ORCHARD_MLX_INSTALL_SCRIPTS;
  if (override === "on" || override === "off") return override === "on";
  // Linux x64: keep the bundled CPU binary. Elsewhere (a Mac) the script fetches the right build.
  return !(process.platform === "linux" && process.arch === "x64");
}

function wanted(scripts) {
  const lock = readFileSync(join(runtimeDir, "package-lock.json"));
  return {
    lockSha256: createHash("sha256").update(lock).digest("hex"),
    platform: process.platform,
    arch: process.arch,
    node: process.versions.modules,
    scripts,
  };
}

function installed(stamp) {
  try {
    const have = JSON.parse(readFileSync(stampFile, "utf8"));
    return Object.entries(stamp).every(([key, value]) => have[key] === value);
  } catch {
    return false;
  }
}

/** One installer at a time (tests may start it while `npm ci` runs it); a lock older than 10 min is stale. */
function withLock(fn) {
  for (let waited = 0; ; waited += 200) {
    try {
      mkdirSync(lockDir);
      break;
    } catch (err) {
      if (err.code !== "EEXIST") throw err;
      const age = Date.now() - statSync(lockDir, { throwIfNoEntry: false })?.mtimeMs;
      if (age > 600_000) rmSync(lockDir, { recursive: true, force: true });
      else if (waited > 600_000) throw new Error(`another install holds ${lockDir}`);
      else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
    }
  }
  try {
    return fn();
  } finally {
    rmSync(lockDir, { recursive: true, force: true });
  }
}

function npmCommand() {
  // Inside an npm lifecycle script npm_execpath is npm's own CLI; run it with this Node.
  const cli = process.env.npm_execpath;
  if (cli && /npm-cli\.[cm]?js$/.test(cli)) return [process.execPath, [cli]];
  return [process.platform === "win32" ? "npm.cmd" : "npm", []];
}

function install() {
  const scripts = runScripts();
  const stamp = wanted(scripts);
  if (installed(stamp)) {
    say(`runtime already installed (${scripts ? "with" : "without"} install scripts)`);
    return true;
  }
  return withLock(() => {
    if (installed(stamp)) return true;
    const [command, prefix] = npmCommand();
    const args = [...prefix, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"];
    if (!scripts) args.push("--ignore-scripts");
    const env = Object.fromEntries(
      Object.entries(process.env).filter(
        ([key]) =>
          !key.toLowerCase().startsWith("npm_config_") || KEPT_NPM_CONFIG.has(key.slice(11).toLowerCase()),
      ),
    );
    say(
      `npm ci in ${runtimeDir} ${scripts ? "with install scripts (fetches the platform's build)" : "with --ignore-scripts (keeps the bundled linux-x64 CPU binary)"}`,
    );
    const result = spawnSync(command, args, {
      cwd: runtimeDir,
      env,
      stdio: ["ignore", "inherit", "inherit"],
    });
    if (result.status !== 0) {
      say(`npm ci failed (${result.error?.message ?? `exit ${result.status ?? result.signal}`})`);
      return false;
    }
    writeFileSync(stampFile, `${JSON.stringify(stamp)}\n`);
    return true;
  });
}

/** Loads the binary in a separate process, so a missing BLAS library is reported, not fatal. */
function checkLoads() {
  const probe =
    `const {core}=require(${JSON.stringify(join(runtimeDir, "node_modules", "@frost-beta", "mlx"))});` +
    "process.stdout.write(String(core.defaultDevice()))";
  const result = spawnSync(process.execPath, ["-e", probe], { encoding: "utf8" });
  if (result.status === 0) {
    say(`MLX loads: ${result.stdout.trim()}`);
    return;
  }
  const reason = (result.stderr.match(/Error: (.*)/)?.[1] ?? `exit ${result.status ?? result.signal}`).trim();
  say(`installed, but MLX does not load here: ${reason}`);
  if (process.platform === "linux") {
    say("it needs BLAS and LAPACK: apt-get install libblas3 liblapack3 libgfortran5 libopenblas0-pthread");
  }
}

if (process.env.ORCHARD_MLX_SKIP_INSTALL === "1") {
  say("skipped (ORCHARD_MLX_SKIP_INSTALL=1)");
} else {
  let ok = false;
  try {
    ok = install();
  } catch (err) {
    say(`failed: ${err.message}`);
  }
  if (ok && existsSync(join(runtimeDir, "node_modules", "@frost-beta", "mlx"))) checkLoads();
  if (!ok) {
    say(
      ifPossible
        ? "the mlx engine stays unavailable until `npm run mlx:install` succeeds; nothing else is affected"
        : "see docs/engine-mlx.md",
    );
    process.exitCode = ifPossible ? 0 : 1;
  }
}
