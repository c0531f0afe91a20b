// Structured logger for the node agent: one JSON object per line on stderr, filtered by level.
// `msg` comes first so a line can be matched cheaply (`{"msg":"connected",...`).

export const LOG_LEVELS = ["debug", "info", "warn", "error", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  readonly level: LogLevel;
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `bindings` to every line. */
  child(bindings: LogFields): Logger;
}

export interface LoggerOptions {
  level?: LogLevel;
  /** Receives each finished line, without the trailing newline. Defaults to stderr. */
  write?: (line: string) => void;
  bindings?: LogFields;
  now?: () => Date;
}

export function createLogger({
  level = "info",
  write = (line) => process.stderr.write(`${line}\n`),
  bindings = {},
  now = () => new Date(),
}: LoggerOptions = {}): Logger {
  const threshold = RANK[level];
  const emit = (lineLevel: Exclude<LogLevel, "silent">, msg: string, fields?: LogFields) => {
    if (RANK[lineLevel] < threshold) return;
    const record = { msg, level: lineLevel, time: now().toISOString(), ...bindings, ...fields };
    write(JSON.stringify(record, replaceErrors));
  };
  return {
    level,
    debug: (msg, fields) => emit("debug", msg, fields),
    info: (msg, fields) => emit("info", msg, fields),
    warn: (msg, fields) => emit("warn", msg, fields),
    error: (msg, fields) => emit("error", msg, fields),
    child: (more) => createLogger({ level, write, bindings: { ...bindings, ...more }, now }),
  };
}

/** A logger that drops everything (tests, library use). */
export const silentLogger: Logger = createLogger({ level: "silent", write: () => {} });

// Errors serialise to {} by default; keep name, code and message. Stacks stay out of the default
// shape and are logged only where a caller passes them explicitly.
function replaceErrors(_key: string, value: unknown): unknown {
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return { name: value.name, message: value.message, ...(code === undefined ? {} : { code }) };
  }
  if (typeof value === "bigint") return value.toString();
  return value;
}

/** The error's message, or a string form of a non-Error throw, for a log field. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
