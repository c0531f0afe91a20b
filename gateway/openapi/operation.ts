// One HTTP operation of the gateway as the OpenAPI document describes it: method, path, who may call
// it, what it takes and what it answers, all as the zod schemas the routes use. The lists in
// operations/ are made of these; document.ts turns them into the document.
import type { z } from "zod";
import type { ErrorCode } from "../../schema/api.ts";

export type Method = "get" | "post" | "put" | "delete";

/**
 * Who may call an operation (gateway/middleware/auth). `user` is role user or admin (an admin may do
 * all a user may); `admin_or_metrics_token` is an admin JWT or the Prometheus scrape token.
 */
export type Access = "public" | "user" | "admin" | "agent" | "agent_or_admin" | "admin_or_metrics_token";

export const TAGS = {
  Inference: "Completions over Orchard's own API and the OpenAI-compatible one, and feedback on answers.",
  "Structured outputs": "Generations valid against a JSON Schema, and schemas registered by name.",
  Models: "The model registry: versions, their lifecycle, tags, aliases, metrics and weights.",
  Deployments: "Rolling a new version out: immediate, blue-green, canary and rolling.",
  "A/B tests": "Splitting a model's end users between two versions and judging the difference.",
  Agents: "The Macs that serve models: their connection, their state, revocation.",
  "Circuit breakers": "The breakers that keep requests away from failing agents and models.",
  Security: "The prompt-injection policy (filters, sanitization and headers are set in wrangler.toml).",
  "Rate limits": "Per-subject limits of requests, tokens and concurrency on the inference routes.",
  Authentication: "Revoking tokens before they expire, and the audit trail of admin actions.",
  "Health and monitoring": "Probes, Prometheus metrics, the performance report, alerts and the dashboard.",
  Reference: "This document and the page rendered from it.",
} as const;
export type Tag = keyof typeof TAGS;

/** A JSON Schema written out, for bodies no zod schema describes (text, bytes, HTML, this document). */
export type RawSchema = { type: "string" | "object"; format?: string; description?: string };

export interface JsonBodySpec {
  schema: z.ZodType;
  /** A body the route accepts: shown in the document, and parsed with `schema` by the tests. */
  example: unknown;
  /** The request may carry no body at all (it stands for `{}`). */
  optional?: boolean;
  /** The route's byte limit when it is not json-body's default (Limits.maxBodyBytes). */
  maxBytes?: number;
  /** The code an oversized body gets when it is not PAYLOAD_TOO_LARGE (the registry's METADATA_TOO_LARGE). */
  tooLargeCode?: ErrorCode;
}

export interface ResponseSpec {
  description: string;
  /** An application/json body. */
  json?: z.ZodType;
  /** Bodies of other media types (or JSON next to them), by media type. */
  content?: Record<string, z.ZodType | RawSchema>;
  /** Response headers worth naming (X-Request-Id is on every response and added by the document). */
  headers?: z.ZodObject;
}

export interface OperationSpec {
  method: Method;
  /** The OpenAPI path: Hono's `/models/:name` is `/models/{name}`, with the route's own names. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tag: Tag;
  access: Access;
  params?: { path?: z.ZodObject; query?: z.ZodObject; header?: z.ZodObject };
  body?: JsonBodySpec;
  /** A request body that is not JSON (an artifact upload). */
  rawBody?: { contentType: string; description: string };
  /** The answers that are not error bodies, by status (GET /ready's 503 is one). */
  responses: Record<`${number}`, ResponseSpec>;
  /**
   * The stable codes this operation answers with beyond the ones every operation of its kind has
   * (document.ts adds those: auth codes for authenticated ones, body codes for JSON bodies, INTERNAL).
   */
  errors: readonly ErrorCode[];
}

/** The codes the auth middleware answers with. */
export const AUTH_ERRORS = [
  "UNAUTHORIZED",
  "TOKEN_EXPIRED",
  "TOKEN_REVOKED",
  "FORBIDDEN",
  "AUTH_UNAVAILABLE",
] as const satisfies ErrorCode[];
/** The codes the json-body middleware answers with (schemas may add their own, e.g. INVALID_VERSION). */
export const BODY_ERRORS = [
  "INVALID_JSON",
  "INVALID_REQUEST",
  "PAYLOAD_TOO_LARGE",
  "UNSUPPORTED_MEDIA_TYPE",
] as const satisfies ErrorCode[];
