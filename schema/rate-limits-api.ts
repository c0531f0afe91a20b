// The admin API of per-subject rate limits (gateway/routes/rate-limits.ts, docs/rate-limits.md):
// PUT /rate-limits/{subject} sets overrides, GET shows the limits in force and the usage, DELETE
// removes the overrides. The limits themselves are enforced on the inference routes (429 RATE_LIMITED).
import { z } from "zod";
import { MAX_RATE_LIMIT, PartialRateLimits } from "./hub.ts";

/** A subject as the limiter keys it: a token's `sub`. */
export const RateLimitSubject = z.string().min(1).max(128);

const OverrideValue = z
  .number()
  .int()
  .positive()
  .max(MAX_RATE_LIMIT)
  .nullable()
  .optional()
  .describe("A positive integer sets the override; null removes it; absent leaves it as it is.");

/** PUT /rate-limits/{subject}. */
export const RateLimitOverrideRequest = z
  .strictObject({
    rpm: OverrideValue,
    tpm: OverrideValue,
    concurrency: OverrideValue,
  })
  .refine((r) => r.rpm !== undefined || r.tpm !== undefined || r.concurrency !== undefined, {
    message: "give at least one of rpm, tpm and concurrency",
  });
export type RateLimitOverrideRequest = z.infer<typeof RateLimitOverrideRequest>;

/**
 * Requests and tokens (prompt + completion) of the last minute as the buckets count them
 * (draining continuously; reservations of requests still running count in full), and the requests
 * running now.
 */
export const RateLimitUsage = z.object({
  rpm: z.number().int().nonnegative(),
  tpm: z.number().int().nonnegative(),
  concurrency: z.number().int().nonnegative(),
});
export type RateLimitUsage = z.infer<typeof RateLimitUsage>;

export const RateLimitSource = z
  .enum(["override", "token", "role"])
  .describe(
    "Where the limit comes from: an admin's override (PUT /rate-limits), the token's rate_limits claim, or RATE_LIMITS for the role.",
  );

const Limit = z.object({ limit: z.number().int().positive(), source: RateLimitSource });

/** GET /rate-limits/{subject}, and the answer of PUT and DELETE. */
export const RateLimitStatus = z.object({
  subject: RateLimitSubject,
  /** The role the limits are shown for: ?role=, else the role of the subject's last request, else user. */
  role: z.string(),
  /** False when RATE_LIMITS is "off": nothing is enforced, overrides are kept for when it is on. */
  enforced: z.boolean(),
  limits: z.object({ rpm: Limit, tpm: Limit, concurrency: Limit }),
  usage: RateLimitUsage,
  remaining: RateLimitUsage,
  /** What admins set for this subject (PUT); {} when nothing. */
  overrides: PartialRateLimits,
  /** The rate_limits claim of the subject's last token, when it had one. */
  tokenClaim: PartialRateLimits.nullable(),
  /** Models with their own limits (RATE_LIMITS models) the subject used lately, and their usage. */
  models: z.array(z.object({ model: z.string(), limits: PartialRateLimits, usage: RateLimitUsage })),
});
export type RateLimitStatus = z.infer<typeof RateLimitStatus>;
