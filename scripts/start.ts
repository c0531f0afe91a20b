// `npm start`: the whole local stack in one command — local D1 migrated, the gateway Worker in
// workerd, one node agent on this machine — then prints the URL and tokens to try it with.
// Arguments after `--` go to the agent (e.g. `npm start -- --model ./my.gguf`). Ctrl-C stops all.
import { type ChildProcess, spawn } from "node:child_process";
import { hostname } from "node:os";
import { resolve } from "node:path";
import { ensureDevSecret } from "./lib/dev-vars.ts";
import { type LocalGateway, REPO_ROOT, startLocalGateway } from "./lib/local-gateway.ts";
import { mintToken } from "./lib/token.ts";

const READY_TIMEOUT_MS = 120_000;

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function parsePort(raw: string | undefined): number {
  if (raw === undefined || raw === "") return 8787;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    process.stderr.write(`start: PORT="${raw}" is not a TCP port (1-65535)\n`);
    process.exit(2);
  }
  return port;
}

const LOG_LEVELS = ["none", "error", "warn", "info", "log", "debug"] as const;
type GatewayLogLevel = (typeof LOG_LEVELS)[number];

function parseLogLevel(raw: string | undefined): GatewayLogLevel {
  if (raw === undefined || raw === "") return "warn";
  if ((LOG_LEVELS as readonly string[]).includes(raw)) return raw as GatewayLogLevel;
  process.stderr.write(`start: ORCHARD_GATEWAY_LOG_LEVEL="${raw}" is not one of ${LOG_LEVELS.join(", ")}\n`);
  process.exit(2);
}

async function waitReady(origin: string, agent: ChildProcess): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let reason = "";
  while (Date.now() < deadline) {
    if (agent.exitCode !== null)
      throw new Error(`the agent exited with code ${agent.exitCode} (see its log above)`);
    try {
      const res = await fetch(`${origin}/ready`);
      if (res.ok) return;
      reason = await res.text();
    } catch (err) {
      reason = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`the gateway was not ready within ${READY_TIMEOUT_MS / 1000}s: ${reason}`);
}

async function main(): Promise<void> {
  const port = parsePort(process.env.PORT);
  const logLevel = parseLogLevel(process.env.ORCHARD_GATEWAY_LOG_LEVEL);
  const { secret, created } = ensureDevSecret(resolve(REPO_ROOT, ".dev.vars"));
  if (created) say("Created .dev.vars with a new local JWT secret.");

  say("Applying D1 migrations to the local database and starting the gateway Worker...");
  let gateway: LocalGateway;
  try {
    gateway = await startLocalGateway({
      persistDir: resolve(REPO_ROOT, ".wrangler/state"),
      secret,
      port,
      // Request lines are info: `ORCHARD_GATEWAY_LOG_LEVEL=info npm start` shows them.
      logLevel,
    });
  } catch (err) {
    const message = (err as Error).message;
    process.stderr.write(
      /EADDRINUSE|address already in use/i.test(message)
        ? `start: port ${port} is in use (another npm start?). Stop it or set PORT.\n`
        : `start: the gateway did not start: ${message}\n`,
    );
    process.exit(1);
  }

  const agentId = `local-${hostname().replace(/[^A-Za-z0-9._-]/g, "-")}`.slice(0, 64);
  const day = 24 * 3600;
  const [agentToken, userToken, adminToken] = await Promise.all([
    mintToken({ secret, role: "agent", sub: agentId, ttlSeconds: 30 * day }),
    mintToken({ secret, role: "user", sub: "local-user", ttlSeconds: day }),
    mintToken({ secret, role: "admin", sub: "local-admin", ttlSeconds: day }),
  ]);

  say(`Gateway at ${gateway.origin}. Starting a node agent (${agentId})...`);
  const agent = spawn(
    process.execPath,
    ["--import", "tsx", resolve(REPO_ROOT, "node-agent/main.ts"), "start", ...process.argv.slice(2)],
    {
      cwd: REPO_ROOT,
      env: { ...process.env, ORCHARD_GATEWAY_URL: gateway.origin, ORCHARD_AGENT_TOKEN: agentToken },
      stdio: ["ignore", "inherit", "inherit"],
      detached: true,
    },
  );

  let stopping = false;
  const stop = async (code: number): Promise<never> => {
    if (stopping) process.exit(code);
    stopping = true;
    say("\nStopping the agent and the gateway...");
    if (agent.exitCode === null && agent.pid) {
      const exited = new Promise((r) => agent.once("exit", r));
      process.kill(agent.pid, "SIGTERM");
      const killTimer = setTimeout(() => agent.pid && process.kill(-agent.pid, "SIGKILL"), 10_000);
      await exited;
      clearTimeout(killTimer);
    }
    await gateway.dispose().catch(() => {});
    process.exit(code);
  };
  process.on("SIGINT", () => void stop(0));
  process.on("SIGTERM", () => void stop(0));
  agent.on("exit", (code, signal) => {
    if (stopping) return;
    process.stderr.write(`start: the agent exited (${signal ?? `code ${code}`}); stopping.\n`);
    void stop(1);
  });

  try {
    await waitReady(gateway.origin, agent);
  } catch (err) {
    process.stderr.write(`start: ${(err as Error).message}\n`);
    await stop(1);
  }

  const models = (await (
    await fetch(`${gateway.origin}/v1/models`, { headers: { Authorization: `Bearer ${userToken}` } })
  ).json()) as { data: Array<{ id: string }> };
  const model = models.data[0]?.id ?? "demo-random-weights";

  say(`
Orchard is running.

  Gateway     ${gateway.origin}
  Model       ${models.data.map((m) => m.id).join(", ")}
  User token  ${userToken}
  Admin token ${adminToken}

Try it:

  curl -s ${gateway.origin}/v1/chat/completions \\
    -H "Authorization: Bearer ${userToken}" -H "Content-Type: application/json" \\
    -d '{"model":"${model}","messages":[{"role":"user","content":"Hello"}],"max_tokens":32}'

  OpenAI SDK: new OpenAI({ baseURL: "${gateway.origin}/v1", apiKey: "<user token>" })
  More tokens: npm run token -- --role user --sub alice --ttl 1h

Ctrl-C stops everything.`);
}

await main();
