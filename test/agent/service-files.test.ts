// The launchd plist and the systemd unit `install` writes: pure functions of the configuration,
// read back by parsers that are not the generator (a small strict XML plist reader here, Python's
// plistlib and macOS's plutil where present, systemd-analyze verify where present).
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type ServiceDefinition, serviceDefinition } from "../../node-agent/service/definition.ts";
import { launchdPlist, parseLaunchctlPrint } from "../../node-agent/service/launchd.ts";
import { servicePaths } from "../../node-agent/service/paths.ts";
import { parseSystemctlShow, systemdUnit, systemdWord } from "../../node-agent/service/systemd.ts";

const work = mkdtempSync(join(tmpdir(), "orchard-service-files-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const macPaths = servicePaths({ platform: "darwin", home: "/Users/lab", env: {} });
const linuxPaths = servicePaths({ platform: "linux", home: "/home/lab", env: {} });
const launch = {
  node: "/opt/homebrew/bin/node",
  nodeArgs: [],
  entry: "/opt/homebrew/lib/node_modules/@orchard/agent/dist/main.js",
};
const agentArgs = [
  "--gateway=https://orchard.example.workers.dev",
  '--model=llama3=/Users/lab/models/R&D <v2>/llama "q4".gguf',
  "--token-file=/Users/lab/Library/Application Support/Orchard/agent-token",
];

function definitionFor(paths = macPaths, drainTimeoutMs = 30_000): ServiceDefinition {
  return serviceDefinition(launch, agentArgs, paths, { workingDirectory: "/Users/lab", drainTimeoutMs });
}

type PlistValue = string | number | boolean | PlistValue[] | { [key: string]: PlistValue };

/** A strict reader for the XML plist subset launchd uses: dict, array, key, string, integer, true, false. */
function parsePlist(xml: string): PlistValue {
  const body = xml
    .replace(/^<\?xml[^>]*\?>\s*/, "")
    .replace(/^<!DOCTYPE plist[^>]*>\s*/, "")
    .replace(/<!--([\s\S]*?)-->/g, (_, comment: string) => {
      if (comment.includes("--")) throw new Error('an XML comment may not contain "--"');
      return "";
    });
  const tokens = [...body.matchAll(/<(\/?)([a-z]+)(?: version="1\.0")?(\/?)>|([^<]+)/g)].filter(
    (m) => m[4] === undefined || m[4].trim() !== "",
  );
  let at = 0;
  const next = () => {
    const token = tokens[at++];
    if (!token) throw new Error("unexpected end of plist");
    return token;
  };
  const text = (): string => {
    const token = tokens[at];
    if (token?.[4] === undefined) return "";
    at++;
    if (/[<>]|&(?!amp;|lt;|gt;|quot;|apos;)/.test(token[4])) throw new Error(`bad text ${token[4]}`);
    return token[4]
      .replace(/&lt;/g, "<")
      .replace(/&gt;/g, ">")
      .replace(/&quot;/g, '"')
      .replace(/&apos;/g, "'")
      .replace(/&amp;/g, "&");
  };
  const close = (tag: string) => {
    const token = next();
    if (token[1] !== "/" || token[2] !== tag) throw new Error(`expected </${tag}>, got ${token[0]}`);
  };
  const value = (): PlistValue => {
    const token = next();
    if (token[1] === "/" || token[4] !== undefined) throw new Error(`unexpected ${token[0]}`);
    const tag = token[2];
    if (token[3] === "/") {
      if (tag === "true") return true;
      if (tag === "false") return false;
      throw new Error(`unexpected <${tag}/>`);
    }
    if (tag === "string") {
      const s = text();
      close("string");
      return s;
    }
    if (tag === "integer") {
      const n = text();
      close("integer");
      if (!/^-?\d+$/.test(n)) throw new Error(`bad integer ${n}`);
      return Number(n);
    }
    if (tag === "array") {
      const items: PlistValue[] = [];
      while (tokens[at]?.[1] !== "/") items.push(value());
      close("array");
      return items;
    }
    if (tag === "dict") {
      const dict: Record<string, PlistValue> = {};
      while (tokens[at]?.[1] !== "/") {
        const key = next();
        if (key[2] !== "key") throw new Error(`expected <key>, got ${key[0]}`);
        const name = text();
        close("key");
        if (name in dict) throw new Error(`duplicate key ${name}`);
        dict[name] = value();
      }
      close("dict");
      return dict;
    }
    if (tag === "plist") {
      const inner = value();
      close("plist");
      return inner;
    }
    throw new Error(`unexpected <${tag}>`);
  };
  const result = value();
  if (at !== tokens.length) throw new Error("trailing content after </plist>");
  return result;
}

const has = (command: string) => spawnSync("sh", ["-c", `command -v ${command}`]).status === 0;
/** The reason in a test's title, where it is skipped for want of `command`. */
const unless = (command: string, reason: string) => (has(command) ? "" : ` (skipped: ${reason})`);

describe("launchd plist", () => {
  const plist = launchdPlist(definitionFor());
  const parsed = parsePlist(plist) as Record<string, PlistValue>;

  it("has the label, the command, restart on failure with throttling, the drain's stop timeout and the logs", () => {
    expect(parsed).toEqual({
      Label: "com.orchard.agent",
      ProgramArguments: [
        "/opt/homebrew/bin/node",
        "/opt/homebrew/lib/node_modules/@orchard/agent/dist/main.js",
        "start",
        ...agentArgs,
        "--state-file",
        "/Users/lab/Library/Application Support/Orchard/agent-state.json",
        "--log-file",
        "/Users/lab/Library/Logs/Orchard/agent.log",
      ],
      WorkingDirectory: "/Users/lab",
      RunAtLoad: true,
      KeepAlive: { SuccessfulExit: false },
      ThrottleInterval: 10,
      ExitTimeOut: 40,
      StandardOutPath: "/Users/lab/Library/Logs/Orchard/agent.stderr.log",
      StandardErrorPath: "/Users/lab/Library/Logs/Orchard/agent.stderr.log",
    });
  });

  it("escapes XML in arguments (a path with &, < and quotes survives the round trip)", () => {
    expect(plist).toContain("R&amp;D &lt;v2&gt;");
    expect((parsed.ProgramArguments as string[])[4]).toBe(agentArgs[1]);
  });

  it("waits the drain timeout plus a margin before SIGKILL", () => {
    expect(
      (parsePlist(launchdPlist(definitionFor(macPaths, 120_500))) as Record<string, unknown>).ExitTimeOut,
    ).toBe(131);
  });

  it("is a pure function of the definition", () => {
    expect(launchdPlist(definitionFor())).toBe(plist);
  });

  it("ops/launchd/com.orchard.agent.plist is what install writes for its example settings", () => {
    // The example operators can read before installing; regenerate it when the generator changes.
    const example = serviceDefinition(
      launch,
      [
        "--gateway=https://orchard.example.workers.dev",
        "--model=llama3=/Users/lab/models/llama-3.1-8b-instruct-q4_k_m.gguf",
        `--token-file=${macPaths.tokenFile}`,
      ],
      macPaths,
      { workingDirectory: "/Users/lab", drainTimeoutMs: 30_000 },
    );
    const file = join(import.meta.dirname, "..", "..", "ops", "launchd", "com.orchard.agent.plist");
    expect(readFileSync(file, "utf8")).toBe(launchdPlist(example));
  });

  it.skipIf(!has("python3"))(
    `is a plist to Python's plistlib (an independent parser of Apple's format)${unless("python3", "python3 is not installed here")}`,
    () => {
      const file = join(work, "agent.plist");
      writeFileSync(file, plist);
      const script = "import json,plistlib,sys; print(json.dumps(plistlib.load(open(sys.argv[1],'rb'))))";
      const run = spawnSync("python3", ["-c", script, file], { encoding: "utf8" });
      expect(run.stderr).toBe("");
      expect(JSON.parse(run.stdout)).toEqual(parsed);
    },
  );

  it.skipIf(!has("plutil"))(
    `passes plutil -lint${unless("plutil", "plutil exists only on macOS, and this is not one")}`,
    () => {
      const file = join(work, "lint.plist");
      writeFileSync(file, plist);
      const run = spawnSync("plutil", ["-lint", file], { encoding: "utf8" });
      expect(run.status, run.stdout + run.stderr).toBe(0);
    },
  );
});

describe("systemd unit", () => {
  const unit = systemdUnit(definitionFor(linuxPaths));

  it("restarts on failure after RestartSec, never for the exits that would fail again, drains on stop", () => {
    const lines = unit.split("\n");
    for (const line of [
      "[Service]",
      "Type=exec",
      "Restart=on-failure",
      "RestartSec=10",
      "RestartPreventExitStatus=2 3 4",
      "KillMode=mixed",
      "TimeoutStopSec=40",
      "StandardError=journal",
      "WorkingDirectory=/Users/lab",
      "[Install]",
      "WantedBy=default.target",
    ]) {
      expect(lines).toContain(line);
    }
    const exec = lines.find((l) => l.startsWith("ExecStart="));
    expect(exec).toBe(
      `ExecStart=/opt/homebrew/bin/node /opt/homebrew/lib/node_modules/@orchard/agent/dist/main.js start --gateway=https://orchard.example.workers.dev "--model=llama3=/Users/lab/models/R&D <v2>/llama \\"q4\\".gguf" "--token-file=/Users/lab/Library/Application Support/Orchard/agent-token" --state-file /home/lab/.local/state/orchard/agent-state.json`,
    );
    // The journal keeps (and rotates) the logs: no log file flag.
    expect(unit).not.toContain("--log-file");
  });

  it("quotes ExecStart words as systemd splits them", () => {
    expect(systemdWord("/usr/bin/node")).toBe("/usr/bin/node");
    expect(systemdWord("--gateway=https://x:8787/p")).toBe("--gateway=https://x:8787/p");
    expect(systemdWord("a b")).toBe('"a b"');
    expect(systemdWord("50%")).toBe("50%%"); // a specifier otherwise
    expect(systemdWord("$HOME")).toBe('"$$HOME"'); // a variable otherwise
    expect(systemdWord('say "hi"\\')).toBe('"say \\"hi\\"\\\\"');
    expect(systemdWord("")).toBe('""');
    expect(systemdWord("a;b")).toBe('"a;b"');
    // systemd expands no variables in the program's path: a doubled $ would stay two.
    expect(systemdWord("/opt/$x/node", "program")).toBe('"/opt/$x/node"');
  });

  it("is a pure function of the definition", () => {
    expect(systemdUnit(definitionFor(linuxPaths))).toBe(unit);
  });

  const analyze = has("systemd-analyze");
  /** systemd-analyze verify --user needs a runtime folder; a private one keeps it off the host's. */
  function verify(text: string, name = "orchard-agent.service") {
    const dir = mkdtempSync(join(work, "unit-"));
    const runtime = join(dir, "runtime");
    mkdirSync(runtime, { mode: 0o700 });
    const file = join(dir, name);
    writeFileSync(file, text);
    return spawnSync("systemd-analyze", ["verify", "--user", file], {
      encoding: "utf8",
      env: { ...process.env, XDG_RUNTIME_DIR: runtime },
    });
  }
  /** A node that exists at a path needing every kind of quoting: systemd checks ExecStart's program. */
  function awkwardNode(): string {
    const dir = join(work, "odd dir 100% $HOME");
    mkdirSync(dir, { recursive: true });
    const node = join(dir, "node");
    symlinkSync(process.execPath, node);
    return node;
  }

  it.skipIf(!analyze)(
    `passes systemd-analyze verify, with the program at a path that needs quoting${unless("systemd-analyze", "systemd-analyze is not installed (Debian package systemd)")}`,
    () => {
      const node = awkwardNode();
      const entry = join(work, "main.js");
      writeFileSync(entry, "");
      const def = serviceDefinition({ node, nodeArgs: [], entry }, agentArgs, linuxPaths, {
        workingDirectory: work,
        drainTimeoutMs: 30_000,
      });
      const run = verify(systemdUnit(def));
      expect(run.stderr).toBe("");
      expect(run.status).toBe(0);
      // The check has teeth: the same unit with the program left unquoted names a missing one.
      const broken = systemdUnit(def).replace(systemdWord(node, "program"), node);
      const bad = verify(broken, "broken.service");
      expect(bad.status).not.toBe(0);
      expect(bad.stderr).toMatch(/not executable|No such file/);
      // ... and it reports a key systemd does not know, which a typo in the generator would be.
      expect(
        verify(systemdUnit(def).replace("RestartSec=", "RestartSecs="), "typo.service").stderr,
      ).toContain("Unknown key");
    },
  );
});

describe("service paths", () => {
  it("puts a Mac's files in LaunchAgents, Application Support and Logs", () => {
    expect(macPaths).toEqual({
      manager: "launchd",
      serviceFile: "/Users/lab/Library/LaunchAgents/com.orchard.agent.plist",
      tokenFile: "/Users/lab/Library/Application Support/Orchard/agent-token",
      stateFile: "/Users/lab/Library/Application Support/Orchard/agent-state.json",
      logFile: "/Users/lab/Library/Logs/Orchard/agent.log",
      stderrFile: "/Users/lab/Library/Logs/Orchard/agent.stderr.log",
    });
  });

  it("follows XDG on Linux, ignoring relative values as the spec says", () => {
    expect(
      servicePaths({
        platform: "linux",
        home: "/home/lab",
        env: { XDG_CONFIG_HOME: "/cfg", XDG_STATE_HOME: "/st" },
      }),
    ).toEqual({
      manager: "systemd",
      serviceFile: "/cfg/systemd/user/orchard-agent.service",
      tokenFile: "/cfg/orchard/agent-token",
      stateFile: "/st/orchard/agent-state.json",
    });
    expect(
      servicePaths({ platform: "linux", home: "/home/lab", env: { XDG_CONFIG_HOME: "rel" } }).serviceFile,
    ).toBe("/home/lab/.config/systemd/user/orchard-agent.service");
  });

  it("refuses other platforms", () => {
    expect(() => servicePaths({ platform: "win32", home: "C:\\", env: {} })).toThrow(
      "install supports macOS (launchd) and Linux (systemd --user), not win32",
    );
  });
});

describe("service manager output", () => {
  // The shape of `launchctl print gui/<uid>/<label>` (macOS 13/14), written from its documented
  // output; no Mac has run these tests, so this checks the reader, not launchctl.
  const print = [
    "gui/501/com.orchard.agent = {",
    "\tactive count = 1",
    "\tpath = /Users/lab/Library/LaunchAgents/com.orchard.agent.plist",
    "\ttype = LaunchAgent",
    "\tstate = running",
    "",
    "\tprogram = /opt/homebrew/bin/node",
    "\targuments = {",
    "\t\t/opt/homebrew/bin/node",
    "\t\tstate = not-a-field",
    "\t}",
    "",
    "\truns = 3",
    "\tpid = 4242",
    "\tlast exit code = 1",
    "}",
  ].join("\n");

  it("reads launchctl print's top-level fields and not the nested ones", () => {
    expect(parseLaunchctlPrint(print)).toEqual({
      loaded: true,
      state: "running",
      pid: 4242,
      lastExit: "1",
      runs: 3,
    });
    expect(
      parseLaunchctlPrint("gui/501/x = {\n\tstate = waiting\n\tlast exit code = (never exited)\n}"),
    ).toEqual({
      loaded: true,
      state: "waiting",
      lastExit: "(never exited)",
    });
  });

  it("reads systemctl show's properties", () => {
    expect(
      parseSystemctlShow(
        "LoadState=loaded\nActiveState=active\nSubState=running\nMainPID=77\nNRestarts=2\nExecMainStatus=0\nOther=x\n",
      ),
    ).toEqual({
      LoadState: "loaded",
      ActiveState: "active",
      SubState: "running",
      MainPID: "77",
      NRestarts: "2",
      ExecMainStatus: "0",
    });
  });
});
