// `npm start`: the whole local stack in one command — local D1 migrated, the gateway Worker in
// workerd, one node agent on this machine — then prints the URL and tokens to try it with.
// Arguments after `--` go to the agent (e.g. `npm start -- --model ./my.gguf`).
//
// It supervises what it started: the gateway and the agent each run in a process group of their
// own; SIGINT or SIGTERM (to npm start, to its process group, or to npm, which npm start notices
// by watching its launchers) drains the agent, stops the gateway and exits 0; a second signal
// stops both at once. A crashed agent is restarted with backoff while the gateway keeps serving.
// If npm start itself is killed with SIGKILL, both children notice their closed pipe and exit.
import { createServer } from "node:net";
import { hostname } from "node:os";
import { resolve } from "node:path";
import { type AgentConfig, ConfigError, loadConfig } from "../node-agent/config.ts";
import { bestLocalEngine, engineAvailable, THIS_HOST } from "../node-agent/engines/registry.ts";
import { AgentEventsResponse } from "../schema/api.ts";
import { AgentSupervisor } from "./lib/agent-supervisor.ts";
import { ensureDevSecret } from "./lib/dev-vars.ts";
import { type GatewayProcess, GatewayStartError, spawnGateway } from "./lib/gateway-process.ts";
import { findLaunchers, watchLaunchers } from "./lib/launchers.ts";
import { REPO_ROOT } from "./lib/paths.ts";
import { describeExit } from "./lib/process-group.ts";
import { mintToken } from "./lib/token.ts";

const READY_TIMEOUT_MS = 120_000;
/**
 * A signal within this long of the first is the same request delivered twice (the process group
 * and tsx's relay of it both reach this process), not an impatient second Ctrl-C.
 */
const SAME_REQUEST_MS = 500;

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function complain(line: string): void {
  process.stderr.write(`${line}\n`);
}

function parsePort(raw: string | undefined): number {
  if (raw === undefined || raw === "") return 8787;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    complain(`start: PORT="${raw}" is not a TCP port (1-65535)`);
    process.exit(2);
  }
  return port;
}

const LOG_LEVELS = ["none", "error", "warn", "info", "log", "debug"] as const;
type GatewayLogLevel = (typeof LOG_LEVELS)[number];

function parseLogLevel(raw: string | undefined): GatewayLogLevel {
  if (raw === undefined || raw === "") return "warn";
  if ((LOG_LEVELS as readonly string[]).includes(raw)) return raw as GatewayLogLevel;
  complain(`start: ORCHARD_GATEWAY_LOG_LEVEL="${raw}" is not one of ${LOG_LEVELS.join(", ")}`);
  process.exit(2);
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const probe = createServer()
      .once("error", () => done(false))
      .listen(port, "127.0.0.1", () => probe.close(() => done(true)));
  });
}

