// The agent's configuration, read from command-line flags and ORCHARD_* environment variables
// (a flag wins over its variable) and validated with zod. A bad setting is a ConfigError that
// names the flag or variable it came from, so the CLI can print one line and exit 2.
import { statSync } from "node:fs";
import { homedir, hostname } from "node:os";
import { basename, extname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { decodeJwt } from "jose";
import { z } from "zod";
import { isModelId, type ModelId } from "../schema/model-id.ts";
import { MIN_PROTOCOL_VERSION, ModelName, PROTOCOL_VERSION } from "../schema/protocol.ts";
import { inspectModelFolder } from "./discovery.ts";
import { type Fault, parseFaults } from "./faults.ts";
import { LOG_LEVELS, type LogLevel } from "./log.ts";
import { readTokenFile, TokenFileError } from "./service/token-file.ts";

export class ConfigError extends Error {
  readonly code = "ERR_AGENT_CONFIG";
  constructor(
    /** The flag or environment variable at fault, e.g. `--capacity` or `ORCHARD_GATEWAY_URL`. */
    readonly setting: string,
    message: string,
  ) {
    super(`${setting}: ${message}`);
    this.name = "ConfigError";
  }
}

/** The engines an agent can run models with (EngineName less the benchmark's synthetic one). */
export const ENGINE_KINDS = ["llamacpp", "mlx", "ollama"] as const;
export type EngineKind = (typeof ENGINE_KINDS)[number];

export interface ModelSpec {
  /** `name` or `name:version`: what the agent serves the model as. */
  name: ModelId;
  /** A GGUF file, an MLX model folder, or (format "ollama") an Ollama tag. */
  path: string;
  /** What `path` is; absent: a GGUF file. */
  format?: "mlx" | "ollama";
  /** The engine it must run on (NAME=ENGINE:PATH, or --engine); absent: chosen per model. */
  engine?: EngineKind;
  /** An MLX folder's GGUF file, for llama.cpp where MLX is not the better engine. */
  gguf?: string;
}

export interface OllamaSettings {
  /** http(s)://host:port, without a trailing /v1 or /api. */
  baseUrl: string;
  /** keep_alive for requests of models not pinned by a load: seconds or a Go duration. */
  keepAlive?: string | number;
}

export interface AgentConfig {
  /** ws(s)://host[/prefix]/agents/connect */
  gatewayUrl: string;
  /** http(s)://host[/prefix], for GET /health */
  gatewayHttpUrl: string;
  token: string;
  /** The token's `sub`. */
  agentId: string;
  name: string;
  /** `auto`: each model on its best engine (engines/registry.ts); else every model on this one. */
  engine: "auto" | EngineKind;
  models: ModelSpec[];
  /** A folder whose GGUF files and MLX model folders the agent serves too (discovery.ts). */
  modelsDir?: string;
  /** The local Ollama server whose models the agent offers; absent: none. */
  ollama?: OllamaSettings;
  /** True when nothing at all was configured: the agent serves the generated demo model. */
  useDemoModel: boolean;
  capacity: number;
  threads?: number;
  contextSize?: number;
  /** The demo model and, in `<cacheDir>/artifacts`, the registry's artifacts. */
  cacheDir: string;
  /** Disk the artifact cache may take, in bytes. */
  cacheBudgetBytes: number;
  flushMs: number;
  /** Enforce `format` in the engines and offer structured_output (--structured-output on|off). */
  structuredOutput: boolean;
  /** The newest wire protocol version offered in hello (pin it to reach an older gateway). */
  maxProtocol: number;
  drainTimeoutMs: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  logLevel: LogLevel;
  /** Injected faults (tests and diagnostics only); absent unless --fault is given. */
  faults?: Fault[];
}

interface SettingSpec {
  env?: string;
  multiple?: boolean;
  value: string;
  describe: string;
}

/** Every setting: flag name (the key), its environment variable, and its help line. */
export const SETTINGS = {
  gateway: {
    env: "ORCHARD_GATEWAY_URL",
    value: "URL",
    describe: "gateway base URL, http(s):// or ws(s):// (required)",
  },
  token: {
    env: "ORCHARD_AGENT_TOKEN",
    value: "JWT",
    describe: "agent token, role agent (this or --token-file is required)",
  },
  "token-file": {
    env: "ORCHARD_AGENT_TOKEN_FILE",
    value: "FILE",
    describe: "read the agent token from FILE (mode 0600, as `install` writes it) instead of --token",
  },
  id: {
    env: "ORCHARD_AGENT_ID",
    value: "ID",
    describe: "agent id; must equal the token's sub (default: sub)",
  },
  name: { env: "ORCHARD_AGENT_NAME", value: "NAME", describe: "display name (default: hostname)" },
  engine: {
    env: "ORCHARD_ENGINE",
    value: "ENGINE",
    describe: "auto | llamacpp | mlx | ollama: auto runs each model on its best engine (default: auto)",
  },
  model: {
    env: "ORCHARD_MODEL_PATH",
    multiple: true,
    value: "[NAME=][ENGINE:]PATH",
    describe:
      "a GGUF file, an MLX model folder, or ollama:TAG; ENGINE (llamacpp, mlx, ollama) picks the engine; repeatable; env: comma-separated (default: built-in demo model)",
  },
  "models-dir": {
    env: "ORCHARD_MODELS_DIR",
    value: "DIR",
    describe: "also serve every GGUF file and MLX model folder in DIR (and its subfolders, one level)",
  },
  ollama: {
    env: "ORCHARD_OLLAMA",
    value: "auto|on|off",
    describe:
      "offer a local Ollama server's models; auto: when OLLAMA_BASE_URL is set or a model names ollama (default: auto)",
  },
  "ollama-url": {
    env: "OLLAMA_BASE_URL",
    value: "URL",
    describe: "the Ollama server; a trailing /v1 or /api is dropped (default: http://localhost:11434)",
  },
  "ollama-keep-alive": {
    env: "ORCHARD_OLLAMA_KEEP_ALIVE",
    value: "DURATION",
    describe:
      "how long Ollama keeps a model in memory after a request: seconds or 5m, 1h; -1 = until unloaded (default: the server's)",
  },
  capacity: { env: "ORCHARD_CAPACITY", value: "N", describe: "concurrent generations (default: 4)" },
  threads: { env: "ORCHARD_THREADS", value: "N", describe: "engine CPU threads (default: engine's choice)" },
  "context-size": {
    env: "ORCHARD_CONTEXT_SIZE",
    value: "N",
    describe: "context tokens per sequence (default: engine's choice)",
  },
  "cache-dir": {
    env: "ORCHARD_CACHE_DIR",
    value: "DIR",
    describe:
      "cache directory: demo model, and registry artifacts in DIR/artifacts (default: ~/.cache/orchard)",
  },
  "cache-budget": {
    env: "ORCHARD_CACHE_BUDGET",
    value: "BYTES",
    describe: "disk for registry artifacts; suffix K, M, G, T (powers of 1024), e.g. 20G (default: 50G)",
  },
  "flush-ms": {
    env: "ORCHARD_FLUSH_MS",
    value: "MS",
    describe: "chunk coalescing window, 0-20 (default: 16)",
  },
  "structured-output": {
    env: "ORCHARD_STRUCTURED_OUTPUT",
    value: "on|off",
    describe:
      "enforce a request's JSON schema while generating (llama.cpp grammar, Ollama format); off: the gateway validates and retries alone (default: on)",
  },
  "max-protocol": {
    env: "ORCHARD_MAX_PROTOCOL",
    value: "N",
    describe: `newest wire protocol to offer, ${MIN_PROTOCOL_VERSION}-${PROTOCOL_VERSION}, for an older gateway (default: ${PROTOCOL_VERSION})`,
  },
  "drain-timeout-ms": {
    env: "ORCHARD_DRAIN_TIMEOUT_MS",
    value: "MS",
    describe: "on SIGINT/SIGTERM, wait this long for in-flight work (default: 30000)",
  },
  "backoff-base-ms": {
    env: "ORCHARD_BACKOFF_BASE_MS",
    value: "MS",
    describe: "reconnect backoff base (default: 500)",
  },
  "backoff-max-ms": {
    env: "ORCHARD_BACKOFF_MAX_MS",
    value: "MS",
    describe: "reconnect backoff cap (default: 30000)",
  },
  "log-level": {
    env: "ORCHARD_LOG_LEVEL",
    value: "LEVEL",
    describe: `${LOG_LEVELS.join(" | ")} (default: info)`,
  },
  fault: {
    env: "ORCHARD_FAULTS",
    multiple: true,
    value: "MODEL:KIND[=V]",
    describe:
      "TESTS ONLY: make MODEL slow=MS (before each piece) or fail=RATE (0-1, ENGINE_ERROR); repeatable; env: comma-separated",
  },
} as const satisfies Record<string, SettingSpec>;

type SettingName = keyof typeof SETTINGS;

const wholeNumber = (min: number, max: number) =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, `must be a whole number from ${min} to ${max}`)
    .transform(Number)
    .pipe(z.number().min(min, `must be at least ${min}`).max(max, `must be at most ${max}`));

