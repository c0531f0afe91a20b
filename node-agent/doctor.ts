// `orchard-agent doctor`: checks the configuration, the token, the model files, that the engine
// loads every model, that the gateway answers GET /health and accepts the agent token; prints one
// line per check, saying what is wrong and what to change.
import { type AgentConfig, ConfigError, loadConfig, type ModelSpec, tokenExpiry } from "./config.ts";
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
  const gateway = await checkGateway(config.gatewayHttpUrl);
  report(gateway);
  if (gateway.ok) report(await checkGatewayAcceptsToken(config.gatewayHttpUrl, config.token));

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
): Promise<ModelSpec[]> {
  // GGUF files only: MLX folders and Ollama tags are not checked here yet (docs/engines.md).
  if (!config.useDemoModel) return config.models.filter((m) => m.format === undefined);
  try {
    const { demoModelSpec } = await import("./demo-model.ts");
    return [await demoModelSpec(config.cacheDir)];
  } catch (err) {
    report({
      name: "demo model",
      ok: false,
      detail: `could not be generated in ${config.cacheDir}: ${errorMessage(err)}`,
    });
    return [];
  }
}

async function checkModelFile(model: ModelSpec): Promise<DoctorCheck> {
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

async function checkEngine(config: AgentConfig, models: ModelSpec[]): Promise<DoctorCheck> {
  const started = performance.now();
  try {
    const { LlamaCppEngine } = await import("./engines/llamacpp/index.ts");
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
    return { name: "gateway", ok: false, detail: `GET ${url} failed: ${fetchFailure(err)}` };
  }
}

/**
 * Asks the gateway to verify the token without connecting: GET /agents/connect without the upgrade
 * header is authenticated first and only then refused with 426. Connecting for real would supersede
 * a running agent with the same id. Revocation is checked at connect time, so it is not seen here.
 */
async function checkGatewayAcceptsToken(httpBase: string, token: string): Promise<DoctorCheck> {
  const name = "gateway token";
  const url = `${httpBase}/agents/connect`;
  try {
    const res = await fetch(url, {
      headers: { Authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(5_000),
    });
    const body = (await res.json().catch(() => null)) as { error?: { code?: unknown } } | null;
    const code = typeof body?.error?.code === "string" ? body.error.code : undefined;
    if (res.status === 426) return { name, ok: true, detail: "the gateway accepts this agent token" };
    if (res.status === 401 || res.status === 403) {
      return {
        name,
        ok: false,
        detail: `the gateway refused the token (HTTP ${res.status}${code ? ` ${code}` : ""}); mint a new one signed with the gateway's secret (npm run token -- --role agent --sub <agent id>)`,
      };
    }
    return {
      name,
      ok: false,
      detail: `GET ${url} -> HTTP ${res.status}${code ? ` ${code}` : ""}, expected 426`,
    };
  } catch (err) {
    return { name, ok: false, detail: `GET ${url} failed: ${fetchFailure(err)}` };
  }
}

/** fetch() only says "fetch failed"; the cause says why, and some causes need a hint. */
function fetchFailure(err: unknown): string {
  if (err instanceof Error && err.name === "TimeoutError") return "no answer within 5 s";
  const cause = (err as { cause?: { code?: unknown; message?: unknown } }).cause;
  const code = typeof cause?.code === "string" ? cause.code : undefined;
  switch (code) {
    case "ECONNREFUSED":
      return "ECONNREFUSED (nothing listens there: is the gateway running, and is --gateway right?)";
    case "ENOTFOUND":
      return "ENOTFOUND (the host name does not resolve)";
    case undefined:
      break;
    default:
      return code;
  }
  if (cause?.message === "bad port") {
    return "bad port (fetch refuses this port, e.g. 9 or 6000; run the gateway on another one)";
  }
  return typeof cause?.message === "string" ? cause.message : errorMessage(err);
}
