// Agent configuration from flags and environment: defaults, conversions, and one clear error per
// bad setting that names the flag or variable it came from.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { homedir, hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig, parseModelSpec } from "../../node-agent/config.ts";

/** An unsigned JWT with the given claims; the agent only decodes it, the gateway verifies. */
function fakeJwt(claims: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.c2lnbmF0dXJl`;
}

const token = fakeJwt({ sub: "mini-07", role: "agent", exp: 4_000_000_000 });
const base = ["--gateway", "http://127.0.0.1:8787", "--token", token];

const dir = mkdtempSync(join(tmpdir(), "orchard-config-"));
const modelA = join(dir, "tiny-llama.gguf");
const modelB = join(dir, "other.gguf");
writeFileSync(modelA, "GGUF");
writeFileSync(modelB, "GGUF");
const spacedModel = join(dir, "my model.gguf");
writeFileSync(spacedModel, "GGUF");
mkdirSync(join(dir, "a-directory.gguf"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function configError(argv: string[], env: NodeJS.ProcessEnv = {}): ConfigError {
  try {
    loadConfig(argv, env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("loadConfig", () => {
  it("fills every default from a gateway URL and a token", () => {
    const config = loadConfig(base, {});
    expect(config).toEqual({
      gatewayUrl: "ws://127.0.0.1:8787/agents/connect",
      gatewayHttpUrl: "http://127.0.0.1:8787",
      token,
      agentId: "mini-07",
      name: hostname(),
      engine: "auto",
      models: [],
      useDemoModel: true,
      capacity: 4,
      cacheDir: join(homedir(), ".cache", "orchard"),
      cacheBudgetBytes: 50 * 1024 ** 3,
      flushMs: 16,
      structuredOutput: true,
      maxProtocol: 2,
      drainTimeoutMs: 30_000,
      backoffBaseMs: 500,
      backoffMaxMs: 30_000,
      logLevel: "info",
    });
  });

  it.each([
    [
      "https://orchard.example.com",
      "wss://orchard.example.com/agents/connect",
      "https://orchard.example.com",
    ],
    ["wss://orchard.example.com/", "wss://orchard.example.com/agents/connect", "https://orchard.example.com"],
    ["ws://localhost:8787/agents/connect", "ws://localhost:8787/agents/connect", "http://localhost:8787"],
    [
      "https://example.com/orchard/",
      "wss://example.com/orchard/agents/connect",
      "https://example.com/orchard",
    ],
  ])("converts gateway %s", (input, ws, http) => {
    const config = loadConfig(["--gateway", input, "--token", token], {});
    expect(config.gatewayUrl).toBe(ws);
    expect(config.gatewayHttpUrl).toBe(http);
  });

  it("reads the environment, and a flag wins over its variable", () => {
    const env = {
      ORCHARD_GATEWAY_URL: "https://gw.example.com",
      ORCHARD_AGENT_TOKEN: token,
      ORCHARD_AGENT_NAME: "lab-mini",
      ORCHARD_CAPACITY: "8",
      ORCHARD_THREADS: "2",
      ORCHARD_CACHE_DIR: "~/orchard-cache",
      ORCHARD_CACHE_BUDGET: "20G",
      ORCHARD_FLUSH_MS: "5",
      ORCHARD_MAX_PROTOCOL: "1",
      ORCHARD_DRAIN_TIMEOUT_MS: "1000",
      ORCHARD_LOG_LEVEL: "debug",
      ORCHARD_MODEL_PATH: `${modelA}, named=${modelB}`,
    };
    const config = loadConfig(["--capacity", "2"], env);
    expect(config).toMatchObject({
      gatewayUrl: "wss://gw.example.com/agents/connect",
      name: "lab-mini",
      capacity: 2,
      threads: 2,
      cacheDir: join(homedir(), "orchard-cache"),
      cacheBudgetBytes: 20 * 1024 ** 3,
      flushMs: 5,
      maxProtocol: 1,
      drainTimeoutMs: 1000,
      logLevel: "debug",
      useDemoModel: false,
      models: [
        { name: "tiny-llama", path: modelA },
        { name: "named", path: modelB },
      ],
    });
  });

  it("takes repeated --model flags, named (with or without a version) or from the file name", () => {
    const config = loadConfig(
      [...base, "--model", modelA, "--model", `qwen2.5:0.5b=${modelB}`, "--model", `tiny:1.2.0=${modelA}`],
      {},
    );
    expect(config.models).toEqual([
      { name: "tiny-llama", path: modelA },
      { name: "qwen2.5:0.5b", path: modelB },
      { name: "tiny:1.2.0", path: modelA },
    ]);
    expect(config.useDemoModel).toBe(false);
  });

  it.each([
    ["20G", 20 * 1024 ** 3],
    ["512M", 512 * 1024 ** 2],
    ["1.5T", 1.5 * 1024 ** 4],
    ["64GiB", 64 * 1024 ** 3],
    ["2gb", 2 * 1024 ** 3],
    ["1048576", 1024 * 1024],
  ])("reads --cache-budget %s as %d bytes", (value, bytes) => {
    expect(loadConfig([...base, "--cache-budget", value], {}).cacheBudgetBytes).toBe(bytes);
  });

  it("accepts an --id equal to the token's subject", () => {
    expect(loadConfig([...base, "--id", "mini-07"], {}).agentId).toBe("mini-07");
  });
});

describe("loadConfig errors name the setting", () => {
  it.each<[string, string[], NodeJS.ProcessEnv, string, RegExp]>([
    ["missing gateway", ["--token", token], {}, "--gateway", /ORCHARD_GATEWAY_URL/],
    ["missing token", ["--gateway", "http://x"], {}, "--token", /ORCHARD_AGENT_TOKEN/],
    ["gateway not a URL", ["--gateway", "nope", "--token", token], {}, "--gateway", /not a URL/],
    ["gateway scheme", ["--gateway", "ftp://x", "--token", token], {}, "--gateway", /http\(s\)/],
    ["env gateway", ["--token", token], { ORCHARD_GATEWAY_URL: "ftp://x" }, "ORCHARD_GATEWAY_URL", /http/],
    ["token not a JWT", ["--gateway", "http://x", "--token", "abc"], {}, "--token", /not a JWT/],
    [
      "token without sub",
      ["--gateway", "http://x", "--token", fakeJwt({ role: "agent" })],
      {},
      "--token",
      /sub/,
    ],
    [
      "token of another role",
      ["--gateway", "http://x", "--token", fakeJwt({ sub: "a", role: "user" })],
      {},
      "--token",
      /role/,
    ],
    ["id mismatch", [...base, "--id", "mini-08"], {}, "--id", /does not match.*mini-07/],
    ["capacity zero", [...base, "--capacity", "0"], {}, "--capacity", /at least 1/],
    ["capacity words", [...base, "--capacity", "four"], {}, "--capacity", /whole number/],
    ["env capacity", base, { ORCHARD_CAPACITY: "-1" }, "ORCHARD_CAPACITY", /whole number/],
    ["flush too long", [...base, "--flush-ms", "21"], {}, "--flush-ms", /at most 20/],
    ["protocol from the future", [...base, "--max-protocol", "3"], {}, "--max-protocol", /at most 2/],
    ["protocol from before v1", base, { ORCHARD_MAX_PROTOCOL: "0" }, "ORCHARD_MAX_PROTOCOL", /at least 1/],
    ["engine", [...base, "--engine", "tpu"], {}, "--engine", /auto, llamacpp, mlx or ollama/],
    ["cache budget words", [...base, "--cache-budget", "lots"], {}, "--cache-budget", /suffix K, M, G or T/],
    ["cache budget tiny", [...base, "--cache-budget", "100K"], {}, "--cache-budget", /at least 1M/],
    ["cache budget unit", base, { ORCHARD_CACHE_BUDGET: "5P" }, "ORCHARD_CACHE_BUDGET", /e\.g\. 20G/],
    ["log level", [...base, "--log-level", "loud"], {}, "--log-level", /one of/],
    [
      "backoff",
      [...base, "--backoff-base-ms", "1000", "--backoff-max-ms", "10"],
      {},
      "--backoff-max-ms",
      /base/,
    ],
    ["missing model", [...base, "--model", join(dir, "nope.gguf")], {}, "--model", /does not exist/],
    ["model dir", [...base, "--model", join(dir, "a-directory.gguf")], {}, "--model", /not a file/],
    ["model name", [...base, "--model", spacedModel], {}, "--model", /cannot use "my model".*NAME=PATH/],
    [
      "two versions",
      [...base, "--model", `tiny:1:2=${modelA}`],
      {},
      "--model",
      /cannot use "tiny:1:2" as a model name; it may end in one :VERSION at most/,
    ],
    ["duplicate model", [...base, "--model", modelA, "--model", modelA], {}, "--model", /twice/],
    ["unknown flag", [...base, "--bogus", "1"], {}, "--bogus", /unknown option/],
    ["flag without value", [...base, "--capacity"], {}, "--capacity", /needs a value/],
    ["positional", [...base, "extra"], {}, "arguments", /unexpected argument extra/],
  ])("%s", (_label, argv, env, setting, message) => {
    const err = configError(argv, env);
    expect(err.setting).toBe(setting);
    expect(err.message).toMatch(message);
    expect(err.message.startsWith(`${setting}: `)).toBe(true);
    expect(err.message).not.toContain("\n");
  });

  it("never echoes the token in an error", () => {
    const secret = "not-a-jwt-but-secret";
    expect(configError(["--gateway", "http://x", "--token", secret]).message).not.toContain(secret);
  });
});

describe("parseModelSpec", () => {
  it("reads NAME=PATH only when NAME is a model name", () => {
    const odd = join(dir, "x=y.gguf");
    writeFileSync(odd, "GGUF");
    // The whole value is a path (its left side starts with "/"), and "x=y" is no model name.
    expect(() => parseModelSpec(odd)).toThrow(/cannot use "x=y"/);
    expect(parseModelSpec(`xy=${odd}`)).toEqual({ name: "xy", path: odd });
  });
});
