// `install`, `uninstall`, `status`. The steps are checked against a recording service manager (a
// test double that answers launchctl and systemctl as their manuals describe, and records what
// was asked) in a temporary home; the real managers run where they are present, and here they are
// not: those tests are skipped with the reason, which the test titles carry.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import {
  installCommand,
  type ServiceHost,
  statusCommand,
  uninstallCommand,
} from "../../node-agent/service/cli.ts";
import { servicePaths } from "../../node-agent/service/paths.ts";
import { type CommandResult, runCommand } from "../../node-agent/service/run.ts";
import { writeTokenFile } from "../../node-agent/service/token-file.ts";
import { spawnAgent, unsignedAgentToken } from "../helpers/agent-process.ts";

const work = mkdtempSync(join(tmpdir(), "orchard-service-install-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const token = unsignedAgentToken("mini-svc");
const gateway = "https://orchard.example.workers.dev";
const mainUrl = pathToFileURL("/opt/orchard/lib/node_modules/@orchard/agent/dist/main.js").href;

type Answer = Partial<CommandResult>;
/** A service manager that answers each command line from `answers` (default: exit 0, no output). */
function recordingHost(platform: "darwin" | "linux", answers: Record<string, Answer | Answer[]> = {}) {
  const home = mkdtempSync(join(work, `${platform}-home-`));
  const ran: string[] = [];
  const out: string[] = [];
  const host: ServiceHost = {
    platform,
    home,
    uid: 501,
    user: "lab",
    env: {},
    cwd: home,
    execPath: "/opt/homebrew/bin/node",
    mainUrl,
    run: async (command, args) => {
      const line = [command, ...args].join(" ");
      ran.push(line);
      const answer = answers[line];
      const next = Array.isArray(answer) ? (answer.length > 1 ? answer.shift() : answer[0]) : answer;
      return { code: 0, stdout: "", stderr: "", ...next };
    },
    print: (line) => out.push(line),
    now: () => new Date("2026-12-02T10:00:30.000Z"),
  };
  return { host, home, ran, out, paths: servicePaths({ platform, home, env: {} }) };
}

const notLoaded = { code: 113, stderr: 'Could not find service "com.orchard.agent" in domain for uid: 501' };

describe("install with launchd (recorded launchctl)", () => {
  it("writes the plist without the token, the token file 0600, and boots the agent out and in", async () => {
    const { host, ran, out, paths } = recordingHost("darwin", {
      "launchctl bootout gui/501/com.orchard.agent": notLoaded,
    });
    const code = await installCommand(["--gateway", gateway, "--token", token, "--capacity", "2"], host);
    expect(code).toBe(0);
    expect(ran).toEqual([
      "launchctl bootout gui/501/com.orchard.agent",
      "launchctl enable gui/501/com.orchard.agent",
      `launchctl bootstrap gui/501 ${paths.serviceFile}`,
    ]);
    const plist = readFileSync(paths.serviceFile, "utf8");
    expect(plist).not.toContain(token);
    expect(plist).toContain(`<string>--token-file=${paths.tokenFile}</string>`);
    expect(plist).toContain("<string>--capacity=2</string>");
    expect(plist).toContain(`<string>--log-file</string>\n    <string>${paths.logFile}</string>`);
    expect(readFileSync(paths.tokenFile, "utf8")).toBe(`${token}\n`);
    expect(statSync(paths.tokenFile).mode & 0o777).toBe(0o600);
    expect(out).toContain(`orchard-agent install: token: ${paths.tokenFile} (readable only by lab)`);
    expect(out.join("\n")).not.toContain(token);
  });

  it("turns ORCHARD_* variables into flags: a service does not see the shell's environment", async () => {
    const { host, paths } = recordingHost("darwin");
    host.env = { ORCHARD_GATEWAY_URL: gateway, ORCHARD_AGENT_TOKEN: token, ORCHARD_OLLAMA_KEEP_ALIVE: "-1" };
    expect(await installCommand([], host)).toBe(0);
    const plist = readFileSync(paths.serviceFile, "utf8");
    expect(plist).toContain(`<string>--gateway=${gateway}</string>`);
    // A value that begins with a dash stays one argument with its flag.
    expect(plist).toContain("<string>--ollama-keep-alive=-1</string>");
    expect(plist).not.toContain(token);
  });

  it("uses a --token-file the token came from as it is, and writes no token of its own", async () => {
    const { host, home, paths } = recordingHost("darwin");
    const own = join(home, "secrets", "orchard-token");
    writeTokenFile(own, token);
    expect(await installCommand(["--gateway", gateway, "--token-file", own], host)).toBe(0);
    expect(readFileSync(paths.serviceFile, "utf8")).toContain(`<string>--token-file=${own}</string>`);
    expect(existsSync(paths.tokenFile)).toBe(false);
  });

  it("refuses a bad configuration or injected faults with exit 2, writing and running nothing", async () => {
    for (const args of [
      ["--gateway", gateway],
      ["--gateway", gateway, "--token", token, "--capacity", "0"],
      ["--gateway", gateway, "--token", token, "--fault", "demo:fail=0.5"],
    ]) {
      const { host, ran, out, paths } = recordingHost("darwin");
      expect(await installCommand(args, host)).toBe(2);
      expect(ran).toEqual([]);
      expect(existsSync(paths.serviceFile)).toBe(false);
      expect(existsSync(paths.tokenFile)).toBe(false);
      expect(out[0]).toMatch(/^orchard-agent install: invalid configuration: (--token|--capacity|--fault): /);
    }
  });

  it("says what launchctl said when bootstrap fails, exit 1", async () => {
    const { host, out, paths } = recordingHost("darwin");
    host.run = async (_command, args) =>
      args[0] === "bootstrap"
        ? { code: 5, stdout: "", stderr: "Bootstrap failed: 5: Input/output error\n" }
        : { code: 0, stdout: "", stderr: "" };
    expect(await installCommand(["--gateway", gateway, "--token", token], host)).toBe(1);
    expect(out.at(-1)).toBe(
      `orchard-agent install: failed: \`launchctl bootstrap gui/501 ${paths.serviceFile}\` failed (exit 5): Bootstrap failed: 5: Input/output error`,
    );
  });

  it("--dry-run prints the plist and where the token goes, and writes or runs nothing", async () => {
    const { host, ran, out, paths } = recordingHost("darwin");
    expect(
      await installCommand(
        ["--dry-run", "--gateway", gateway, "--token", token, "--node", "/usr/local/bin/node"],
        host,
      ),
    ).toBe(0);
    expect(ran).toEqual([]);
    expect(existsSync(paths.serviceFile)).toBe(false);
    const text = out.join("\n");
    expect(text).toContain(
      "<key>ProgramArguments</key>\n  <array>\n    <string>/usr/local/bin/node</string>",
    );
    expect(text).toContain(`# token: written to ${paths.tokenFile} (mode 0600)`);
    expect(text).not.toContain(token);
  });
});

describe("status and uninstall with launchd (recorded launchctl)", () => {
  const print =
    "gui/501/com.orchard.agent = {\n\tstate = running\n\truns = 1\n\tpid = 4242\n\tlast exit code = (never exited)\n}\n";

  it("status: running with its pid, and the agent's last report from the state file", async () => {
    const { host, out, paths } = recordingHost("darwin", {
      "launchctl print gui/501/com.orchard.agent": { stdout: print },
    });
    await installCommand(["--gateway", gateway, "--token", token], host);
    writeFileSync(
      paths.stateFile,
      JSON.stringify({
        pid: 4242,
        agentId: "mini-svc",
        gateway: "wss://orchard.example.workers.dev/agents/connect",
        startedAt: "2026-12-02T09:00:00.000Z",
        updatedAt: "2026-12-02T10:00:20.000Z",
        intervalMs: 15000,
        connection: "connected",
        connectedAt: "2026-12-02T09:00:02.000Z",
        inFlight: 1,
        draining: false,
        generationsFinished: 12,
        models: [{ name: "llama3", engine: "llamacpp", loaded: true }],
      }),
    );
    out.length = 0;
    expect(await statusCommand([], host)).toBe(0);
    expect(out).toEqual([
      `service: launchd gui/501/com.orchard.agent: ${paths.serviceFile}`,
      "running: yes, pid 4242, last exit (never exited), 1 run(s)",
      "agent: mini-svc, pid 4242, started 2026-12-02T09:00:00.000Z; reported 10 s ago",
      "gateway: connected to wss://orchard.example.workers.dev/agents/connect since 2026-12-02T09:00:02.000Z",
      "work: 1 in flight, 12 finished since start",
      "models: llama3 (llamacpp)",
      `logs: ${paths.logFile} (rotated at 10 MiB, 4 old files kept; raw process output in ${paths.stderrFile})`,
    ]);
  });

  it("status: not loaded, a stale or stopped report, exit 1", async () => {
    const { host, out, paths } = recordingHost("darwin", {
      "launchctl print gui/501/com.orchard.agent": notLoaded,
    });
    mkdirSync(join(paths.stateFile, ".."), { recursive: true });
    writeFileSync(
      paths.stateFile,
      JSON.stringify({
        pid: 4242,
        agentId: "mini-svc",
        gateway: "wss://g/agents/connect",
        startedAt: "2026-12-02T09:00:00.000Z",
        updatedAt: "2026-12-02T09:30:00.000Z",
        intervalMs: 15000,
        connection: "stopped",
        lastError: { at: "2026-12-02T09:29:59.000Z", message: "gateway refused the agent token" },
        inFlight: 0,
        draining: false,
        generationsFinished: 0,
        models: [],
        exit: { code: 3, reason: "the hub refused the agent token", at: "2026-12-02T09:30:00.000Z" },
      }),
    );
    expect(await statusCommand([], host)).toBe(1);
    expect(out).toContain("service: launchd gui/501/com.orchard.agent: not installed");
    expect(out).toContain("running: no (not loaded in launchd)");
    expect(out).toContain("last error: 2026-12-02T09:29:59.000Z gateway refused the agent token");
    expect(out).toContain(
      "exited: 3 (token refused) at 2026-12-02T09:30:00.000Z: the hub refused the agent token",
    );
    // A report from a running agent that stopped updating is called stale.
    const stale = JSON.parse(readFileSync(paths.stateFile, "utf8"));
    writeFileSync(paths.stateFile, JSON.stringify({ ...stale, connection: "connected", exit: undefined }));
    out.length = 0;
    await statusCommand([], host);
    expect(out.find((l) => l.startsWith("agent:"))).toContain(
      "reported 1830 s ago (stale: the agent has stopped updating it)",
    );
  });

  it("uninstall boots it out and removes the plist, token and state files; the logs stay", async () => {
    const { host, ran, out, paths } = recordingHost("darwin");
    await installCommand(["--gateway", gateway, "--token", token], host);
    mkdirSync(join(paths.logFile ?? "", ".."), { recursive: true });
    writeFileSync(paths.logFile ?? "", "{}\n");
    writeFileSync(paths.stateFile, "{}");
    ran.length = 0;
    expect(await uninstallCommand([], host)).toBe(0);
    expect(ran).toEqual(["launchctl bootout gui/501/com.orchard.agent"]);
    for (const file of [paths.serviceFile, paths.tokenFile, paths.stateFile])
      expect(existsSync(file)).toBe(false);
    expect(existsSync(paths.logFile ?? "")).toBe(true);
    expect(out.at(-1)).toContain(`removed ${paths.serviceFile}`);
    // Twice is fine.
    host.run = async () => ({ ...notLoaded, stdout: "" });
    expect(await uninstallCommand([], host)).toBe(0);
    expect(out.at(-1)).toBe("orchard-agent uninstall: it was not installed");
  });
});

describe("install, status and uninstall with systemd (recorded systemctl)", () => {
  const running = { "systemctl --user is-system-running": { stdout: "running\n" } };

  it("writes the unit, reloads, enables and starts it, and notes lingering", async () => {
    const { host, ran, out, paths } = recordingHost("linux", {
      ...running,
      "systemctl --user is-active orchard-agent.service": { code: 3, stdout: "inactive\n" },
      "loginctl show-user lab --property=Linger": { stdout: "Linger=no\n" },
    });
    expect(await installCommand(["--gateway", gateway, "--token", token], host)).toBe(0);
    expect(ran).toEqual([
      "systemctl --user is-system-running",
      "systemctl --user is-active orchard-agent.service",
      "systemctl --user daemon-reload",
      "systemctl --user enable --now orchard-agent.service",
      "loginctl show-user lab --property=Linger",
    ]);
    const unit = readFileSync(paths.serviceFile, "utf8");
    expect(unit).toContain(`--token-file=${paths.tokenFile}`);
    expect(unit).not.toContain(token);
    expect(statSync(paths.tokenFile).mode & 0o777).toBe(0o600);
    expect(out).toContain(
      "orchard-agent install: note: without lingering the agent runs only while lab is logged in: loginctl enable-linger lab",
    );
    expect(out).toContain("orchard-agent install: logs: the journal: journalctl --user -u orchard-agent");
  });

  it("restarts a unit that was running, so a new configuration takes effect", async () => {
    const { host, ran } = recordingHost("linux", {
      ...running,
      "loginctl show-user lab --property=Linger": { stdout: "Linger=yes" },
    });
    expect(await installCommand(["--gateway", gateway, "--token", token], host)).toBe(0);
    expect(ran).toContain("systemctl --user restart orchard-agent.service");
  });

  it("without a user manager says so, exit 1, and writes nothing", async () => {
    const { host, ran, out, paths } = recordingHost("linux", {
      "systemctl --user is-system-running": {
        code: 1,
        stdout: "offline\n",
        stderr: "Failed to connect to bus: No medium found\n",
      },
    });
    expect(await installCommand(["--gateway", gateway, "--token", token], host)).toBe(1);
    expect(ran).toEqual(["systemctl --user is-system-running"]);
    expect(out).toEqual([
      "orchard-agent install: no systemd user manager (systemctl --user is-system-running: Failed to connect to bus: No medium found); nothing was written. Run the agent with `orchard-agent start` instead, or log in with a user session.",
    ]);
    expect(existsSync(paths.serviceFile) || existsSync(paths.tokenFile)).toBe(false);
  });

  it("status reads systemctl show; uninstall disables, removes and reloads", async () => {
    const { host, ran, out, paths } = recordingHost("linux", {
      ...running,
      "systemctl --user show orchard-agent.service --property=LoadState,ActiveState,SubState,MainPID,NRestarts,ExecMainStatus":
        {
          stdout:
            "LoadState=loaded\nActiveState=activating\nSubState=auto-restart\nMainPID=0\nNRestarts=4\nExecMainStatus=1\n",
        },
    });
    await installCommand(["--gateway", gateway, "--token", token], host);
    out.length = 0;
    expect(await statusCommand([], host)).toBe(1);
    expect(out[1]).toBe(
      "running: no (systemd: activating/auto-restart), last exit 1 (failure), 4 restart(s)",
    );
    expect(out).toContain(`agent: no state file yet (${paths.stateFile})`);
    ran.length = 0;
    expect(await uninstallCommand([], host)).toBe(0);
    expect(ran).toEqual([
      "systemctl --user is-system-running",
      "systemctl --user disable --now orchard-agent.service",
      "systemctl --user daemon-reload",
    ]);
    expect(existsSync(paths.serviceFile) || existsSync(paths.tokenFile)).toBe(false);
  });
});

// The real service managers. Where one is present these tests install, inspect and remove the
// agent for the user running them (the unit's name is fixed), so they refuse to touch an agent
// that is installed already.
const realManager = await (async (): Promise<{ ready: boolean; reason: string }> => {
  if (process.platform === "darwin") {
    const installed = existsSync(servicePaths({ platform: "darwin", home: homedir(), env: {} }).serviceFile);
    return installed
      ? { ready: false, reason: "an orchard agent is installed for this user already; not touching it" }
      : { ready: true, reason: "" };
  }
  if (process.platform !== "linux")
    return { ready: false, reason: `no launchd or systemd on ${process.platform}` };
  const { systemdUserManager } = await import("../../node-agent/service/systemd.ts");
  const manager = await systemdUserManager(runCommand);
  if (!manager.available) return { ready: false, reason: manager.reason };
  const installed = existsSync(
    servicePaths({ platform: "linux", home: homedir(), env: process.env }).serviceFile,
  );
  return installed
    ? { ready: false, reason: "an orchard agent is installed for this user already; not touching it" }
    : { ready: true, reason: "" };
})();

const cli = (args: string[], env: Record<string, string> = {}) => spawnAgent(args, { env }).exited;

describe("the real service manager", () => {
  it.skipIf(!realManager.ready)(
    `install starts the agent, status sees it run, uninstall removes it${realManager.ready ? "" : ` (skipped: ${realManager.reason})`}`,
    async () => {
      // Nothing listens on the gateway: the agent keeps reconnecting, which is running all the same.
      const install = await cli(["install", "--gateway", "http://127.0.0.1:9", "--token", token]);
      try {
        expect(install.code, install.stdout + install.stderr).toBe(0);
        let status = await cli(["status"]);
        for (let i = 0; i < 20 && status.code !== 0; i++) {
          await new Promise((resolve) => setTimeout(resolve, 500));
          status = await cli(["status"]);
        }
        expect(status.stdout).toMatch(/^running: yes, pid \d+/m);
        expect(status.code).toBe(0);
      } finally {
        const uninstall = await cli(["uninstall"]);
        expect(uninstall.code, uninstall.stdout + uninstall.stderr).toBe(0);
      }
      expect((await cli(["status"])).stdout).toContain("not installed");
    },
    60_000,
  );

  // This one runs where the others cannot: it checks what install does when no manager answers.
  const managerAbsent =
    !realManager.ready && process.platform === "linux" && realManager.reason.startsWith("no systemd");
  it.skipIf(!managerAbsent)(
    `install where systemctl --user reaches no manager exits 1 with the reason and writes nothing${managerAbsent ? "" : " (skipped: a user manager answers here, or this is not Linux)"}`,
    async () => {
      const home = mkdtempSync(join(work, "real-home-"));
      const run = await cli(["install", "--gateway", gateway, "--token", token], {
        HOME: home,
        XDG_CONFIG_HOME: join(home, ".config"),
      });
      expect(run.code).toBe(1);
      expect(run.stdout).toContain(`orchard-agent install: ${realManager.reason}; nothing was written.`);
      expect(existsSync(join(home, ".config"))).toBe(false);
    },
  );
});
