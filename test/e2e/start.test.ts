// `npm start` and `npm run token` as a newcomer uses them: one command brings the stack up, the
// printed token and curl line work, Ctrl-C stops everything, and a second start works too.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../scripts/lib/local-gateway.ts";

// A copy of the repository (sources only, node_modules linked) so the test creates its own
// .dev.vars and local state, as a fresh checkout would, without touching the developer's.
let workdir: string;

beforeAll(() => {
  workdir = mkdtempSync(join(tmpdir(), "orchard-start-"));
  for (const entry of [
    "package.json",
    "wrangler.toml",
    "tsconfig.base.json",
    "schema",
    "gateway",
    "node-agent",
    "scripts",
  ]) {
    cpSync(join(REPO_ROOT, entry), join(workdir, entry), { recursive: true });
  }
  symlinkSync(join(REPO_ROOT, "node_modules"), join(workdir, "node_modules"));
});

afterAll(() => {
  rmSync(workdir, { recursive: true, force: true });
});

async function freePort(): Promise<number> {
  return new Promise((done) => {
    const srv = createServer().listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => done(port));
    });
  });
}

function startStack(port: number): { child: ChildProcess; output: () => string; ready: Promise<string> } {
  const child = spawn(process.execPath, ["--import", "tsx", "scripts/start.ts"], {
    cwd: workdir,
    env: { ...process.env, PORT: String(port), ORCHARD_CACHE_DIR: join(REPO_ROOT, ".cache/orchard-test") },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const ready = new Promise<string>((done, fail) => {
    const onData = (d: Buffer) => {
      out += d.toString();
      if (out.includes("Ctrl-C stops everything")) done(out);
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => fail(new Error(`npm start exited (${code}) before it was ready:\n${out}`)));
  });
  return { child, output: () => out, ready };
}

async function stopWithCtrlC(child: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  child.kill("SIGINT");
  return exited;
}

describe("npm start", () => {
  it("serves a completion with the printed token, stops on Ctrl-C, and starts again", async () => {
    const port = await freePort();
    for (const round of [1, 2]) {
      const { child, ready } = startStack(port);
      const banner = await ready;
      expect(banner).toContain(`http://127.0.0.1:${port}`);
      const userToken = /User token\s+(\S+)/.exec(banner)?.[1];
      expect(userToken, `round ${round}`).toBeTruthy();
      const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
        method: "POST",
        headers: { Authorization: `Bearer ${userToken}`, "Content-Type": "application/json" },
        body: JSON.stringify({
          model: "demo-random-weights",
          messages: [{ role: "user", content: "Hello" }],
          max_tokens: 8,
        }),
      });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { choices: Array<{ message: { content: string } }> };
      expect(body.choices[0]?.message.content.length).toBeGreaterThan(0);
      expect(await stopWithCtrlC(child)).toBe(0);
      // Everything it started is gone: the port is free again.
      await expect(fetch(`http://127.0.0.1:${port}/health`)).rejects.toThrow();
    }
  });

  it("refuses a bad PORT with one clear line and exit code 2", () => {
    const r = spawnSync(process.execPath, ["--import", "tsx", "scripts/start.ts"], {
      cwd: workdir,
      env: { ...process.env, PORT: "http" },
      encoding: "utf8",
    });
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe('start: PORT="http" is not a TCP port (1-65535)');
  });
});

describe("npm run token", () => {
  it("prints a token on the last line signed with the local secret", () => {
    const r = spawnSync(
      process.execPath,
      ["--import", "tsx", "scripts/token.ts", "--role", "admin", "--sub", "ops"],
      {
        cwd: workdir,
        encoding: "utf8",
      },
    );
    expect(r.status).toBe(0);
    const token = r.stdout.trim().split("\n").at(-1) ?? "";
    const payload = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString()) as Record<
      string,
      unknown
    >;
    expect(payload).toMatchObject({ role: "admin", sub: "ops" });
    expect((payload.exp as number) - (payload.iat as number)).toBe(3600);
  });

  it("rejects a bad --ttl with exit code 2", () => {
    const r = spawnSync(
      process.execPath,
      ["--import", "tsx", "scripts/token.ts", "--role", "user", "--sub", "a", "--ttl", "soon"],
      {
        cwd: workdir,
        encoding: "utf8",
      },
    );
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("--ttl");
  });
});
