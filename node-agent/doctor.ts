// `orchard-agent doctor`: checks the configuration, the token, the model files, that the engine
// loads every model, and that the gateway answers GET /health; prints one line per check.
import { type AgentConfig, ConfigError, loadConfig, tokenExpiry } from "./config.ts";
import { ExitCode } from "./connection.ts";
import { errorMessage } from "./log.ts";

export interface DoctorCheck {
  name: string;
  ok: boolean;
  detail: string;
}

type Print = (line: string) => void;

export async function runDoctor(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
  print: Print = (line) => process.stdout.write(`${line}\n`),
): Promise<number> {
  const checks: DoctorCheck[] = [];
  const report = (check: DoctorCheck) => {
    checks.push(check);
    print(`${check.ok ? "ok  " : "FAIL"} ${check.name}: ${check.detail}`);
  };

  let config: AgentConfig;
  try {
    config = loadConfig(argv, env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    report({ name: "config", ok: false, detail: err.message });
    print("(other checks need a valid configuration; fix the one above and run doctor again)");
    return ExitCode.FAILURE;
  }
  report({
    name: "config",
    ok: true,
    detail: `agent ${config.agentId} (${config.name}), gateway ${config.gatewayUrl}, capacity ${config.capacity}`,
  });
  report(checkToken(config.token, config.agentId));

  const models = await resolveModels(config, report);
  for (const model of models) report(await checkModelFile(model));
  if (models.length > 0) report(await checkEngine(config, models));
  report(await checkGateway(config.gatewayHttpUrl));

  const failed = checks.filter((c) => !c.ok).length;
  print(failed === 0 ? "all checks passed" : `${failed} check(s) failed`);
  return failed === 0 ? ExitCode.OK : ExitCode.FAILURE;
}

function checkToken(token: string, agentId: string, nowSeconds = Date.now() / 1000): DoctorCheck {
  const exp = tokenExpiry(token);
  if (exp === undefined)
    return { name: "token", ok: false, detail: "has no exp claim; the gateway requires one" };
  const when = new Date(exp * 1000).toISOString();
  if (exp <= nowSeconds) return { name: "token", ok: false, detail: `expired at ${when}` };
  return {
    name: "token",
    ok: true,
    detail: `subject ${agentId}, expires ${when} (the gateway checks the signature)`,
  };
}

async function resolveModels(
  config: AgentConfig,
  report: (check: DoctorCheck) => void,
): Promise<Array<{ name: string; path: string }>> {
  if (!config.useDemoModel) return config.models;
  try {
    const { DEMO_MODEL_NAME, ensureDemoModel } = await import("./demo-model.ts");
    return [{ name: DEMO_MODEL_NAME, path: await ensureDemoModel(config.cacheDir) }];
  } catch (err) {
    report({
      name: "demo model",
      ok: false,
      detail: `could not be generated in ${config.cacheDir}: ${errorMessage(err)}`,
    });
    return [];
  }
}

async function checkModelFile(model: { name: string; path: string }): Promise<DoctorCheck> {
  const name = `model ${model.name}`;
  try {
    const { readGgufFileInfo } = await import("node-llama-cpp");
    const info = await readGgufFileInfo(model.path, { readTensorInfo: false, logWarnings: false });
    const arch = info.metadata.general?.architecture ?? "unknown architecture";
    return {
      name,
      ok: true,
      detail: `${model.path}: GGUF v${info.version}, ${arch}, ${info.tensorCount} tensors`,
    };
  } catch (err) {
    return { name, ok: false, detail: `${model.path} is not a readable GGUF file: ${errorMessage(err)}` };
  }
}

async function checkEngine(
  config: AgentConfig,
  models: Array<{ name: string; path: string }>,
): Promise<DoctorCheck> {
  const started = performance.now();
  try {
    const { LlamaCppEngine } = await import("./engines/llamacpp.ts");
    const engine = new LlamaCppEngine({
      models,
      capacity: 1,
      ...(config.threads === undefined ? {} : { threads: config.threads }),
      ...(config.contextSize === undefined ? {} : { contextSize: config.contextSize }),
    });
    try {
      for (const model of models) await engine.load(model.name);
    } finally {
      await engine.close();
    }
    const ms = Math.round(performance.now() - started);
    return { name: "engine llamacpp", ok: true, detail: `loaded ${models.length} model(s) in ${ms} ms` };
  } catch (err) {
    return { name: "engine llamacpp", ok: false, detail: errorMessage(err) };
  }
}

async function checkGateway(httpBase: string): Promise<DoctorCheck> {
  const url = `${httpBase}/health`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
    await res.body?.cancel();
    if (res.ok) return { name: "gateway", ok: true, detail: `GET ${url} -> ${res.status}` };
    return { name: "gateway", ok: false, detail: `GET ${url} -> HTTP ${res.status}` };
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code;
    return { name: "gateway", ok: false, detail: `GET ${url} failed: ${cause ?? errorMessage(err)}` };
  }
}
