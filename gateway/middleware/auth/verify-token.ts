// One bearer JWT verified by jose against the key its header selects (key-sources.ts): the signature
// with that source's algorithm allow-list, `exp` (exact) and `sub` required, `nbf` with the clock
// tolerance, `iss`/`aud` when configured; then the claims auth() needs, the role read from the
// source's role claim. Every refusal is a GatewayError with a stable code.
import {
  decodeProtectedHeader,
  errors,
  type JWTPayload,
  jwtVerify,
  type ProtectedHeaderParameters,
} from "jose";
import { z } from "zod";
import type { Role } from "../../../schema/api.ts";
import type { GatewayConfig } from "../../config.ts";
import { GatewayError } from "../../errors.ts";
import { type KeySources, KeySourceUnavailable } from "./key-sources.ts";
import type { VerifiedClaims } from "./verified-tokens.ts";

const Claims = z.object({ sub: z.string().min(1).max(128), jti: z.string().min(1).max(256).optional() });

/** A token listing several roles acts with the first of these it holds. */
const ROLE_PRECEDENCE: readonly Role[] = ["admin", "user", "agent"];

/** Seconds a client should wait after AUTH_UNAVAILABLE (jose refetches a failed set at once). */
const UNAVAILABLE_RETRY_S = 5;

export async function verifyToken(
  token: string,
  sources: KeySources,
  config: GatewayConfig,
  nowMs: number,
): Promise<VerifiedClaims> {
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader(token);
  } catch (err) {
    throw new GatewayError("UNAUTHORIZED", "invalid token", { cause: err });
  }
  const selected = await sources.select(header);
  if (selected === undefined) throw new GatewayError("UNAUTHORIZED", "invalid token: no key for its kid");
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, selected.key as Parameters<typeof jwtVerify>[1], {
      algorithms: [...selected.algorithms],
      issuer: config.jwtIssuer,
      audience: config.jwtAudience,
      requiredClaims: ["exp", "sub"],
      // jose applies the tolerance to exp too; exp is checked exactly below.
      clockTolerance: config.jwtClockToleranceS,
      currentDate: new Date(nowMs),
    }));
  } catch (err) {
    throw refusal(err);
  }
  const exp = payload.exp as number;
  if (exp <= Math.floor(nowMs / 1000)) throw new GatewayError("TOKEN_EXPIRED", "token has expired");
  const claims = Claims.safeParse(payload);
  if (!claims.success) throw new GatewayError("UNAUTHORIZED", "invalid token claims");
  return {
    sub: claims.data.sub,
    jti: claims.data.jti,
    role: roleOf(payload, selected.roleClaim),
    exp,
    reuseUntilMs: nowMs + selected.reuseMs,
  };
}

function refusal(err: unknown): GatewayError {
  if (err instanceof KeySourceUnavailable) {
    return new GatewayError("AUTH_UNAVAILABLE", "the identity provider's keys cannot be fetched right now", {
      retryAfterSeconds: UNAVAILABLE_RETRY_S,
      cause: err,
    });
  }
  if (err instanceof errors.JWTExpired) return new GatewayError("TOKEN_EXPIRED", "token has expired");
  if (err instanceof errors.JWTClaimValidationFailed && err.claim === "nbf") {
    return new GatewayError("UNAUTHORIZED", "token is not valid yet (nbf)");
  }
  return new GatewayError("UNAUTHORIZED", "invalid token", { cause: err });
}

/**
 * The role `claim` names: a string, or an array of strings (an identity provider's groups) of which
 * the most privileged known role counts. A name with dots that is not itself a claim is read as a
 * path (`realm_access.roles`). Undefined when no known role is there (403 on every route).
 */
export function roleOf(payload: JWTPayload, claim: string): Role | undefined {
  let value: unknown = payload[claim];
  if (value === undefined && claim.includes(".")) {
    value = claim
      .split(".")
      .reduce<unknown>((node, key) => (isRecord(node) ? node[key] : undefined), payload);
  }
  const names = typeof value === "string" ? [value] : Array.isArray(value) ? value : [];
  return ROLE_PRECEDENCE.find((role) => names.includes(role));
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null;
