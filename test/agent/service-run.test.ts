// `start` as a service runs it: the size-rotated log file, the state file `status` reads, and the
// flags that turn them on.
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError } from "../../node-agent/config.ts";
import { RotatingLogFile } from "../../node-agent/service/rotating-log.ts";
import { openServiceRun, takeServiceRunFlags } from "../../node-agent/service/service-run.ts";
import { AgentStateWriter, readStateFile } from "../../node-agent/service/state-file.ts";

const dir = mkdtempSync(join(tmpdir(), "orchard-service-run-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = (name: string) => join(mkdtempSync(join(dir, `${n++}-`)), name);

describe("RotatingLogFile", () => {
  it("rotates before a line would pass the limit, keeps `keep` old files, and never splits a line", () => {
    const path = fresh("agent.log");
    const log = new RotatingLogFile(path, { maxBytes: 100, keep: 2 });
    const lines = Array.from(
      { length: 12 },
      (_, i) => `line ${String(i).padStart(2, "0")} ${"x".repeat(22)}`,
    ); // 31 bytes + \n
    for (const line of lines) log.writeLine(line);
    log.close();
    // 3 lines (96 bytes) fit per file; 12 lines make 4 files, of which the oldest went away.
    expect(readdirSync(join(path, "..")).sort()).toEqual(["agent.log", "agent.log.1", "agent.log.2"]);
    const read = (file: string) => readFileSync(file, "utf8").trimEnd().split("\n");
    expect(read(path)).toEqual(lines.slice(9, 12));
    expect(read(`${path}.1`)).toEqual(lines.slice(6, 9));
    expect(read(`${path}.2`)).toEqual(lines.slice(3, 6));
    for (const file of [path, `${path}.1`, `${path}.2`]) expect(statSync(file).size).toBeLessThanOrEqual(100);
  });

  it("appends to an existing file, counting what it holds, and gives an over-long line a file to itself", () => {
    const path = fresh("agent.log");
    writeFileSync(path, `${"a".repeat(60)}\n`);
    const log = new RotatingLogFile(path, { maxBytes: 100, keep: 3 });
    log.writeLine("b".repeat(30)); // 61 + 31 = 92: fits
    log.writeLine("c".repeat(150)); // does not fit: rotates, then stands alone
    log.writeLine("d"); // does not fit beside it: rotates again
    log.close();
    expect(readFileSync(`${path}.2`, "utf8")).toBe(`${"a".repeat(60)}\n${"b".repeat(30)}\n`);
    expect(readFileSync(`${path}.1`, "utf8")).toBe(`${"c".repeat(150)}\n`);
    expect(readFileSync(path, "utf8")).toBe("d\n");
  });
});

describe("AgentStateWriter", () => {
  const clock = () => {
    let t = Date.parse("2026-12-02T10:00:00.000Z");
    return { now: () => new Date(t), advance: (ms: number) => (t += ms) };
  };

  it("writes what the agent samples, follows connected/disconnected/error log records, and the exit", async () => {
    const path = fresh("agent-state.json");
    const time = clock();
    let inFlight = 2;
    const writer = new AgentStateWriter({
      path,
      agentId: "mini-1",
      gateway: "wss://g/agents/connect",
      now: time.now,
      pid: 4242,
      sample: async () => ({
        inFlight,
        draining: false,
        generationsFinished: 7,
        models: [{ name: "demo", engine: "llamacpp", loaded: true }],
      }),
    });
    await writer.write();
    let read = readStateFile(path);
    expect(read).toMatchObject({ ok: true, state: { connection: "connecting", inFlight: 2, pid: 4242 } });

    writer.observe({ msg: "connected", level: "info", time: "2026-12-02T10:00:01.000Z" });
    await writer.write();
    expect(readStateFile(path)).toMatchObject({
      ok: true,
      state: { connection: "connected", connectedAt: "2026-12-02T10:00:01.000Z" },
    });

    writer.observe({
      msg: "disconnected",
      level: "info",
      code: 1006,
      reason: "",
      time: "2026-12-02T10:00:05.000Z",
    });
    writer.observe({
      msg: "gateway refused the agent token",
      level: "error",
      time: "2026-12-02T10:00:06.000Z",
    });
    writer.observe({ msg: "generation started", level: "info" }); // not a connection change
    inFlight = 0;
    time.advance(10_000);
    await writer.stop({ code: 3, reason: "the hub refused the agent token" });
    read = readStateFile(path);
    if (!read.ok) throw new Error(read.reason);
    expect(read.state).toEqual({
      pid: 4242,
      agentId: "mini-1",
      gateway: "wss://g/agents/connect",
      startedAt: "2026-12-02T10:00:00.000Z",
      updatedAt: "2026-12-02T10:00:10.000Z",
      intervalMs: 15_000,
      connection: "stopped",
      lastDisconnect: { at: "2026-12-02T10:00:05.000Z", message: "disconnected", code: 1006 },
      lastError: { at: "2026-12-02T10:00:06.000Z", message: "gateway refused the agent token" },
      inFlight: 0,
      draining: false,
      generationsFinished: 7,
      models: [{ name: "demo", engine: "llamacpp", loaded: true }],
      exit: { code: 3, reason: "the hub refused the agent token", at: "2026-12-02T10:00:10.000Z" },
    });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readdirSync(join(path, ".."))).toEqual(["agent-state.json"]); // no temporary file left
  });

  it("keeps writing when sampling fails, and a change during a write is written after it", async () => {
    const path = fresh("agent-state.json");
    let calls = 0;
    let release: () => void = () => {};
    const writer = new AgentStateWriter({
      path,
      agentId: "a",
      gateway: "g",
      sample: async () => {
        calls += 1;
        if (calls === 1) await new Promise<void>((resolve) => (release = resolve));
        if (calls === 2) throw new Error("engine gone");
        return { inFlight: 0, draining: false, generationsFinished: 0, models: [] };
      },
    });
    const first = writer.write();
    writer.observe({ msg: "connected", time: "t1" }); // asks for one more write
    release();
    await first;
    expect(calls).toBe(2);
    expect(readStateFile(path)).toMatchObject({ ok: true, state: { connection: "connected" } });
  });

  it("reads a missing or foreign file as a reason, not a crash", () => {
    expect(readStateFile(join(dir, "none.json"))).toEqual({
      ok: false,
      reason: `no state file yet (${join(dir, "none.json")})`,
    });
    const other = fresh("x.json");
    writeFileSync(other, '{"hello":1}');
    expect(readStateFile(other)).toEqual({ ok: false, reason: `${other} is not an agent state file` });
    writeFileSync(other, "not json");
    expect(readStateFile(other).ok).toBe(false);
  });
});

describe("service flags of start", () => {
  it("takes --log-file and --state-file (either form) out of start's flags and makes them absolute", () => {
    const { flags, rest } = takeServiceRunFlags([
      "--gateway",
      "http://x",
      "--log-file",
      "logs/agent.log",
      "--state-file=/s/state.json",
      "--capacity",
      "2",
    ]);
    expect(flags).toEqual({ logFile: join(process.cwd(), "logs/agent.log"), stateFile: "/s/state.json" });
    expect(rest).toEqual(["--gateway", "http://x", "--capacity", "2"]);
    expect(() => takeServiceRunFlags(["--log-file"])).toThrow(ConfigError);
    expect(() => takeServiceRunFlags(["--state-file="])).toThrow("--state-file: needs a file");
  });

  it("logs to the file at the configured level, while the state file still sees info records", async () => {
    const logFile = fresh("agent.log");
    const stateFile = join(logFile, "..", "state", "agent-state.json");
    const run = openServiceRun(
      { logFile, stateFile },
      { logLevel: "warn", agentId: "a", gatewayUrl: "ws://g" },
    );
    run.attach(
      { inFlight: 1, draining: true, stats: { generationsFinished: 3 } },
      { listModels: async () => [{ name: "m", engine: "mlx", loaded: false, contextLength: 9 }] },
    );
    run.log.info("connected", { sessionId: "s" });
    run.log.warn("heartbeat timeout", { intervalMs: 10 });
    run.log.child({ engine: "mlx" }).error("child died");
    await run.finish({ exitCode: 0, reason: "drained" });
    const lines = readFileSync(logFile, "utf8")
      .trimEnd()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      ["warn", "heartbeat timeout"],
      ["error", "child died"],
    ]);
    const read = readStateFile(stateFile);
    if (!read.ok) throw new Error(read.reason);
    expect(read.state).toMatchObject({
      connection: "stopped",
      lastError: { message: "child died" },
      inFlight: 1,
      draining: true,
      generationsFinished: 3,
      models: [{ name: "m", engine: "mlx", loaded: false }],
      exit: { code: 0, reason: "drained" },
    });
    expect(read.state.connectedAt).toBeDefined(); // the info record the log file did not get
  });

  it("without service flags is start's plain stderr logger at the configured level", () => {
    expect(openServiceRun({}, { logLevel: "warn", agentId: "a", gatewayUrl: "ws://g" }).log.level).toBe(
      "warn",
    );
    // With a state file, records down to info are made (and filtered on the way out).
    const stateFile = fresh("agent-state.json");
    expect(
      openServiceRun({ stateFile }, { logLevel: "warn", agentId: "a", gatewayUrl: "ws://g" }).log.level,
    ).toBe("info");
  });
});