const nonEmpty = z.string().trim().min(1, "must not be empty");

const BYTE_UNITS: Record<string, number> = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** `20G`, `512M`, `1.5T`, `1048576`: bytes, with K/M/G/T (optionally KB, KiB, ...) as powers of 1024. */
export const byteSize = z.string().transform((text, ctx) => {
  const match = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  const bytes = match
    ? Math.floor(Number(match[1]) * (BYTE_UNITS[(match[2] ?? "").toLowerCase()] ?? 1))
    : NaN;
  if (!match || !Number.isSafeInteger(bytes) || bytes < 1024 * 1024) {
    ctx.addIssue({
      code: "custom",
      message: `must be a size of at least 1M, in bytes or with a suffix K, M, G or T (e.g. 20G), got "${text}"`,
    });
    return z.NEVER;
  }
  return bytes;
});

interface RawSetting {
  values: string[];
  /** What to call the setting in an error: the flag if it was given, else the variable. */
  label: string;
}

/** Reads flags and environment into a validated AgentConfig; throws ConfigError. */
export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): AgentConfig {
  const raw = readRawSettings(argv, env);
  const pick = <T>(name: SettingName, schema: z.ZodType<T>): T => {
    const setting = raw[name];
    const result = schema.safeParse(setting.values.at(-1));
    if (!result.success)
      throw new ConfigError(setting.label, result.error.issues[0]?.message ?? "is invalid");
    return result.data;
  };
  const required = (name: SettingName, what: string) => {
    if (raw[name].values.length === 0) {
      const env = SETTINGS[name].env;
      throw new ConfigError(`--${name}`, `missing ${what} (set --${name} or ${env})`);
    }
  };

  required("gateway", "the gateway URL");
  const gateway = pick(
    "gateway",
    nonEmpty.transform((url, ctx) => gatewayUrls(url, ctx)),
  );

  const { token, label: tokenLabel } = agentToken(raw.token, raw["token-file"]);
  const agentId = tokenSubject(token, tokenLabel);
  const id = pick("id", nonEmpty.optional());
  if (id !== undefined && id !== agentId) {
    throw new ConfigError(raw.id.label, `"${id}" does not match the token's subject "${agentId}"`);
  }

  const name = pick("name", nonEmpty.max(128, "must be at most 128 characters").default(hostname()));
  const engine = pick(
    "engine",
    z.enum(["auto", ...ENGINE_KINDS], "must be auto, llamacpp, mlx or ollama").default("auto"),
  );
  const models = parseModels(raw.model, engine === "auto" ? undefined : engine);
  const modelsDir = pick("models-dir", nonEmpty.transform((dir) => resolve(expandHome(dir))).optional());
  if (modelsDir !== undefined && !isDirectory(modelsDir)) {
    throw new ConfigError(raw["models-dir"].label, `${modelsDir} is not a folder`);
  }
  const ollama = ollamaSettings(raw, pick, engine, models);
  const capacity = pick("capacity", wholeNumber(1, 1024).default(4));
  const threads = pick("threads", wholeNumber(1, 256).optional());
  const contextSize = pick("context-size", wholeNumber(16, 1_048_576).optional());
  const cacheDir = pick(
    "cache-dir",
    nonEmpty.transform(expandHome).default(join(homedir(), ".cache", "orchard")),
  );
  const cacheBudgetBytes = pick("cache-budget", byteSize.default(50 * 1024 ** 3));
  const flushMs = pick("flush-ms", wholeNumber(0, 20).default(16));
  const structuredOutput =
    pick("structured-output", z.enum(["on", "off"], "must be on or off").default("on")) === "on";
  const maxProtocol = pick(
    "max-protocol",
    wholeNumber(MIN_PROTOCOL_VERSION, PROTOCOL_VERSION).default(PROTOCOL_VERSION),
  );
  const drainTimeoutMs = pick("drain-timeout-ms", wholeNumber(0, 3_600_000).default(30_000));
  const backoffBaseMs = pick("backoff-base-ms", wholeNumber(1, 600_000).default(500));
  const backoffMaxMs = pick("backoff-max-ms", wholeNumber(1, 3_600_000).default(30_000));
  if (backoffMaxMs < backoffBaseMs) {
    throw new ConfigError(
      raw["backoff-max-ms"].label,
      `must be at least the backoff base (${backoffBaseMs})`,
    );
  }
  const logLevel = pick(
    "log-level",
    z.enum(LOG_LEVELS, `must be one of ${LOG_LEVELS.join(", ")}`).default("info"),
  );
  const faults = parseFaults(raw.fault.values);
  if (typeof faults === "string") throw new ConfigError(raw.fault.label, faults);

  return {
    gatewayUrl: gateway.ws,
    gatewayHttpUrl: gateway.http,
    token,
    agentId,
    name,
    engine,
    models,
    ...(modelsDir === undefined ? {} : { modelsDir }),
    ...(ollama === undefined ? {} : { ollama }),
    // The demo model stands in only when nothing else could serve: no model, folder or Ollama.
    useDemoModel:
      models.length === 0 && modelsDir === undefined && ollama === undefined && engine !== "ollama",
    capacity,
    ...(threads === undefined ? {} : { threads }),
    ...(contextSize === undefined ? {} : { contextSize }),
    cacheDir,
    cacheBudgetBytes,
    flushMs,
    structuredOutput,
    maxProtocol,
    drainTimeoutMs,
    backoffBaseMs,
    backoffMaxMs,
    logLevel,
    ...(faults.length === 0 ? {} : { faults }),
  };
}

