// Per-request options callers set with headers.
import { GatewayError } from "../errors.ts";

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
