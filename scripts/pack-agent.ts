// Builds the agent's npm package (node-agent/package.json, @orchard/agent): node-agent/ and the
// schema/ modules it imports, bundled by esbuild into node-agent/dist/ as plain JavaScript that
// Node 20 runs without tsx; every npm package stays an import (external), and must be one of the
// package's dependencies. Then packs it, and with --install-check installs the tarball into an
// empty prefix and reports its size against the repository's node_modules.
//
//   tsx scripts/pack-agent.ts [--out DIR]     build, check, npm pack into DIR (default: a temp dir)
//   tsx scripts/pack-agent.ts --build-only    build and check (node-agent's prepack runs this)
//   tsx scripts/pack-agent.ts --install-check also npm install -g --prefix <empty dir> the tarball
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { parseArgs } from "node:util";
import { build, type Metafile } from "esbuild";

const root = join(import.meta.dirname, "..");
export const AGENT_DIR = join(root, "node-agent");
const MLX_DIR = join(AGENT_DIR, "engines", "mlx");

export interface AgentBuild {
  outdir: string;
  /** Every npm package the bundle imports (node: built-ins left out), sorted. */
  externals: string[];
  /** Files written, relative to the package folder. */
  files: string[];
}

/** Bundles the agent into node-agent/dist/ (emptied first) and copies the MLX runtime's installer. */
export async function buildAgent(outdir = join(AGENT_DIR, "dist")): Promise<AgentBuild> {
  rmSync(outdir, { recursive: true, force: true });
  const entryPoints: Record<string, string> = { main: join(AGENT_DIR, "main.ts") };
  // The MLX engine forks ./child.js beside its own module: chunks and entries all sit in outdir.
  if (existsSync(join(MLX_DIR, "child.ts"))) entryPoints.child = join(MLX_DIR, "child.ts");
  const result = await build({
    entryPoints,
    outdir,
    bundle: true,
    splitting: true, // lazy imports stay lazy: `help` loads no engine
    format: "esm",
    platform: "node",
    target: "node20",
    packages: "external",
    metafile: true,
    logLevel: "warning",
  });
  const main = join(outdir, "main.js");
  writeFileSync(main, `#!/usr/bin/env node\n${readFileSync(main, "utf8")}`);
  chmodSync(main, 0o755);
  const files = Object.keys(result.metafile.outputs).map((file) => relative(AGENT_DIR, join(root, file)));
  // The MLX runtime is a package folder of its own (engines/mlx/install.mjs explains why); the
  // package carries its manifest and installer, and `orchard-agent-mlx-install` installs it into
  // dist/runtime, where the bundled engine looks (beside its module, as in the source tree).
  for (const [from, to] of [
    ["install.mjs", "mlx-install.mjs"],
    ["runtime/package.json", "runtime/package.json"],
    ["runtime/package-lock.json", "runtime/package-lock.json"],
  ] as const) {
    if (!existsSync(join(MLX_DIR, from))) continue;
    mkdirSync(dirname(join(outdir, to)), { recursive: true });
    copyFileSync(join(MLX_DIR, from), join(outdir, to));
    files.push(relative(AGENT_DIR, join(outdir, to)));
  }
  if (existsSync(join(outdir, "mlx-install.mjs"))) chmodSync(join(outdir, "mlx-install.mjs"), 0o755);
  return { outdir, externals: externalPackages(result.metafile), files: files.sort() };
}

/** The npm packages (not `node:` built-ins) the bundle's outputs import, by package name. */
export function externalPackages(metafile: Metafile): string[] {
  const names = new Set<string>();
  for (const output of Object.values(metafile.outputs)) {
    for (const { path, external } of output.imports) {
      if (!external || path.startsWith("node:")) continue;
      const parts = path.split("/");
      names.add(path.startsWith("@") ? parts.slice(0, 2).join("/") : (parts[0] ?? path));
    }
  }
  return [...names].sort();
}

export interface AgentManifest {
  name: string;
  version: string;
  bin: Record<string, string>;
  dependencies: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

export function agentManifest(): AgentManifest {
  return JSON.parse(readFileSync(join(AGENT_DIR, "package.json"), "utf8"));
}

/**
 * What is wrong with the package's dependencies: one the bundle imports but the package does not
 * declare, one declared but never imported, or a version other than the repository's (the agent
 * is tested with the repository's).
 */
export function dependencyProblems(externals: readonly string[], manifest: AgentManifest): string[] {
  const rootDeps = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as AgentManifest)
    .dependencies;
  const declared = manifest.dependencies;
  const problems: string[] = [];
  for (const name of externals)
    if (!(name in declared)) problems.push(`${name} is imported but not a dependency`);
  for (const [name, version] of Object.entries(declared)) {
    if (!externals.includes(name)) problems.push(`${name} is a dependency the bundle never imports`);
    if (rootDeps[name] !== version) {
      problems.push(
        `${name} is ${version} here but ${rootDeps[name] ?? "absent"} in the repository's package.json`,
      );
    }
  }
  return problems;
}

/** `npm pack` of node-agent/ into `out` (already built, so its prepack is skipped); the tarball's path. */
export function packAgent(out: string): string {
  mkdirSync(out, { recursive: true });
  const output = execFileSync("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", out], {
    cwd: AGENT_DIR,
    encoding: "utf8",
  });
  const [packed] = JSON.parse(output) as [{ filename: string }];
  return join(out, packed.filename);
}

function du(path: string): string {
  return execFileSync("du", ["-sh", path], { encoding: "utf8" }).split("\t")[0] ?? "?";
}

async function cli(): Promise<void> {
  const { values } = parseArgs({
    options: {
      "build-only": { type: "boolean", default: false },
      "install-check": { type: "boolean", default: false },
      out: { type: "string" },
    },
  });
  const built = await buildAgent();
  const problems = dependencyProblems(built.externals, agentManifest());
  if (problems.length > 0) throw new Error(`node-agent/package.json: ${problems.join("; ")}`);
  console.log(
    `built ${built.files.length} files into ${relative(root, built.outdir)}; imports ${built.externals.join(", ")}`,
  );
  if (values["build-only"]) return;
  const tarball = packAgent(values.out ?? mkdtempSync(join(tmpdir(), "orchard-agent-pack-")));
  console.log(`packed ${tarball} (${du(tarball)})`);
  if (!values["install-check"]) return;
  const prefix = mkdtempSync(join(tmpdir(), "orchard-agent-prefix-"));
  const started = Date.now();
  execFileSync("npm", ["install", "-g", "--prefix", prefix, "--no-audit", "--no-fund", tarball], {
    stdio: "inherit",
  });
  console.log(`installed into ${prefix} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const help = execFileSync(join(prefix, "bin", "orchard-agent"), ["help"], { encoding: "utf8" });
  console.log(`${join(prefix, "bin", "orchard-agent")} help: ${help.split("\n")[0]}`);
  console.log(
    `installed package: ${du(prefix)}; the repository's node_modules: ${du(join(root, "node_modules"))}`,
  );
  // The MLX runtime is a step of its own (it may fetch a platform build): its size separately.
  const mlx = spawnSync(join(prefix, "bin", "orchard-agent-mlx-install"), [], { stdio: "inherit" });
  console.log(
    mlx.status === 0
      ? `with the MLX runtime (orchard-agent-mlx-install): ${du(prefix)}`
      : `orchard-agent-mlx-install failed (exit ${mlx.status}); MLX stays unavailable`,
  );
}

if (process.argv[1] && import.meta.filename === process.argv[1]) {
  cli().catch((err) => {
    console.error(`pack-agent: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
