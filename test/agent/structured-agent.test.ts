// Structured output in the agent: a generate frame's `format` reaches the engine, the agent offers
// structured_output exactly when an engine enforces formats, and --structured-output off keeps
// the format from the engines and the capability out of hello (the gateway then validates alone).
import { afterEach, describe, expect, it, vi } from "vitest";
import { ConfigError, loadConfig } from "../../node-agent/config.ts";
import type { EngineInfo } from "../../schema/protocol.ts";
import { cleanUp, generate, ScriptedTestEngine, setup } from "./scripted-hub.ts";

/** The scripted engine, described as an engine that enforces formats the way llama.cpp does. */
class EnforcingTestEngine extends ScriptedTestEngine {
  constructor(
    private readonly info: EngineInfo = { name: "llamacpp", capabilities: ["json_schema_grammar"] },
  ) {
    super();
  }

  async describe(): Promise<EngineInfo[]> {
    return [this.info];
  }
}

const schema = {
  type: "object",
  properties: { city: { type: "string", maxLength: 20 }, sunny: { type: "boolean" } },
  required: ["city"],
};

afterEach(cleanUp);

describe("structured output in the agent", () => {
  it("hands the frame's format to the engine and offers structured_output when an engine enforces it", async () => {
    const engine = new EnforcingTestEngine();
    const { hub, logLines } = await setup({}, { engine });
    const conn = await hub.connection(0);
    expect(conn.of("hello")[0]?.capabilities).toEqual(["load", "duplicate_answer", "structured_output"]);
    expect(conn.of("hello")[0]?.engineInfo).toEqual([
      { name: "llamacpp", capabilities: ["json_schema_grammar"] },
    ]);
    await vi.waitFor(() => expect(logLines.find((l) => l.msg === "connected")).toBeDefined());
    expect(logLines.find((l) => l.msg === "connected")?.capabilities).toEqual([
      "duplicate_answer",
      "load",
      "structured_output",
    ]);
    engine.script = { pieces: ['{"city":"x"}'] };
    conn.send(generate("s1", { format: schema }));
    await conn.waitFor("done", (d) => d.id === "s1");
    conn.send(generate("s2", { format: "json" }));
    await conn.waitFor("done", (d) => d.id === "s2");
    conn.send(generate("s3"));
    await conn.waitFor("done", (d) => d.id === "s3");
    expect(engine.requests.map((r) => r.format)).toEqual([schema, "json", undefined]);
    expect("format" in (engine.requests[2] ?? {})).toBe(false);
  });

  it("offers structured_output for Ollama's format too", async () => {
    const engine = new EnforcingTestEngine({ name: "ollama", capabilities: ["format"] });
    const { hub } = await setup({}, { engine });
    const conn = await hub.connection(0);
    expect(conn.of("hello")[0]?.capabilities).toContain("structured_output");
  });

  it("does not offer structured_output when no engine enforces, and still passes the format on", async () => {
    const engine = new EnforcingTestEngine({ name: "mlx", capabilities: [] });
    const { hub } = await setup({}, { engine });
    const conn = await hub.connection(0);
    expect(conn.of("hello")[0]?.capabilities).toEqual(["load", "duplicate_answer"]);
    conn.send(generate("m1", { format: schema }));
    await conn.waitFor("done", (d) => d.id === "m1");
    // An engine that cannot enforce ignores it; the gateway validates the output either way.
    expect(engine.requests[0]?.format).toEqual(schema);
  });

  it("with structuredOutput off keeps the format from the engine and structured_output out of hello", async () => {
    const engine = new EnforcingTestEngine();
    // A hub that would use structured_output if offered: the agent still must not take it.
    const { hub, logLines } = await setup(
      { capabilities: ["load", "duplicate_answer", "structured_output"] },
      { engine, structuredOutput: false },
    );
    const conn = await hub.connection(0);
    expect(conn.of("hello")[0]?.capabilities).toEqual(["load", "duplicate_answer"]);
    await vi.waitFor(() => expect(logLines.find((l) => l.msg === "connected")).toBeDefined());
    expect(logLines.find((l) => l.msg === "connected")?.capabilities).toEqual(["duplicate_answer", "load"]);
    conn.send(generate("o1", { format: schema }));
    const done = await conn.waitFor("done", (d) => d.id === "o1");
    expect(done.finishReason).toBe("stop");
    expect(engine.requests).toHaveLength(1);
    expect("format" in (engine.requests[0] ?? {})).toBe(false);
  });
});

describe("--structured-output", () => {
  const claims = Buffer.from(JSON.stringify({ sub: "mini-07", role: "agent" })).toString("base64url");
  const base = ["--gateway", "http://127.0.0.1:8787", "--token", `e30.${claims}.c2ln`];

  it("is on by default, off with the flag or ORCHARD_STRUCTURED_OUTPUT (the flag wins)", () => {
    expect(loadConfig(base, {}).structuredOutput).toBe(true);
    expect(loadConfig([...base, "--structured-output", "off"], {}).structuredOutput).toBe(false);
    expect(loadConfig(base, { ORCHARD_STRUCTURED_OUTPUT: "off" }).structuredOutput).toBe(false);
    expect(
      loadConfig([...base, "--structured-output", "on"], { ORCHARD_STRUCTURED_OUTPUT: "off" })
        .structuredOutput,
    ).toBe(true);
  });

  it("refuses anything but on or off, naming the flag", () => {
    let error: unknown;
    try {
      loadConfig([...base, "--structured-output", "maybe"], {});
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).message).toBe("--structured-output: must be on or off");
  });
});
