// The service commands and start's service flags as operators run them, through the real CLI:
// `node --import tsx node-agent/main.ts <command>`.
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, describe, expect, it, vi } from "vitest";
import { readStateFile } from "../../node-agent/service/state-file.ts";
import { REPO_ROOT as root, spawnAgent, unsignedAgentToken, welcomingHub } from "../helpers/agent-process.ts";

const tsxLoader = pathToFileURL(realpathSync(join(root, "node_modules", "tsx", "dist", "loader.mjs"))).href;
const work = mkdtempSync(join(tmpdir(), "orchard-service-cli-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const token = unsignedAgentToken("mini-svc-cli");
const runCli = (args: string[], env: Record<string, string> = {}) =>
  spawnAgent(args, { env: { ORCHARD_CACHE_DIR: join(work, "cache"), ...env } }).exited;

describe.concurrent("service commands", () => {
  it("help lists install, uninstall, status, --token-file and start's service flags", async () => {
    const run = await runCli(["help"]);
    expect(run.code).toBe(0);
    for (const word of [
      "install [--dry-run]",
      "uninstall",
      "status",
      "--token-file FILE",
      "ORCHARD_AGENT_TOKEN_FILE",
      "--log-file FILE",
      "--state-file FILE",
    ]) {
      expect(run.stdout).toContain(word);
    }
  });

  it("install --dry-run prints the unit running this checkout through tsx (ORCHARD_* as flags), without the token", async () => {
    const home = mkdtempSync(join(work, "home-"));
    const run = await runCli(
      ["install", "--dry-run", "--gateway", "http://127.0.0.1:8787", "--token", token],
      {
        HOME: home,
        XDG_CONFIG_HOME: join(home, ".config"),
        XDG_STATE_HOME: join(home, ".state"),
      },
    );
    expect(run.code).toBe(0);
    expect(run.stdout).not.toContain(token);
    const unit = join(home, ".config", "systemd", "user", "orchard-agent.service");
    expect(run.stdout.split("\n")[0]).toBe(`# ${unit}`);
    const exec = run.stdout.split("\n").find((l) => l.startsWith("ExecStart="));
    expect(exec).toBe(
      `ExecStart=${process.execPath} --import ${tsxLoader} ${root}/node-agent/main.ts start --gateway=http://127.0.0.1:8787 --cache-dir=${work}/cache --token-file=${home}/.config/orchard/agent-token --state-file ${home}/.state/orchard/agent-state.json`,
    );
    expect(run.stdout).toContain(`WorkingDirectory=${root}`);
    expect(existsSync(join(home, ".config"))).toBe(false);
  });

  it("status with nothing installed says so and exits 1", async () => {
    const home = mkdtempSync(join(work, "home-"));
    const run = await runCli(["status"], {
      HOME: home,
      XDG_CONFIG_HOME: join(home, ".config"),
      XDG_STATE_HOME: join(home, ".state"),
    });
    expect(run.code).toBe(1);
    expect(run.stdout).toContain("service: systemd --user orchard-agent.service: not installed");
    expect(run.stdout).toContain(`agent: no state file yet (${home}/.state/orchard/agent-state.json)`);
  });

  it("start with a --log-file that has no value is a config error", async () => {
    const run = await runCli(["start", "--gateway", "http://127.0.0.1:9", "--token", token, "--log-file"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe("orchard-agent: invalid configuration: --log-file: needs a file\n");
  });
});

describe("start as a service runs it", () => {
  it("logs to the rotating file, keeps the state file current, and records the drain", async () => {
    const hub = await welcomingHub();
    const logFile = join(work, "logs", "agent.log");
    const stateFile = join(work, "state", "agent-state.json");
    const tokenFile = join(work, "agent-token");
    const { writeTokenFile } = await import("../../node-agent/service/token-file.ts");
    writeTokenFile(tokenFile, token);
    try {
      const { child, output, exited } = spawnAgent(
        [
          "start",
          "--gateway",
          hub.url,
          "--token-file",
          tokenFile,
          "--capacity",
          "1",
          "--log-level",
          "info",
          "--log-file",
          logFile,
          "--state-file",
          stateFile,
        ],
        { env: { ORCHARD_CACHE_DIR: join(work, "cache") } },
      );
      await vi.waitFor(
        () => {
          const read = readStateFile(stateFile);
          expect(read.ok && read.state.connection).toBe("connected");
        },
        { timeout: 20_000, interval: 100 },
      );
      const read = readStateFile(stateFile);
      if (!read.ok) throw new Error(read.reason);
      expect(read.state).toMatchObject({
        agentId: "mini-svc-cli",
        gateway: `${hub.url.replace("http:", "ws:")}/agents/connect`,
        pid: child.pid,
        inFlight: 0,
        draining: false,
      });
      child.kill("SIGTERM");
      const run = await exited;
      expect(run.code).toBe(0);
      const stopped = readStateFile(stateFile);
      expect(stopped).toMatchObject({ ok: true, state: { connection: "stopped", exit: { code: 0 } } });
      // The logger's lines are in the log file, none on stderr.
      const logged = readFileSync(logFile, "utf8")
        .trimEnd()
        .split("\n")
        .map((line) => JSON.parse(line) as { msg: string });
      expect(logged.map((l) => l.msg)).toEqual(
        expect.arrayContaining(["agent starting", "connected", "drained", "agent stopped"]),
      );
      expect(output.stderr).not.toMatch(/"msg":/);
    } finally {
      await hub.close();
    }
  }, 40_000);
});
