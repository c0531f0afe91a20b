// Fault injection (--fault MODEL:slow=MS | MODEL:fail=RATE): parsing and its config errors, the
// deterministic failure schedule, the delay before each piece, the error frame a failed request
// ends with, and that other models pass through untouched. The engine under the faults is a
// named test double (a fixed piece source), so timings are exact.
import { describe, expect, it } from "vitest";
import { toErrorFrame } from "../../node-agent/agent-frames.ts";
import { ConfigError, loadConfig } from "../../node-agent/config.ts";
import type { Engine, Generation, GenerationRequest } from "../../node-agent/engines/engine.ts";
import { describeFault, FaultInjectingEngine, parseFault, parseFaults } from "../../node-agent/faults.ts";

function fakeJwt(claims: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.c2ln`;
}
const base = ["--gateway", "http://127.0.0.1:8787", "--token", fakeJwt({ sub: "mini-f", role: "agent" })];

/** Test double: every model answers the same three pieces at once. */
class FixedPieceEngine implements Engine {
  readonly name = "llamacpp" as const;
  generated: string[] = [];
  listModels = async () => [];
  load = async () => {
    throw new Error("not used");
  };
  unload = async () => {};
  close = async () => {};
  generate(request: GenerationRequest): Generation {
    this.generated.push(request.model);
    const pieces = ["a", "b", "c"].map((text) => ({ text, tokens: 1 }));
    return {
      result: Promise.resolve({ finishReason: "stop", usage: { promptTokens: 1, completionTokens: 3 } }),
      async *[Symbol.asyncIterator]() {
        yield* pieces;
      },
    };
  }
}

const request = (model: string): GenerationRequest => ({ model, prompt: "hi", params: { maxTokens: 8 } });

async function drain(generation: Generation): Promise<{ text: string; times: number[] }> {
  const started = performance.now();
  const times: number[] = [];
  let text = "";
  for await (const piece of generation) {
    times.push(performance.now() - started);
    text += piece.text;
  }
  await generation.result;
  return { text, times };
}

async function outcome(generation: Generation): Promise<"ok" | "failed"> {
  try {
    await drain(generation);
    return "ok";
  } catch {
    return "failed";
  }
}

function configError(argv: string[], env: NodeJS.ProcessEnv = {}): ConfigError {
  try {
    loadConfig(argv, env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("fault specs", () => {
  it("parse a model id (bare or versioned), a kind and its value", () => {
    expect(parseFault("demo:2.0.0:slow=250")).toEqual({ model: "demo:2.0.0", kind: "slow", ms: 250 });
    expect(parseFault("demo:fail=0.25")).toEqual({ model: "demo", kind: "fail", rate: 0.25 });
    expect(parseFault("demo:1.0.0:fail")).toEqual({ model: "demo:1.0.0", kind: "fail", rate: 1 });
    for (const bad of [
      "slow=5",
      "demo",
      "demo:slow",
      "demo:slow=0",
      "demo:slow=1.5",
      "demo:fail=2",
      "demo:fail=",
      "demo:hang=1",
      "demo:fail=0.1=2",
      "Bad Name:fail",
    ]) {
      expect(typeof parseFault(bad), bad).toBe("string");
    }
    expect(parseFaults(["demo:fail=0.1", "demo:fail=0.2"])).toBe('fail is given twice for "demo"');
    expect(describeFault({ model: "demo", kind: "fail", rate: 0.25 })).toBe(
      "demo: 25% of requests fail with ENGINE_ERROR",
    );
  });

  it("come from repeated --fault flags or the comma list in ORCHARD_FAULTS, and are absent otherwise", () => {
    expect(loadConfig(base, {}).faults).toBeUndefined();
    expect(
      loadConfig([...base, "--fault", "demo:2.0.0:slow=100", "--fault", "demo:2.0.0:fail=0.5"], {}).faults,
    ).toEqual([
      { model: "demo:2.0.0", kind: "slow", ms: 100 },
      { model: "demo:2.0.0", kind: "fail", rate: 0.5 },
    ]);
    expect(loadConfig(base, { ORCHARD_FAULTS: "a:fail=0.5, b:slow=20" }).faults).toEqual([
      { model: "a", kind: "fail", rate: 0.5 },
      { model: "b", kind: "slow", ms: 20 },
    ]);
  });

  it("name the flag or the variable when a value is bad", () => {
    const flag = configError([...base, "--fault", "demo:fail=1.5"]);
    expect(flag.setting).toBe("--fault");
    expect(flag.message).toMatch(/^--fault: "demo:fail=1.5": fail needs a rate from 0 to 1/);
    expect(configError(base, { ORCHARD_FAULTS: "demo:slow=fast" }).setting).toBe("ORCHARD_FAULTS");
  });
});

describe("FaultInjectingEngine", () => {
  it("fails exactly floor(n x rate) of n requests, evenly spread, with a non-retryable ENGINE_ERROR", async () => {
    const inner = new FixedPieceEngine();
    const engine = new FaultInjectingEngine(inner, [{ model: "demo:2.0.0", kind: "fail", rate: 0.3 }]);
    const signal = new AbortController().signal;
    const results: string[] = [];
    for (let i = 0; i < 20; i++) results.push(await outcome(engine.generate(request("demo:2.0.0"), signal)));
    const failedAt = results.flatMap((r, i) => (r === "failed" ? [i + 1] : []));
    expect(failedAt).toEqual([4, 7, 10, 14, 17, 20]);
    // A failed request never reaches the engine.
    expect(inner.generated).toHaveLength(14);

    let thrown: unknown;
    try {
      await drain(
        new FaultInjectingEngine(inner, [{ model: "demo", kind: "fail", rate: 1 }]).generate(
          request("demo"),
          signal,
        ),
      );
    } catch (err) {
      thrown = err;
    }
    expect(toErrorFrame("r1", thrown)).toEqual({
      type: "error",
      id: "r1",
      code: "ENGINE_ERROR",
      message: "fault injection: demo failed this request on purpose",
      retryable: false,
    });
  });

  it("delays the first piece and each later one by the slow milliseconds", async () => {
    const engine = new FaultInjectingEngine(new FixedPieceEngine(), [
      { model: "demo:2.0.0", kind: "slow", ms: 40 },
    ]);
    const { text, times } = await drain(engine.generate(request("demo:2.0.0"), new AbortController().signal));
    expect(text).toBe("abc");
    expect(times[0]).toBeGreaterThanOrEqual(38);
    expect(times[2]).toBeGreaterThanOrEqual(3 * 38);
  });

  it("stops waiting when the request is cancelled", async () => {
    const engine = new FaultInjectingEngine(new FixedPieceEngine(), [
      { model: "demo", kind: "slow", ms: 10_000 },
    ]);
    const controller = new AbortController();
    const started = performance.now();
    setTimeout(() => controller.abort(), 20);
    const pieces = [];
    for await (const piece of engine.generate(request("demo"), controller.signal)) {
      pieces.push(piece);
      if (controller.signal.aborted) break;
    }
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it("applies a bare name's fault to every version, a versioned one to that version only", async () => {
    const signal = new AbortController().signal;
    const bare = new FaultInjectingEngine(new FixedPieceEngine(), [{ model: "demo", kind: "fail", rate: 1 }]);
    expect(await outcome(bare.generate(request("demo:1.0.0"), signal))).toBe("failed");
    expect(await outcome(bare.generate(request("demo"), signal))).toBe("failed");
    expect(await outcome(bare.generate(request("demo-other"), signal))).toBe("ok");
    const versioned = new FaultInjectingEngine(new FixedPieceEngine(), [
      { model: "demo:2.0.0", kind: "fail", rate: 1 },
    ]);
    expect(await outcome(versioned.generate(request("demo:1.0.0"), signal))).toBe("ok");
    expect(await outcome(versioned.generate(request("demo"), signal))).toBe("ok");
  });
});