/**
 * The token from --token or --token-file. A flag wins over both variables; giving both flags, or
 * (without a flag) both variables, is an error rather than a silent choice.
 */
function agentToken(direct: RawSetting, file: RawSetting): { token: string; label: string } {
  const fromFlag = [direct, file].filter((s) => s.values.length > 0 && s.label.startsWith("--"));
  const given = fromFlag.length > 0 ? fromFlag : [direct, file].filter((s) => s.values.length > 0);
  const [setting, other] = given;
  if (!setting) {
    throw new ConfigError(
      "--token",
      "missing the agent token (set --token, --token-file, ORCHARD_AGENT_TOKEN or ORCHARD_AGENT_TOKEN_FILE)",
    );
  }
  if (other) throw new ConfigError(other.label, `give ${setting.label} or ${other.label}, not both`);
  const value = setting.values.at(-1)?.trim() ?? "";
  if (setting === direct) {
    if (value === "") throw new ConfigError(setting.label, "must not be empty");
    return { token: value, label: setting.label };
  }
  try {
    return { token: readTokenFile(resolve(expandHome(value))), label: setting.label };
  } catch (err) {
    if (err instanceof TokenFileError) throw new ConfigError(setting.label, err.message);
    throw err;
  }
}

/** Each setting as given (its flags, else its variable), before validation; `install` writes them out as flags. */
export function readRawSettings(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): Record<SettingName, RawSetting> {
  const options = Object.fromEntries(
    Object.entries(SETTINGS).map(([flag, spec]) => [
      flag,
      { type: "string" as const, multiple: "multiple" in spec && spec.multiple },
    ]),
  );
  let values: Record<string, string | string[] | undefined>;
  try {
    ({ values } = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }));
  } catch (err) {
    throw parseArgsError(err);
  }
  const raw = {} as Record<SettingName, RawSetting>;
  for (const [flag, spec] of Object.entries(SETTINGS) as [SettingName, SettingSpec][]) {
    const fromFlag = values[flag];
    if (fromFlag !== undefined) {
      raw[flag] = { values: Array.isArray(fromFlag) ? fromFlag : [fromFlag], label: `--${flag}` };
      continue;
    }
    const fromEnv = spec.env ? env[spec.env] : undefined;
    const label = spec.env ?? `--${flag}`;
    if (fromEnv === undefined || fromEnv.trim() === "") {
      raw[flag] = { values: [], label };
    } else {
      const list = spec.multiple
        ? fromEnv
            .split(",")
            .map((s) => s.trim())
            .filter(Boolean)
        : [fromEnv];
      raw[flag] = { values: list, label };
    }
  }
  return raw;
}

