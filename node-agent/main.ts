// The orchard-agent CLI: `start` runs the node agent, `doctor` checks a setup, `demo-model` writes a
// demo model variant (e.g. to register as a second version), `help` lists flags.
// Exit codes: 0 ok/drained, 1 failure, 2 bad configuration, 3 token refused, 4 hub refused for good.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { Agent } from "./agent.ts";
import { type AgentConfig, ConfigError, loadConfig, settingsHelp, tokenExpiry } from "./config.ts";
import { ExitCode } from "./connection.ts";
import { runDoctor } from "./doctor.ts";
import type { Engine } from "./engines/engine.ts";
import { describeFault, FaultInjectingEngine } from "./faults.ts";
import { createLogger, errorMessage, type Logger } from "./log.ts";

const USAGE = `orchard-agent: runs models on this machine for an Orchard gateway

Usage:
  node --import tsx node-agent/main.ts <command> [flags]

Commands:
  start    connect to the gateway and serve generations until SIGINT/SIGTERM (drains first)
  doctor   check configuration, model files, the engine and the gateway; exit 1 if anything is wrong
  demo-model [--variant N] --out FILE
           write demo model variant N (default 1; 2 is a second deterministic variant whose greedy
           text differs) to FILE and print {"path","size","sha256"} as one JSON line
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
    case "demo-model":
      return demoModel(args);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE);
      return ExitCode.OK;
    default:
      process.stderr.write(
        `orchard-agent: unknown command "${command}" (commands: start, doctor, demo-model, help)\n`,
      );
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
  if (!config.faults) return engine;
  log.warn(`fault injection on: ${config.faults.map(describeFault).join("; ")}`, { faults: config.faults });
  return new FaultInjectingEngine(engine, config.faults);
}

/** `demo-model [--variant N] --out FILE`: writes a demo variant and prints its path, size and sha256. */
async function demoModel(args: string[]): Promise<number> {
  const { DEMO_MODEL_VARIANTS, writeDemoModel } = await import("./demo-model.ts");
  let values: { variant?: string; out?: string };
  try {
    ({ values } = parseArgs({
      args,
      options: { variant: { type: "string" }, out: { type: "string" } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    process.stderr.write(`orchard-agent demo-model: ${errorMessage(err).split("\n")[0]}\n`);
    return ExitCode.CONFIG;
  }
  const variant = Number(values.variant ?? "1");
  const known = DEMO_MODEL_VARIANTS as readonly number[];
  if (!known.includes(variant)) {
    process.stderr.write(`orchard-agent demo-model: --variant must be one of ${known.join(", ")}\n`);
    return ExitCode.CONFIG;
  }
  if (!values.out) {
    process.stderr.write("orchard-agent demo-model: --out FILE is required\n");
    return ExitCode.CONFIG;
  }
  const path = await writeDemoModel(resolve(values.out), { variant: variant as 1 | 2 });
  const bytes = await readFile(path);
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  process.stdout.write(`${JSON.stringify({ path, size: bytes.length, sha256, variant })}\n`);
  return ExitCode.OK;
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
    artifacts: {
      dir: join(config.cacheDir, "artifacts"),
      budgetBytes: config.cacheBudgetBytes,
      gatewayHttpUrl: config.gatewayHttpUrl,
    },
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
