// --token-file: the token in a file only its owner can read, as `install` writes it, so a service
// definition names the file and never holds the token.
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../node-agent/config.ts";
import { readTokenFile, TokenFileError, writeTokenFile } from "../../node-agent/service/token-file.ts";

const dir = mkdtempSync(join(tmpdir(), "orchard-token-file-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function fakeJwt(claims: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.c2ln`;
}
const token = fakeJwt({ sub: "mini-file", role: "agent", exp: 4_000_000_000 });
const gateway = ["--gateway", "http://127.0.0.1:8787"];

function tokenFile(name: string, content: string, mode = 0o600): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  chmodSync(path, mode);
  return path;
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

describe("writeTokenFile", () => {
  it("writes the token with mode 0600 in a 0700 folder it creates, and readTokenFile reads it back", () => {
    const path = join(dir, "fresh", "agent-token");
    writeTokenFile(path, token);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, "fresh")).mode & 0o777).toBe(0o700);
    expect(readFileSync(path, "utf8")).toBe(`${token}\n`);
    expect(readTokenFile(path)).toBe(token);
  });

  it("replaces an existing token and narrows a leftover temporary file's mode", () => {
    const path = join(dir, "replace-token");
    writeTokenFile(path, "old");
    // A temporary file left by an interrupted run, readable by everyone.
    tokenFile(`replace-token.${process.pid}.tmp`, "junk", 0o644);
    writeTokenFile(path, token);
    expect(readTokenFile(path)).toBe(token);
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });
});

describe("readTokenFile", () => {
  it("refuses a file others can read, naming the mode and the fix", () => {
    const path = tokenFile("wide", token, 0o644);
    expect(() => readTokenFile(path, "linux")).toThrow(TokenFileError);
    expect(() => readTokenFile(path, "linux")).toThrow(`(mode 0644); run: chmod 600 ${path}`);
    expect(() => readTokenFile(tokenFile("group", token, 0o640), "darwin")).toThrow("mode 0640");
  });

  it("refuses a missing, empty or non-file path", () => {
    expect(() => readTokenFile(join(dir, "absent"))).toThrow(/cannot read .*absent \(ENOENT\)/);
    expect(() => readTokenFile(tokenFile("empty", " \n"))).toThrow("is empty");
    expect(() => readTokenFile(dir)).toThrow("is not a file");
  });
});

describe("loadConfig with --token-file", () => {
  it("reads the token (trimmed) from the file, and the agent id from it", () => {
    const path = tokenFile("good", `${token}\n`);
    const config = loadConfig([...gateway, "--token-file", path], {});
    expect(config.token).toBe(token);
    expect(config.agentId).toBe("mini-file");
    const fromEnv = loadConfig(gateway, { ORCHARD_AGENT_TOKEN_FILE: path });
    expect(fromEnv.token).toBe(token);
  });

  it("names the setting when the file is refused, and never echoes the token", () => {
    const wide = tokenFile("wide-config", token, 0o604);
    const err = configError([...gateway, "--token-file", wide]);
    expect(err.setting).toBe("--token-file");
    expect(err.message).toContain("chmod 600");
    expect(err.message).not.toContain(token);
    const notJwt = tokenFile("not-jwt", "abc");
    expect(configError([...gateway, "--token-file", notJwt])).toMatchObject({ setting: "--token-file" });
    expect(configError(gateway, { ORCHARD_AGENT_TOKEN_FILE: wide }).setting).toBe("ORCHARD_AGENT_TOKEN_FILE");
  });

  it("refuses both flags, and both variables, but lets a flag win over either variable", () => {
    const path = tokenFile("both", token);
    const other = fakeJwt({ sub: "from-env", role: "agent", exp: 4_000_000_000 });
    expect(configError([...gateway, "--token", token, "--token-file", path]).message).toBe(
      "--token-file: give --token or --token-file, not both",
    );
    expect(configError(gateway, { ORCHARD_AGENT_TOKEN: token, ORCHARD_AGENT_TOKEN_FILE: path }).setting).toBe(
      "ORCHARD_AGENT_TOKEN_FILE",
    );
    expect(loadConfig([...gateway, "--token-file", path], { ORCHARD_AGENT_TOKEN: other }).agentId).toBe(
      "mini-file",
    );
    const otherFile = tokenFile("other", other);
    expect(loadConfig([...gateway, "--token", token], { ORCHARD_AGENT_TOKEN_FILE: otherFile }).agentId).toBe(
      "mini-file",
    );
  });

  it("says how to give a token when there is none", () => {
    const err = configError(gateway);
    expect(err.setting).toBe("--token");
    expect(err.message).toMatch(/missing the agent token .*--token-file.*ORCHARD_AGENT_TOKEN_FILE/);
  });
});