/** The agent's own validation, before anything starts: a typo costs a second, not a gateway boot. */
function checkAgentConfig(args: string[], env: NodeJS.ProcessEnv): AgentConfig {
  try {
    return loadConfig(args, env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    complain(
      `start: invalid agent configuration: ${err.message} (arguments after -- go to the agent; npm run agent -- help lists them)`,
    );
    process.exit(2);
  }
}

const port = parsePort(process.env.PORT);
const logLevel = parseLogLevel(process.env.ORCHARD_GATEWAY_LOG_LEVEL);
const { secret, created } = ensureDevSecret(resolve(REPO_ROOT, ".dev.vars"));
if (created) say("Created .dev.vars with a new local JWT secret.");

const agentId = `local-${hostname().replace(/[^A-Za-z0-9._-]/g, "-")}`.slice(0, 64);
const day = 24 * 3600;
const [agentToken, userToken, adminToken] = await Promise.all([
  mintToken({ secret, role: "agent", sub: agentId, ttlSeconds: 30 * day }),
  mintToken({ secret, role: "user", sub: "local-user", ttlSeconds: day }),
  mintToken({ secret, role: "admin", sub: "local-admin", ttlSeconds: day }),
]);
const agentArgs = process.argv.slice(2);
const agentEnv = (origin: string) => ({
  ...process.env,
  ORCHARD_GATEWAY_URL: origin,
  ORCHARD_AGENT_TOKEN: agentToken,
});
const agentConfig = checkAgentConfig(agentArgs, agentEnv(`http://127.0.0.1:${port}`));

/**
 * The engine, as DESIGN.md orders them, when the agent's arguments choose none: MLX on Apple
 * Silicon, else a reachable Ollama with a model, else llama.cpp with the demo model.
 */
async function chooseEngine(config: AgentConfig): Promise<{ args: string[]; line: string }> {
  if (!config.useDemoModel) {
    const parts = [`--engine ${config.engine}`, `${config.models.length} model(s)`];
    if (config.modelsDir) parts.push(`models folder ${config.modelsDir}`);
    if (config.ollama) parts.push(`Ollama at ${config.ollama.baseUrl}`);
    return { args: [], line: `Engine: as configured (${parts.join("; ")})` };
  }
  const url = "http://localhost:11434";
  const models = await fetch(`${url}/api/tags`, { signal: AbortSignal.timeout(1_000) })
    .then((res) => (res.ok ? (res.json() as Promise<{ models?: { name: string }[] }>) : undefined))
    .then((body) => body?.models?.map((m) => m.name))
    .catch(() => undefined);
  return bestLocalEngine({
    host: THIS_HOST,
    mlxAvailable: await engineAvailable("mlx"),
    ollama: { url, models },
  });
}
const engineChoice = await chooseEngine(agentConfig);

// --- stopping: every path ends here, whatever had been started by then ---
let gateway: GatewayProcess | undefined;
let agent: AgentSupervisor | undefined;
let stopRequestedAt: number | undefined;
/** Once a stop is under way, startup waits here for good: stop() ends the process. */
const stopping = () => (stopRequestedAt === undefined ? Promise.resolve() : new Promise<never>(() => {}));

async function stop(exitCode: number): Promise<never> {
  if (stopRequestedAt !== undefined) return new Promise<never>(() => {});
  stopRequestedAt = Date.now();
  say("\nStopping the agent and the gateway...");
  await agent?.stop();
  await gateway?.stop();
  say("Stopped.");
  process.exit(exitCode);
}

function forceStop(signal: NodeJS.Signals): never {
  complain(`start: second ${signal}: stopping now, without waiting for the agent's drain.`);
  agent?.kill();
  gateway?.kill();
  process.exit(128 + (signal === "SIGINT" ? 2 : 15));
}

function onSignal(signal: NodeJS.Signals): void {
  if (stopRequestedAt === undefined) void stop(0);
  else if (Date.now() - stopRequestedAt >= SAME_REQUEST_MS) forceStop(signal);
}
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
watchLaunchers(findLaunchers("scripts/start.ts"), (launcher) => {
  if (stopRequestedAt !== undefined) return;
  complain(
    `start: the process that ran npm start is gone (pid ${launcher.pid}: ${launcher.args}); stopping.`,
  );
  void stop(0);
});

// --- starting ---
// wrangler waits forever for a port that is taken (no error), so ask the kernel first.
if (!(await portIsFree(port))) {
  complain(`start: port ${port} is in use (another npm start?). Stop it or set PORT.`);
  process.exit(1);
}
say("Applying D1 migrations to the local database and starting the gateway Worker...");
gateway = spawnGateway({
  persistDir: resolve(REPO_ROOT, ".wrangler/state"),
  secret,
  port,
  // Request lines are info: `ORCHARD_GATEWAY_LOG_LEVEL=info npm start` shows them.
  logLevel,
});
let origin: string;
try {
  origin = await gateway.ready;
} catch (err) {
  await stopping();
  const message = (err as Error).message;
  complain(
    err instanceof GatewayStartError && /EADDRINUSE|address already in use/i.test(message)
      ? `start: port ${port} is in use (another npm start?). Stop it or set PORT.`
      : `start: the gateway did not start: ${message}`,
  );
  await gateway.stop();
  process.exit(1);
}
await stopping();
void gateway.exited.then((exit) => {
  if (stopRequestedAt !== undefined) return;
  complain(`start: the gateway exited unexpectedly (${describeExit(exit)}); stopping.`);
  void stop(1);
});

await restoreIfRevoked(origin);
say(`Gateway at ${origin}. Starting a node agent (${agentId})...`);
say(engineChoice.line);
agent = new AgentSupervisor({
  args: [...agentArgs, ...engineChoice.args],
  env: agentEnv(origin),
  drainTimeoutMs: agentConfig.drainTimeoutMs,
  say: complain,
  onGiveUp: (exitCode) => void stop(exitCode),
});
agent.start();

async function waitReady(): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let reason = "";
  while (Date.now() < deadline) {
    await stopping();
    try {
      const res = await fetch(`${origin}/ready`);
      if (res.ok) return;
      reason = await res.text();
    } catch (err) {
      reason = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  complain(`start: the gateway was not ready within ${READY_TIMEOUT_MS / 1000}s: ${reason}`);
  await stop(1);
}
await waitReady();
agent.markReady();

const models = await fetch(`${origin}/v1/models`, { headers: { Authorization: `Bearer ${userToken}` } })
  .then((res) => res.json() as Promise<{ data: Array<{ id: string }> }>)
  .then((body) => body.data.map((m) => m.id))
  .catch(() => []); // the agent crashed a moment after /ready: it is being restarted
const model = models[0] ?? "demo-random-weights";
await stopping();

say(`
Orchard is running.

  Gateway     ${origin}
  Model       ${models.join(", ") || model}
  User token  ${userToken}
  Admin token ${adminToken}

Try it:

  curl -s ${origin}/v1/chat/completions \\
    -H "Authorization: Bearer ${userToken}" -H "Content-Type: application/json" \\
    -d '{"model":"${model}","messages":[{"role":"user","content":"Hello"}],"max_tokens":32}'

  OpenAI SDK: new OpenAI({ baseURL: "${origin}/v1", apiKey: "<user token>" })
  More tokens: npm run token -- --role user --sub alice --ttl 1h

  Dashboard   ${origin}/dashboard#token=${adminToken}
  Metrics     curl -s ${origin}/metrics -H "Authorization: Bearer <admin token>"
  API docs    ${origin}/docs

Ctrl-C stops everything (the agent drains first); a crashed agent is restarted.`);

/**
 * The local agent is this stack's own: one revoked while trying POST /agents/{id}/revoke would
 * otherwise be refused by every later `npm start`. Restored (and the audit log says so), with a line
 * saying it was; a failure to check is only reported, the agent's own refusal then says the rest.
 */
async function restoreIfRevoked(gatewayOrigin: string): Promise<void> {
  const headers = { Authorization: `Bearer ${adminToken}` };
  try {
    const events = await fetch(`${gatewayOrigin}/agents/${agentId}/events?limit=1`, { headers });
    if (events.status === 404) return; // never connected: nothing to restore
    if (!events.ok) throw new Error(`GET /agents/${agentId}/events answered ${events.status}`);
    const body = AgentEventsResponse.parse(await events.json());
    if (!body.agent.revoked) return;
    const restored = await fetch(`${gatewayOrigin}/agents/${agentId}/restore`, {
      method: "POST",
      headers: { ...headers, "Content-Type": "application/json" },
      body: JSON.stringify({ reason: "npm start restores its own local agent" }),
    });
    if (!restored.ok) throw new Error(`restore answered ${restored.status}`);
    say(`The local agent ${agentId} was revoked in the local database; npm start restored it.`);
  } catch (err) {
    complain(`start: could not check whether ${agentId} is revoked: ${(err as Error).message}`);
  }
}
