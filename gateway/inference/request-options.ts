// Per-request options callers set with headers: the deadline, and the end user rollouts assign.
// Pure (no Worker runtime imports): the OpenAPI document, built in Node too, reads these names.
import { USER_HEADER } from "../../schema/rollouts.ts";
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
