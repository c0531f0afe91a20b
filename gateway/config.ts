// Typed view of the Worker's vars (wrangler.toml [vars]); one place that knows their defaults.
import { log } from "./log.ts";

export interface GatewayConfig {
  version: string;
  jwtIssuer: string | undefined;
  jwtAudience: string | undefined;
  /** Queued requests per model in one pool. */
  queueMax: number;
  /** How long a request may wait in the queue for an agent. */
  queueTimeoutMs: number;
  /** Model for POST /generate when the body names none; undefined = first model any agent serves. */
  defaultModel: string | undefined;
  /** How long an agent has after the upgrade to send `hello`. */
  helloTimeoutMs: number;
  /** How often agents send HEARTBEAT_PING (announced in `welcome`). */
  heartbeatIntervalMs: number;
  /** An agent silent (no frame, no ping) for this long is closed with HEARTBEAT_TIMEOUT. */
  heartbeatTimeoutMs: number;
  /** How often agents send `health` (announced in `welcome`). */
  healthIntervalMs: number;
}

/**
 * Reads the vars with defaults. A malformed number is logged and replaced by its default rather
 * than failing every request: these are tuning knobs, not security settings.
 */
export function readConfig(bindings: object): GatewayConfig {
  const env = bindings as Partial<Record<string, unknown>>;
  const heartbeatIntervalMs = positiveInt(env, "HEARTBEAT_INTERVAL_MS", 15_000);
  return {
    version: text(env.ORCHARD_VERSION) ?? "0.0.0",
    jwtIssuer: text(env.JWT_ISSUER),
    jwtAudience: text(env.JWT_AUDIENCE),
    queueMax: positiveInt(env, "QUEUE_MAX", 64),
    queueTimeoutMs: positiveInt(env, "QUEUE_TIMEOUT_MS", 30_000),
    defaultModel: text(env.DEFAULT_MODEL),
    helloTimeoutMs: positiveInt(env, "HELLO_TIMEOUT_MS", 10_000),
    heartbeatIntervalMs,
    heartbeatTimeoutMs: 3 * heartbeatIntervalMs,
    healthIntervalMs: positiveInt(env, "HEALTH_INTERVAL_MS", 30_000),
  };
}

function text(value: unknown): string | undefined {
  return typeof value === "string" && value.trim() !== "" ? value.trim() : undefined;
}

function positiveInt(env: Partial<Record<string, unknown>>, name: string, fallback: number): number {
  const raw = text(env[name]);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (Number.isSafeInteger(value) && value > 0) return value;
  log("warn", "config var is not a positive integer; using the default", { var: name, fallback });
  return fallback;
}
