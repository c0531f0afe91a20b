// The rate limits' admin operations: a subject's overrides and usage (docs/rate-limits.md).
import { z } from "zod";
import {
  RateLimitOverrideRequest,
  RateLimitStatus,
  RateLimitSubject,
} from "../../../schema/rate-limits-api.ts";
import type { OperationSpec } from "../operation.ts";

const subject = z.object({ subject: RateLimitSubject.describe("The subject: a token's `sub`.") });
const role = z.object({
  role: z
    .enum(["user", "admin"])
    .optional()
    .describe("Show the limits for this role (default: the role of the subject's last request, else user)."),
});
const answer = {
  "200": { description: "The subject's limits, their sources and its usage.", json: RateLimitStatus },
};

export const rateLimitOperations: OperationSpec[] = [
  {
    method: "get",
    path: "/rate-limits/{subject}",
    operationId: "getRateLimits",
    tag: "Rate limits",
    access: "admin",
    summary: "A subject's limits and usage",
    description:
      "Each limit (requests and tokens per minute, concurrent requests) with where it comes from: an admin's " +
      "override, else the token's `rate_limits` claim, else RATE_LIMITS for the role. Usage is the buckets' " +
      "count of the last minute (reservations of running requests in full) and the requests running now.",
    params: { path: subject, query: role },
    responses: answer,
    errors: ["INVALID_REQUEST", "UPSTREAM_ERROR"],
  },
  {
    method: "put",
    path: "/rate-limits/{subject}",
    operationId: "setRateLimits",
    tag: "Rate limits",
    access: "admin",
    summary: "Override a subject's limits",
    description:
      "Each field given sets that override (null removes it); fields left out stay as they are. Overrides win " +
      "over the token's claim and the role's defaults, take effect with the subject's next request, and outlive " +
      "restarts.",
    params: { path: subject, query: role },
    body: { schema: RateLimitOverrideRequest, example: { rpm: 120, tpm: 50000, concurrency: null } },
    responses: answer,
    errors: ["UPSTREAM_ERROR"],
  },
  {
    method: "delete",
    path: "/rate-limits/{subject}",
    operationId: "clearRateLimits",
    tag: "Rate limits",
    access: "admin",
    summary: "Remove a subject's overrides",
    description: "The subject is limited by its token's claim and its role's defaults again. Usage is kept.",
    params: { path: subject, query: role },
    responses: answer,
    errors: ["INVALID_REQUEST", "UPSTREAM_ERROR"],
  },
];