function parseArgsError(err: unknown): ConfigError {
  const message = err instanceof Error ? err.message : String(err);
  const option = /'(--?[^' <]+)/.exec(message)?.[1];
  const code = (err as { code?: string }).code;
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") return new ConfigError(option ?? "flags", "unknown option");
  if (code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL") {
    return new ConfigError(
      option ?? "arguments",
      `unexpected argument ${/'([^']*)'/.exec(message)?.[1] ?? ""}`,
    );
  }
  if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE")
    return new ConfigError(option ?? "flags", "needs a value");
  return new ConfigError("flags", message.split("\n")[0] ?? "invalid");
}

function gatewayUrls(input: string, ctx: z.RefinementCtx<string>): { ws: string; http: string } {
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    ctx.addIssue({ code: "custom", message: `"${input}" is not a URL` });
    return z.NEVER;
  }
  const schemes: Record<string, [ws: string, http: string]> = {
    "http:": ["ws:", "http:"],
    "https:": ["wss:", "https:"],
    "ws:": ["ws:", "http:"],
    "wss:": ["wss:", "https:"],
  };
  const pair = schemes[url.protocol];
  if (!pair) {
    ctx.addIssue({ code: "custom", message: `must be an http(s):// or ws(s):// URL, got ${url.protocol}//` });
    return z.NEVER;
  }
  if (url.search || url.hash || url.username || url.password) {
    ctx.addIssue({ code: "custom", message: "must not carry a query, fragment or credentials" });
    return z.NEVER;
  }
  const prefix = url.pathname.replace(/\/+$/, "").replace(/\/agents\/connect$/, "");
  const authority = url.host;
  return {
    ws: `${pair[0]}//${authority}${prefix}/agents/connect`,
    http: `${pair[1]}//${authority}${prefix}`,
  };
}

