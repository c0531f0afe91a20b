// What every inference route (/generate, /generate/structured, /v1) reads off its request the
// same way: id, deadline header, caller, end user and pool order. Kept apart from
// request-options.ts, which is pure, because pool order comes from the hub client.
import type { Context } from "hono";
import { USER_HEADER } from "../../schema/rollouts.ts";
import { type GatewayConfig, readConfig } from "../config.ts";
import type { AppEnv } from "../types.ts";
import { poolOrder } from "./hub-client.ts";
import { endUser, requestTimeoutMs, TIMEOUT_HEADER } from "./request-options.ts";

/** The parts of a dispatch every inference route (/generate, /generate/structured, /v1) takes alike. */
export interface InferenceRequest {
  requestId: string;
  receivedAt: number;
  config: GatewayConfig;
  timeoutMs: number | undefined;
  /** The token's subject. */
  caller: string;
  /** The end user rollouts assign (endUser). */
  subject: string;
  /** The pools to try, in order (poolOrder). */
  pools: readonly string[];
}

/**
 * Reads the request's id, deadline header, caller and end user, and orders the pools for `model`
 * (without one: DEFAULT_MODEL's pools, or, none set, the default pool, whose hub picks a model).
 */
export function inferenceRequest<E extends AppEnv>(
  c: Context<E>,
  model: string | undefined,
  bodyUser?: string,
): InferenceRequest {
  const requestId = c.get("requestId");
  const receivedAt = Date.now();
  const config = readConfig(c.env);
  const timeoutMs = requestTimeoutMs(c.req.header(TIMEOUT_HEADER), config.requestTimeoutMaxMs);
  const caller = c.get("caller").sub;
  const subject = endUser(c.req.header(USER_HEADER), bodyUser, caller);
  const pools = poolOrder(config.pools, model ?? config.defaultModel, requestId);
  return { requestId, receivedAt, config, timeoutMs, caller, subject, pools };
}
