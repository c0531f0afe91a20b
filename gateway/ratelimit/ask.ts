// What an inference route asks of the rate limiter for one request: the caller's subject, the
// limits its role (RATE_LIMITS) and token (the `rate_limits` claim) give it, the requested model's
// own limits, and the tokens to reserve: the prompt as estimated plus max_tokens.
import type { Context } from "hono";
import { decodeJwt } from "jose";
import {
  DEFAULT_POOL,
  type DispatchRequest,
  isPartialRateLimits,
  type PartialRateLimits,
  type RateLimitAsk,
} from "../../schema/hub.ts";
import { log } from "../log.ts";
import type { AppEnv } from "../types.ts";
import { modelLimits, rateLimitConfig } from "./config.ts";

/** The prompt estimate before a tokenizer has seen it: about four characters per token. */
export const CHARS_PER_TOKEN = 4;
/** A chat message's share of the chat template (role markers, separators), in tokens. */
export const TOKENS_PER_MESSAGE = 4;
/** The token claim that carries a subject's own limits: {"rate_limits": {"rpm"?, "tpm"?, "concurrency"?}}. */
export const RATE_LIMITS_CLAIM = "rate_limits";

/** ceil(chars / 4) of the prompt; for chat, of every message's content, plus 4 per message. */
export function estimatePromptTokens(request: Pick<DispatchRequest, "prompt" | "messages">): number {
  if (request.prompt !== undefined) return Math.ceil(request.prompt.length / CHARS_PER_TOKEN);
  const messages = request.messages ?? [];
  let chars = 0;
  for (const m of messages) chars += m.content.length;
  return Math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * messages.length;
}

/** The rate limiter's ask for `request`, or null when RATE_LIMITS is "off". */
export function rateLimitAsk<E extends AppEnv>(
  c: Context<E>,
  request: DispatchRequest,
  pools: readonly string[],
): RateLimitAsk | null {
  const config = rateLimitConfig(c.env);
  if (!config.enabled) return null;
  const caller = c.get("caller");
  const role = caller.role === "admin" ? config.roles.admin : config.roles.user;
  const promptTokens = estimatePromptTokens(request);
  const ask: RateLimitAsk = {
    subject: caller.sub,
    role: caller.role,
    limits: role.limits,
    promptTokens,
    tokens: promptTokens + request.params.maxTokens,
    pool: pools[0] ?? DEFAULT_POOL,
    route: request.response.api,
  };
  const claim = tokenClaim(c.req.header("Authorization"));
  if (claim !== null) ask.claim = claim;
  const model = modelLimits(role, request.model);
  if (model !== undefined) ask.model = model;
  if (request.timeoutMs !== undefined) ask.timeoutMs = request.timeoutMs;
  return ask;
}

/**
 * Per isolate: the claim of each token seen lately (a pure function of the token, which auth has
 * verified before any route runs), so the payload is decoded once per token, not per request.
 */
const claims = new Map<string, PartialRateLimits | null>();
const MAX_CACHED_CLAIMS = 4_096;

/** The verified bearer token's `rate_limits` claim; null when it has none (or a malformed one). */
export function tokenClaim(authorization: string | undefined): PartialRateLimits | null {
  const token = authorization?.match(/^Bearer[ \t]+(\S+)/i)?.[1];
  if (token === undefined) return null;
  const cached = claims.get(token);
  if (cached !== undefined) return cached;
  let claim: PartialRateLimits | null = null;
  try {
    const value = decodeJwt(token)[RATE_LIMITS_CLAIM];
    if (value !== undefined) {
      if (isPartialRateLimits(value)) {
        const { rpm, tpm, concurrency } = value;
        claim = { ...(rpm && { rpm }), ...(tpm && { tpm }), ...(concurrency && { concurrency }) };
        if (Object.keys(claim).length === 0) claim = null;
      } else {
        log("warn", `the token's ${RATE_LIMITS_CLAIM} claim is malformed; ignoring it`);
      }
    }
  } catch {
    claim = null;
  }
  if (claims.size >= MAX_CACHED_CLAIMS) claims.clear();
  claims.set(token, claim);
  return claim;
}
