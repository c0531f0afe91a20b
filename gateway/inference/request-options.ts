// Per-request options callers set with headers: the deadline, and the end user rollouts assign;
// and what every inference route reads off its request the same way (inferenceRequest).
import type { Context } from "hono";
import { USER_HEADER } from "../../schema/rollouts.ts";
import { type GatewayConfig, readConfig } from "../config.ts";
import { GatewayError } from "../errors.ts";
import type { AppEnv } from "../types.ts";
import { poolOrder } from "./hub-client.ts";

/** The caller's deadline for one request, in ms from now (queue wait + generation). */
export const TIMEOUT_HEADER = "X-Orchard-Timeout-Ms";

/**
 * X-Orchard-Timeout-Ms: a positive integer, capped at `maxMs`; absent -> undefined (the pool's
 * REQUEST_TIMEOUT_MS applies). Anything else is a 400 naming the header.
 */
export function requestTimeoutMs(header: string | undefined, maxMs: number): number | undefined {
  if (header === undefined) return undefined;
  const value = header.trim();
  const ms = Number(value);
  if (!/^[0-9]{1,16}$/.test(value) || !Number.isSafeInteger(ms) || ms <= 0) {
    throw new GatewayError("INVALID_REQUEST", `${TIMEOUT_HEADER} must be a positive integer (milliseconds)`, {
      param: TIMEOUT_HEADER,
    });
  }
  return Math.min(ms, maxMs);
}

/** Longest end-user id X-Orchard-User may carry (as OpenAI's `user` field). */
export const MAX_USER_LENGTH = 256;

/**
 * The request's end user, for sticky rollout assignment: the OpenAI `user` field when the body
 * has one, else X-Orchard-User, else the token's subject. An empty value counts as absent; a
 * header longer than MAX_USER_LENGTH is a 400 naming it.
 */
export function endUser(header: string | undefined, bodyUser: string | undefined, sub: string): string {
  if (header !== undefined && header.length > MAX_USER_LENGTH) {
    throw new GatewayError(
      "INVALID_REQUEST",
      `${USER_HEADER} must be at most ${MAX_USER_LENGTH} characters`,
      {
        param: USER_HEADER,
      },
    );
  }
  if (bodyUser !== undefined && bodyUser !== "") return bodyUser;
  if (header !== undefined && header !== "") return header;
  return sub;
}

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
