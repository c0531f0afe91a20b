// The orchard-agent CLI: `start` runs the node agent, `doctor` checks a setup, `demo-model` writes a
// demo model variant (e.g. to register as a second version), `install`/`uninstall`/`status` manage
// it as a launchd or systemd user service, `help` lists flags.
// Exit codes: 0 ok/drained, 1 failure, 2 bad configuration, 3 token refused, 4 hub refused for good.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { formatModelId } from "../schema/model-id.ts";
import { Agent } from "./agent.ts";
import {
  type AgentConfig,
  ConfigError,
  ENGINE_KINDS,
  type EngineKind,
  loadConfig,
  type ModelSpec,
  settingsHelp,
  tokenExpiry,
} from "./config.ts";
import { ExitCode } from "./connection.ts";
import { runDoctor } from "./doctor.ts";
import type { CompositeEngine } from "./engines/composite.ts";
import type { Engine } from "./engines/engine.ts";
import { describeFault, FaultInjectingEngine } from "./faults.ts";
import { errorMessage, type Logger } from "./log.ts";
import { SERVICE_HELP, SERVICE_RUN_HELP } from "./service/help.ts";
import { openServiceRun, type ServiceRunFlags, takeServiceRunFlags } from "./service/service-run.ts";

const USAGE = `orchard-agent: runs models on this machine for an Orchard gateway

Usage:
  orchard-agent <command> [flags]                        (the installed package)
  node --import tsx node-agent/main.ts <command> [flags]  (a checkout)

Commands:
  start    connect to the gateway and serve generations until SIGINT/SIGTERM (drains first)
  doctor   check configuration, model files, the engine and the gateway; exit 1 if anything is wrong
  demo-model [--variant N] --out FILE
           write demo model variant N (default 1; 2 is a second deterministic variant whose greedy
           text differs) to FILE and print {"path","size","sha256"} as one JSON line
${SERVICE_HELP}
  help     show this text

Flags (each also read from the environment variable in brackets; a flag wins):
${settingsHelp()}
${SERVICE_RUN_HELP}

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
    case "install":
    case "uninstall":
    case "status":
      return serviceCommand(command, args);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE);
      return ExitCode.OK;
    default:
      process.stderr.write(
        `orchard-agent: unknown command "${command}" (commands: start, doctor, demo-model, install, uninstall, status, help)\n`,
      );
      return ExitCode.CONFIG;
  }
}

/**
 * The agent's engines (engines/registry.ts), one per kind its models need, behind one composite
 * engine: the configured models, those found in the models folder, the Ollama server's, or the
 * demo model when nothing is configured. Models with files are loaded now, so a broken one stops
 * the start; Ollama loads on demand.
 */
async function createEngine(config: AgentConfig, log: Logger): Promise<CompositeEngine> {
  // Imported lazily: `help` and config errors should not pay for loading any engine.
  const registry = await import("./engines/registry.ts");
  const { CompositeEngine } = await import("./engines/composite.ts");
  const models = config.useDemoModel ? [await demoModelFor(config, log)] : config.models;
  let discovered: ModelSpec[] = [];
  if (config.modelsDir !== undefined) {
    const { scanModelsDir } = await import("./discovery.ts");
    const found = await scanModelsDir(config.modelsDir, new Set(models.map((m) => m.name)));
    for (const skipped of found.skipped) log.warn("model in the models folder skipped", skipped);
    discovered = found.models;
    log.info("models folder scanned", { dir: config.modelsDir, models: discovered.map((m) => m.name) });
  }
  const available = new Set<EngineKind>();
  for (const kind of ENGINE_KINDS) if (await registry.engineAvailable(kind)) available.add(kind);
  const plan = registry.planEngines({
    engine: config.engine,
    models,
    discovered,
    ollama: config.ollama !== undefined,
    available,
  });
  for (const skipped of plan.skipped) log.warn("model in the models folder skipped", skipped);
  if (plan.engines.length === 0) {
    throw new ConfigError(
      "--models-dir",
      `${config.modelsDir} holds no model this agent can serve, and no --model or Ollama is configured`,
    );
  }
  const members: Engine[] = [];
  for (const { kind, models: assigned } of plan.engines) {
    const engine = await registry.createEngine(kind, {
      models: assigned,
      capacity: config.capacity,
      ...(config.threads === undefined ? {} : { threads: config.threads }),
      ...(config.contextSize === undefined ? {} : { contextSize: config.contextSize }),
      cacheDir: config.cacheDir,
      log,
      ...(config.ollama ? { ollama: config.ollama } : {}),
    });
    members.push(engine);
    if (kind !== "ollama") for (const model of assigned) await engine.load(model.name);
    log.info("engine ready", { engine: kind, models: assigned.map((m) => m.name) });
  }
  if (config.faults) {
    log.warn(`fault injection on: ${config.faults.map(describeFault).join("; ")}`, { faults: config.faults });
  }
  const faults = config.faults;
  const routes = new Map(
    plan.engines.flatMap(({ kind, models: assigned }) => assigned.map((m) => [m.name, kind])),
  );
  return new CompositeEngine(
    faults ? members.map((engine) => new FaultInjectingEngine(engine, faults)) : members,
    { routes, describeMember: registry.defaultEngineInfo },
  );
}

/** The generated demo model for the engine asked for: MLX's folder with --engine mlx, else the GGUF. */
async function demoModelFor(config: AgentConfig, log: Logger): Promise<ModelSpec> {
  let demo: ModelSpec;
  if (config.engine === "mlx") {
    const mod = await import("./demo-mlx-model.ts");
    const path = await mod.ensureDemoMlxModel(config.cacheDir);
    demo = { name: formatModelId(mod.DEMO_MLX_MODEL_NAME), path, format: "mlx", engine: "mlx" };
  } else {
    const { demoModelSpec } = await import("./demo-model.ts");
    demo = await demoModelSpec(config.cacheDir);
  }
  log.info("no model configured; serving the built-in demo model", { model: demo.name, path: demo.path });
  return demo;
}

/** `install`, `uninstall`, `status`: the agent as a launchd or systemd user service (service/cli.ts). */
async function serviceCommand(command: "install" | "uninstall" | "status", args: string[]): Promise<number> {
  const service = await import("./service/cli.ts");
  const host = service.processHost(import.meta.url);
  if (command === "install") return service.installCommand(args, host);
  if (command === "uninstall") return service.uninstallCommand(args, host);
  return service.statusCommand(args, host);
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
  let serviceFlags: ServiceRunFlags;
  try {
    const taken = takeServiceRunFlags(args);
    serviceFlags = taken.flags;
    config = loadConfig(taken.rest);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`orchard-agent: invalid configuration: ${err.message}\n`);
      return ExitCode.CONFIG;
    }
    throw err;
  }
  const service = openServiceRun(serviceFlags, config);
  const log = service.log;
  const expiresAt = tokenExpiry(config.token);
  if (expiresAt !== undefined && expiresAt * 1000 <= Date.now()) {
    log.warn("the agent token has expired; the gateway will refuse it", {
      expiredAt: new Date(expiresAt * 1000).toISOString(),
    });
  }

  let engine: CompositeEngine;
  try {
    engine = await createEngine(config, log);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`orchard-agent: invalid configuration: ${err.message}\n`);
      return ExitCode.CONFIG;
    }
    log.error("engine failed to start", { error: errorMessage(err), code: (err as { code?: unknown }).code });
    await service.finish({ exitCode: ExitCode.FAILURE, reason: "the engine failed to start" });
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
    structuredOutput: config.structuredOutput,
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
  service.attach(agent, engine);

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
    engines: engine.engines.map((e) => e.name),
    capacity: config.capacity,
  });
  const exit = await agent.start();
  log.info("agent stopped", { exitCode: exit.exitCode, reason: exit.reason });
  await engine.close().catch((err) => log.warn("engine close failed", { error: errorMessage(err) }));
  await service.finish(exit);
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
