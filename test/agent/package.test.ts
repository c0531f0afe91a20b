// The agent's npm package (node-agent/package.json): built by scripts/pack-agent.ts, packed with
// npm, and run from the unpacked tarball with Node alone (no tsx). Its dependencies are linked to
// the repository's node_modules, whose versions the manifest must equal (checked below), so this
// runs offline; scripts/pack-agent.ts --install-check does the real `npm install -g` from the registry.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AGENT_DIR,
  type AgentBuild,
  agentManifest,
  buildAgent,
  dependencyProblems,
  packAgent,
} from "../../scripts/pack-agent.ts";
import { REPO_ROOT as root, spawnAgent, unsignedAgentToken, welcomingHub } from "../helpers/agent-process.ts";

const work = mkdtempSync(join(tmpdir(), "orchard-package-"));
const pkg = join(work, "package");
let built: AgentBuild;
let tarball: string;

beforeAll(async () => {
  built = await buildAgent();
  tarball = packAgent(work);
  const untar = spawnSync("tar", ["xzf", tarball, "-C", work]);
  if (untar.status !== 0) throw new Error(`tar: ${untar.stderr}`);
  symlinkSync(join(root, "node_modules"), join(pkg, "node_modules"));
}, 60_000);
afterAll(() => rmSync(work, { recursive: true, force: true }));

const token = unsignedAgentToken("mini-pkg");

/** node <package>/dist/main.js, in a folder outside the repository, with no loader. */
function runPackaged(args: string[]) {
  return spawnAgent(args, {
    entry: [join(pkg, "dist", "main.js")],
    cwd: work,
    env: { ORCHARD_CACHE_DIR: join(work, "cache") },
  });
}

describe("the agent package", () => {
  it("declares exactly the packages the bundle imports, at the repository's versions", () => {
    expect(built.externals).toEqual(["jose", "node-llama-cpp", "ollama", "ws", "zod"]);
    expect(dependencyProblems(built.externals, agentManifest())).toEqual([]);
    // The check has teeth: a missing, an extra and a drifted dependency are each named.
    expect(
      dependencyProblems([...built.externals, "left-pad"], {
        ...agentManifest(),
        dependencies: { ...agentManifest().dependencies, zod: "4.0.0", hono: "4.13.19" },
      }),
    ).toEqual([
      "left-pad is imported but not a dependency",
      "zod is 4.0.0 here but 4.6.7 in the repository's package.json",
      "hono is a dependency the bundle never imports",
    ]);
  });

  it("holds only the manifest and dist/, with both bins and the MLX runtime's installer", () => {
    const listing = spawnSync("tar", ["tzf", tarball], { encoding: "utf8" }).stdout.trim().split("\n");
    for (const path of listing) expect(path).toMatch(/^package\/(package\.json|dist\/.+)$/);
    const manifest = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8"));
    expect(manifest.bin).toEqual({
      "orchard-agent": "dist/main.js",
      "orchard-agent-mlx-install": "dist/mlx-install.mjs",
    });
    expect(manifest.devDependencies).toBeUndefined();
    for (const file of [
      "dist/main.js",
      "dist/child.js",
      "dist/mlx-install.mjs",
      "dist/runtime/package.json",
      "dist/runtime/package-lock.json",
    ]) {
      expect(listing).toContain(`package/${file}`);
    }
    expect(readFileSync(join(pkg, "dist", "main.js"), "utf8").startsWith("#!/usr/bin/env node\n")).toBe(true);
    expect(
      readFileSync(join(pkg, "dist", "mlx-install.mjs"), "utf8").startsWith("#!/usr/bin/env node\n"),
    ).toBe(true);
  });

  it("is JavaScript only: no TypeScript imports, and every dynamic import names a module", () => {
    for (const file of readdirSync(join(pkg, "dist")).filter((f) => f.endsWith(".js"))) {
      const text = readFileSync(join(pkg, "dist", file), "utf8");
      expect(text, file).not.toMatch(/from\s*"[^"]+\.ts"|import\(\s*"[^"]+\.ts"\s*\)/);
      // A computed specifier (import(SOME_CONSTANT)) would be resolved against dist/ at run time.
      expect(text.match(/\bimport\((?!\s*")[^)]*\)/g) ?? [], file).toEqual([]);
    }
  });

  it("runs --help with Node alone, outside the repository", async () => {
    const run = await runPackaged(["--help"]).exited;
    expect(run.code).toBe(0);
    expect(run.stdout).toContain("orchard-agent <command> [flags]");
    expect(run.stdout).toContain("install [--dry-run]");
    expect(run.stderr).toBe("");
  });

  it("runs doctor offline: the demo model, llama.cpp's prebuilt binary and a stand-in gateway", async () => {
    const gateway = createServer((req, res) => {
      if (req.url === "/health") res.writeHead(200).end();
      else if (req.url === "/agents/connect") res.writeHead(426).end('{"error":{"code":"UPGRADE_REQUIRED"}}');
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => gateway.listen(0, "127.0.0.1", resolve));
    try {
      const url = `http://127.0.0.1:${(gateway.address() as AddressInfo).port}`;
      const run = await runPackaged(["doctor", "--gateway", url, "--token", token]).exited;
      expect(run.stdout).toMatch(/^ok +engine llamacpp: loaded 1 model/m);
      expect(run.stdout).toContain("all checks passed");
      expect(run.code).toBe(0);
    } finally {
      gateway.close();
    }
  });

  // The MLX runtime is installed apart (node-agent/engines/mlx/install.mjs; the package's
  // orchard-agent-mlx-install); here the repository's installed runtime is linked in its place.
  const runtime = join(AGENT_DIR, "engines", "mlx", "runtime", "node_modules");
  const mlxHere = existsSync(join(runtime, "@frost-beta", "mlx", "package.json"));
  it.skipIf(!mlxHere)(
    `serves the MLX demo model from the bundle (the engine's child process is dist/child.js)${mlxHere ? "" : " (skipped: the MLX runtime is not installed in this checkout: npm run mlx:install)"}`,
    async () => {
      symlinkSync(runtime, join(pkg, "dist", "runtime", "node_modules"));
      const hub = await welcomingHub({ prompt: "Once", maxTokens: 6 });
      const frames = hub.frames;
      try {
        const agent = runPackaged(["start", "--gateway", hub.url, "--token", token, "--engine", "mlx"]);
        await expect
          .poll(() => frames.find((f) => f.type === "done" || f.type === "error"), { timeout: 30_000 })
          .toBeDefined();
        agent.child.kill("SIGTERM");
        const run = await agent.exited;
        expect(frames[0]).toMatchObject({
          type: "hello",
          engines: ["mlx"],
          models: [{ engine: "mlx", loaded: true }],
        });
        expect(
          frames.find((f) => f.type === "done"),
          run.stderr.slice(-800),
        ).toMatchObject({
          id: "g1",
          usage: { completionTokens: 6 },
        });
        expect(run.code).toBe(0);
      } finally {
        await hub.close();
      }
    },
    40_000,
  );
});
