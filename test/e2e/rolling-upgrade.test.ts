// A fleet mid-upgrade: the gateway speaks protocol 1..2, and an agent of the last release that
// spoke only v1 (commit 213b909, checked out from this repository's history) serves beside an
// agent of this checkout. Both are real processes running llama.cpp on the demo model.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../scripts/lib/local-gateway.ts";
import { type AgentProcess, type Stack, startStack } from "../helpers/stack.ts";

/** The last commit whose agent speaks protocol 1 only. */
const V1_COMMIT = "213b909";
const MODEL = "demo-random-weights";

let stack: Stack;
let userToken: string;
let oldAgent: AgentProcess;
let newAgent: AgentProcess;

/**
 * The v1 agent's sources, from git history, inside the repository (git-ignored .cache/) so that
 * they resolve this checkout's node_modules. CI clones the whole history; a shallow clone cannot
 * run this test, and says so.
 */
function checkoutV1Agent(): string {
  const dir = resolve(REPO_ROOT, ".cache/orchard-test", `agent-${V1_COMMIT}`);
  if (existsSync(join(dir, "node-agent/main.ts"))) return dir;
  try {
    execFileSync("git", ["cat-file", "-e", `${V1_COMMIT}^{commit}`], { cwd: REPO_ROOT, stdio: "ignore" });
  } catch {
    throw new Error(
      `commit ${V1_COMMIT} is not in this clone (shallow?); fetch the full history to run this test`,
    );
  }
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const archive = execFileSync("git", ["archive", V1_COMMIT, "node-agent", "schema", "package.json"], {
    cwd: REPO_ROOT,
    maxBuffer: 64 * 1024 * 1024,
  });
  execFileSync("tar", ["-x", "-C", dir], { input: archive });
  return dir;
}

async function generate(body: Record<string, unknown>): Promise<Response> {
  return fetch(`${stack.origin}/generate`, {
    method: "POST",
    headers: { Authorization: `Bearer ${userToken}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

beforeAll(async () => {
  const v1 = checkoutV1Agent();
  stack = await startStack();
  userToken = await stack.token("user");
  [oldAgent, newAgent] = await Promise.all([
    stack.startAgent({ id: "agent-v1", main: join(v1, "node-agent/main.ts") }),
    stack.startAgent({ id: "agent-v2" }),
  ]);
  await stack.waitForAgents((list) => list.filter((a) => a.ready === true).length === 2);
}, 120_000);

afterAll(async () => {
  await stack?.stop();
});

describe("a rolling upgrade of the fleet", () => {
  it("each agent is welcomed with the highest version it speaks", async () => {
    const agents = await stack.waitForAgents((list) => list.length === 2);
    const byId = Object.fromEntries(agents.map((a) => [a.id, a]));
    expect(byId["agent-v1"]).toMatchObject({ protocol: 1, capabilities: [] });
    // The current agent also offers `artifacts` (registry loads) and `structured_output` (llama.cpp
    // enforces a format with a grammar); the v1 agent offers nothing.
    expect(byId["agent-v2"]).toMatchObject({
      protocol: 2,
      capabilities: ["artifacts", "duplicate_answer", "load", "structured_output"],
    });
    expect(oldAgent.lines.some((l) => l.includes("hub speaks another protocol version"))).toBe(false);
  });

  it("the v1 agent keeps serving, with the same greedy text as the new one", async () => {
    const request = { prompt: "Once upon a time", model: MODEL, max_tokens: 12, temperature: 0 };
    const both = await generate(request);
    expect(both.status).toBe(200);
    const expected = ((await both.json()) as { text: string }).text;

    // Only the old agent left: everything it answers is its own.
    expect(await newAgent.stop()).toBe(0);
    await stack.waitForAgents((list) => list.length === 1 && list[0]?.id === "agent-v1");
    const answers = await Promise.all([1, 2, 3].map(() => generate(request)));
    for (const answer of answers) {
      expect(answer.status).toBe(200);
      expect(await answer.json()).toMatchObject({ text: expected, tokens_generated: 12, model_name: MODEL });
    }
  });
});