/** The token's `sub`, read without verifying the signature (the gateway verifies it). */
export function tokenSubject(token: string, label = "--token"): string {
  let claims: Record<string, unknown>;
  try {
    claims = decodeJwt(token);
  } catch {
    throw new ConfigError(label, "is not a JWT (expected header.payload.signature)");
  }
  const sub = claims.sub;
  if (typeof sub !== "string" || sub.length === 0 || sub.length > 128) {
    throw new ConfigError(label, "has no usable sub claim (the agent id)");
  }
  if (typeof claims.role === "string" && claims.role !== "agent") {
    throw new ConfigError(label, `has role "${claims.role}"; an agent token needs role "agent"`);
  }
  return sub;
}

/** Seconds since the epoch at which the token expires, if it says. */
export function tokenExpiry(token: string): number | undefined {
  try {
    const exp = decodeJwt(token).exp;
    return typeof exp === "number" ? exp : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The Ollama server to offer models of: with --ollama on, or (auto) when its URL is set, --engine
 * is ollama or a model is an Ollama tag. --engine llamacpp or mlx runs no Ollama.
 */
function ollamaSettings(
  raw: Record<SettingName, RawSetting>,
  pick: <T>(name: SettingName, schema: z.ZodType<T>) => T,
  engine: AgentConfig["engine"],
  models: ModelSpec[],
): OllamaSettings | undefined {
  const mode = pick("ollama", z.enum(["auto", "on", "off"], "must be auto, on or off").default("auto"));
  const baseUrl = pick("ollama-url", nonEmpty.transform(ollamaUrl).optional());
  const keepAlive = pick("ollama-keep-alive", nonEmpty.transform(keepAliveValue).optional());
  const wanted = models.find((m) => m.format === "ollama");
  if (mode === "off" && (engine === "ollama" || wanted)) {
    const why = wanted ? `model "${wanted.name}" is an Ollama model` : "--engine is ollama";
    throw new ConfigError(raw.ollama.label, `is off, but ${why}`);
  }
  if (mode === "on" && engine !== "auto" && engine !== "ollama") {
    throw new ConfigError(raw.ollama.label, `is on, but --engine ${engine} runs no other engine`);
  }
  const enabled =
    mode === "on" ||
    engine === "ollama" ||
    (mode === "auto" && engine === "auto" && (baseUrl !== undefined || wanted !== undefined));
  if (!enabled) return undefined;
  return {
    baseUrl: baseUrl ?? "http://localhost:11434",
    ...(keepAlive === undefined ? {} : { keepAlive }),
  };
}

/** An http(s) URL without a trailing slash, /v1 (the specification's OpenAI-style path) or /api. */
function ollamaUrl(input: string, ctx: z.RefinementCtx<string>): string {
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    ctx.addIssue({ code: "custom", message: `"${input}" is not a URL (e.g. http://localhost:11434)` });
    return z.NEVER;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    ctx.addIssue({ code: "custom", message: `must be an http(s):// URL, got ${url.protocol}//` });
    return z.NEVER;
  }
  const path = url.pathname.replace(/\/+$/, "").replace(/\/(v1|api)$/, "");
  return `${url.protocol}//${url.host}${path}`;
}

/** Ollama's keep_alive: a number is seconds (negative: forever), else a Go duration such as 5m or 1h30m. */
function keepAliveValue(input: string, ctx: z.RefinementCtx<string>): string | number {
  if (/^-?\d+$/.test(input)) return Number(input);
  if (/^-?(\d+(\.\d+)?(ns|us|ms|s|m|h))+$/.test(input)) return input;
  ctx.addIssue({
    code: "custom",
    message: `must be seconds or a duration such as 5m, 1h or -1, got "${input}"`,
  });
  return z.NEVER;
}

function parseModels(setting: RawSetting, engine: EngineKind | undefined): ModelSpec[] {
  const models: ModelSpec[] = [];
  for (const value of setting.values) {
    const spec = parseModelSpec(value, setting.label, engine);
    if (models.some((m) => m.name === spec.name)) {
      throw new ConfigError(setting.label, `model name "${spec.name}" is given twice`);
    }
    models.push(spec);
  }
  return models;
}

const ENGINE_PREFIX = /^(llamacpp|mlx|ollama):(.*)$/s;
/** Ollama's model names: [host/][namespace/]model[:tag]. */
const OLLAMA_TAG = /^[A-Za-z0-9][A-Za-z0-9._\-/:]{0,255}$/;

/**
 * `[NAME=][ENGINE:]PATH`. PATH is a GGUF file (the name defaults to the file name without its
 * extension), an MLX model folder (the folder's name), or with ENGINE `ollama` an Ollama tag (the
 * tag). NAME may carry a version (`NAME:1.2`). ENGINE, or else `engine` (--engine), binds the
 * model to that engine, and a model that engine cannot run is refused here.
 */
export function parseModelSpec(value: string, label = "--model", engine?: EngineKind): ModelSpec {
  const eq = value.indexOf("=");
  // Anything shaped like a name before the "=" is one; whether it is a valid model id comes next.
  const named = eq > 0 && ModelName.safeParse(value.slice(0, eq)).success;
  let target = named ? value.slice(eq + 1) : value;
  const prefix = ENGINE_PREFIX.exec(target);
  const chosen = (prefix?.[1] as EngineKind | undefined) ?? engine;
  if (prefix) target = prefix[2] ?? "";
  const bound = chosen === undefined ? {} : { engine: chosen };
  if (chosen === "ollama") {
    const tag = target.trim();
    if (!OLLAMA_TAG.test(tag))
      throw new ConfigError(label, `"${tag}" is not an Ollama model tag (e.g. llama3.2:3b)`);
    const name = named ? value.slice(0, eq) : tag;
    checkModelName(name, named, label, "NAME=ollama:TAG");
    return { name, path: tag, format: "ollama", ...bound };
  }
  const path = resolve(expandHome(target));
  let file: boolean;
  try {
    file = statSync(path).isFile();
  } catch {
    throw new ConfigError(label, `model file ${path} does not exist`);
  }
  if (file) {
    if (chosen === "mlx") {
      throw new ConfigError(
        label,
        `${path} is a file; the MLX engine loads model folders (config.json and *.safetensors)`,
      );
    }
    const name = named ? value.slice(0, eq) : basename(path, extname(path));
    checkModelName(name, named, label, "NAME=PATH");
    return { name, path, ...bound };
  }
  const folder = inspectModelFolder(path);
  if (!folder.mlx) {
    throw new ConfigError(
      label,
      `${path} is not a file, nor an MLX model folder (config.json and *.safetensors)`,
    );
  }
  if (chosen === "llamacpp" && !folder.gguf) {
    throw new ConfigError(
      label,
      `${path} is an MLX model folder without a GGUF file; llama.cpp cannot load it`,
    );
  }
  const name = named ? value.slice(0, eq) : basename(path);
  checkModelName(name, named, label, "NAME=PATH");
  return { name, path, format: "mlx", ...(folder.gguf ? { gguf: folder.gguf } : {}), ...bound };
}

function checkModelName(name: string, named: boolean, label: string, form: string): asserts name is ModelId {
  if (isModelId(name)) return;
  throw new ConfigError(
    label,
    named
      ? `cannot use "${name}" as a model name; it may end in one :VERSION at most`
      : `cannot use "${name}" as a model name; give one with ${form}`,
  );
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function expandHome(path: string): string {
  return path === "~" || path.startsWith("~/") ? join(homedir(), path.slice(1)) : path;
}

export function settingsHelp(): string {
  const rows = Object.entries(SETTINGS).map(([flag, spec]) => {
    const left = `  --${flag} ${spec.value}`;
    return `${left.padEnd(34)}${spec.describe}${spec.env ? `  [${spec.env}]` : ""}`;
  });
  return rows.join("\n");
}
