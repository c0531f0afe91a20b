// The orchard-agent CLI: `start` runs the node agent, `doctor` checks a setup, `help` lists flags.
// Exit codes: 0 ok/drained, 1 failure, 2 bad configuration, 3 token refused, 4 hub refused for good.
import { Agent } from "./agent.ts";
import { type AgentConfig, ConfigError, loadConfig, settingsHelp, tokenExpiry } from "./config.ts";
import { ExitCode } from "./connection.ts";
import { runDoctor } from "./doctor.ts";
import type { Engine } from "./engines/engine.ts";
import { createLogger, errorMessage, type Logger } from "./log.ts";

const USAGE = `orchard-agent: runs models on this machine for an Orchard gateway

Usage:
  node --import tsx node-agent/main.ts <command> [flags]

Commands:
  start    connect to the gateway and serve generations until SIGINT/SIGTERM (drains first)
  doctor   check configuration, model files, the engine and the gateway; exit 1 if anything is wrong
  help     show this text

Flags (each also read from the environment variable in brackets; a flag wins):
${settingsHelp()}

Exit codes: 0 ok or drained, 1 failure, 2 bad configuration, 3 token refused, 4 hub refused for good.
Logs are JSON lines on stderr; {"msg":"connected",...} is printed once welcomed.
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  switch (command) {
    case "start":
      return start(args);
    case "doctor":
      return runDoctor(args);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE);
      return ExitCode.OK;
    default:
      process.stderr.write(`orchard-agent: unknown command "${command}" (commands: start, doctor, help)\n`);
      return ExitCode.CONFIG;
  }
}

/** Builds the engine for the configured models (the demo model when none), loading each one. */
async function createEngine(config: AgentConfig, log: Logger): Promise<Engine> {
  let models = config.models;
  if (config.useDemoModel) {
    const { demoModelSpec } = await import("./demo-model.ts");
    const demo = await demoModelSpec(config.cacheDir);
    models = [demo];
    log.info("no model configured; serving the built-in demo model", { model: demo.name, path: demo.path });
  }
  // Imported lazily: `help` and config errors should not pay for loading native llama.cpp.
  const { LlamaCppEngine } = await import("./engines/llamacpp/index.ts");
  const engine = new LlamaCppEngine({
    models,
    capacity: config.capacity,
    ...(config.threads === undefined ? {} : { threads: config.threads }),
    ...(config.contextSize === undefined ? {} : { contextSize: config.contextSize }),
  });
  for (const model of models) await engine.load(model.name);
  return engine;
}

async function start(args: string[]): Promise<number> {
  let config: AgentConfig;
  try {
    config = loadConfig(args);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`orchard-agent: invalid configuration: ${err.message}\n`);
      return ExitCode.CONFIG;
    }
    throw err;
  }
  const log = createLogger({ level: config.logLevel });
  const expiresAt = tokenExpiry(config.token);
  if (expiresAt !== undefined && expiresAt * 1000 <= Date.now()) {
    log.warn("the agent token has expired; the gateway will refuse it", {
      expiredAt: new Date(expiresAt * 1000).toISOString(),
    });
  }

  let engine: Engine;
  try {
    engine = await createEngine(config, log);
  } catch (err) {
    log.error("engine failed to start", { error: errorMessage(err), code: (err as { code?: unknown }).code });
    return ExitCode.FAILURE;
  }

  const agent = new Agent({
    engine,
    gatewayUrl: config.gatewayUrl,
    token: config.token,
    agentId: config.agentId,
    name: config.name,
    capacity: config.capacity,
    flushMs: config.flushMs,
    maxProtocol: config.maxProtocol,
    drainTimeoutMs: config.drainTimeoutMs,
    backoff: { baseMs: config.backoffBaseMs, maxMs: config.backoffMaxMs },
    logger: log,
  });

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals === 1) {
      log.info("signal received; draining", { signal, drainTimeoutMs: config.drainTimeoutMs });
      void agent.drain();
      return;
    }
    log.warn("second signal; exiting now", { signal });
    process.exit(128 + (signal === "SIGINT" ? 2 : 15));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  log.info("agent starting", {
    agentId: config.agentId,
    name: config.name,
    gateway: config.gatewayUrl,
    engine: engine.name,
    capacity: config.capacity,
  });
  const exit = await agent.start();
  log.info("agent stopped", { exitCode: exit.exitCode, reason: exit.reason });
  await engine.close().catch((err) => log.warn("engine close failed", { error: errorMessage(err) }));
  return exit.exitCode;
}

main(process.argv.slice(2)).then(
  // Exit explicitly: native engine threads must not keep a stopped agent alive.
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(
      `${JSON.stringify({ msg: "agent crashed", level: "error", error: errorMessage(err) })}\n`,
    );
    process.exit(ExitCode.FAILURE);
  },
);
