// Gateway errors with stable codes, and the one table that maps each code to its HTTP status.
// Callers branch on `code` (schema/api.ts ErrorCode), never on the message text.
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ErrorCode } from "../schema/api.ts";

export const STATUS_BY_CODE = {
  UNAUTHORIZED: 401,
  TOKEN_EXPIRED: 401,
  FORBIDDEN: 403,
  INVALID_JSON: 400,
  INVALID_REQUEST: 400,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  MODEL_NOT_FOUND: 404,
  NO_AGENT_AVAILABLE: 503,
  QUEUE_FULL: 429,
  QUEUE_TIMEOUT: 504,
  RATE_LIMITED: 429,
  AGENT_REVOKED: 403,
  UPGRADE_REQUIRED: 426,
  UPSTREAM_ERROR: 502,
  GATEWAY_TIMEOUT: 504,
  CONTEXT_OVERFLOW: 400,
  BREAKER_NOT_FOUND: 404,
  AGENT_NOT_FOUND: 404,
  // The agent's D1 row names a pool this gateway's POOLS does not configure.
  POOL_NOT_CONFIGURED: 403,
  // A chat field Orchard does not implement yet (response_format, tools, n > 1, ...).
  UNSUPPORTED_PARAMETER: 400,
  // Only ever seen mid-stream (the stream's error event): the caller stopped reading.
  SLOW_CONSUMER: 408,
  // The model registry (/models).
  // A registry name outside REGISTRY_NAME_PATTERN.
  INVALID_MODEL_NAME: 400,
  // A version that is not semver.
  INVALID_VERSION: 400,
  // A path's model id is not name:version or name@alias.
  INVALID_MODEL_ID: 400,
  INVALID_ALIAS: 400,
  INVALID_TAG: 400,
  // Metrics that are not finite numbers.
  INVALID_METRICS: 400,
  INVALID_TIME: 400,
  // Registry metadata over its documented limits.
  METADATA_TOO_LARGE: 400,
  // A registration whose parent version does not exist.
  PARENT_NOT_FOUND: 400,
  VERSION_NOT_FOUND: 404,
  ALIAS_NOT_FOUND: 404,
  // Versions are immutable: a second registration of one is refused.
  VERSION_EXISTS: 409,
  VERSION_ARCHIVED: 409,
  // Archiving the active version: deactivate or roll back first.
  VERSION_ACTIVE: 409,
  NO_PREVIOUS_VERSION: 409,
  // Too few agents loaded the version before the activation's timeout.
  ACTIVATION_NOT_READY: 503,
  SOURCE_NOT_ARTIFACT: 409,
  ARTIFACT_EXISTS: 409,
  ARTIFACT_NOT_FOUND: 404,
  ARTIFACT_SIZE_MISMATCH: 400,
  ARTIFACT_HASH_MISMATCH: 400,
  ARTIFACT_TOO_LARGE: 413,
  RANGE_NOT_SATISFIABLE: 416,
  // Inference on a version the registry archived: it is gone for good, not just unavailable.
  MODEL_ARCHIVED: 410,
  // Deployments and A/B tests: one running per model at a time (either kind).
  ROLLOUT_IN_PROGRESS: 409,
  // Deploying the version that already serves the name.
  NOTHING_TO_DEPLOY: 409,
  // An A/B test's model_a must be the version serving its name now (the baseline).
  VERSION_NOT_ACTIVE: 409,
  DEPLOYMENT_NOT_FOUND: 404,
  DEPLOYMENT_NOT_RUNNING: 409,
  DEPLOYMENT_NOT_PAUSED: 409,
  // A command the deployment's strategy or state does not take (promote a blue-green before its switch).
  COMMAND_NOT_ALLOWED: 409,
  AB_TEST_NOT_FOUND: 404,
  AB_TEST_EXISTS: 409,
  AB_TEST_NOT_RUNNING: 409,
  // Feedback on a request id this gateway does not remember (unknown, or older than it keeps).
  REQUEST_NOT_FOUND: 404,
  // Feedback on someone else's request.
  FEEDBACK_FORBIDDEN: 403,
  FEEDBACK_EXISTS: 409,
  // The prompt-injection rules refused the prompt (INJECTION_POLICY block); the message names the rule.
  PROMPT_INJECTION: 400,
  // A CONTENT_FILTERS pattern with action block matched the prompt, or the generated text.
  CONTENT_FILTERED: 400,
  // A token whose jti or subject an admin revoked (POST /tokens/revoke).
  TOKEN_REVOKED: 401,
  // The gateway cannot check tokens right now (the JWKS or the revocation list did not answer).
  AUTH_UNAVAILABLE: 503,
  REVOCATION_NOT_FOUND: 404,
  TOO_MANY_REVOCATIONS: 409,
  // A JSON Schema that is no schema (bad JSON Schema, a local $ref that resolves to nothing); the param names the path.
  INVALID_SCHEMA: 400,
  // A keyword the gateway cannot validate or enforce; refused with the keyword named, never ignored.
  UNSUPPORTED_SCHEMA_KEYWORD: 400,
  // A $ref to anything but this schema's own definitions: the gateway fetches nothing.
  SCHEMA_REMOTE_REF: 400,
  // Over the size, depth or property-count limits (README "Structured outputs").
  SCHEMA_TOO_LARGE: 400,
  // A registered schema name (/schemas) nobody registered.
  SCHEMA_NOT_FOUND: 404,
  SCHEMA_EXISTS: 409,
  // tool_choice names a function that `tools` does not define.
  UNKNOWN_TOOL: 400,
  // A `tool` message whose tool_call_id no earlier assistant message called.
  TOOL_CALL_MISMATCH: 400,
  // Every attempt's output failed validation against the schema (max_retries spent, or the deadline).
  STRUCTURED_OUTPUT_INVALID: 422,
  INTERNAL: 500,
} as const satisfies Record<ErrorCode, ContentfulStatusCode>;

export interface GatewayErrorOptions {
  /** The request field at fault (OpenAI's `param`), e.g. "messages.0.content". */
  param?: string;
  /** Seconds a caller should wait before retrying; sent as Retry-After. */
  retryAfterSeconds?: number;
  /** Extra response headers, e.g. Allow on 405. */
  headers?: Record<string, string>;
  /** Structured facts about the failure, sent as `error.details` (STRUCTURED_OUTPUT_INVALID's issues). */
  details?: Record<string, unknown>;
  cause?: unknown;
}

/** An error whose message is safe to show the caller. Anything else becomes a plain 500. */
export class GatewayError extends Error {
  override readonly name = "GatewayError";
  readonly code: ErrorCode;
  readonly status: ContentfulStatusCode;
  readonly param: string | null;
  readonly retryAfterSeconds: number | undefined;
  readonly headers: Record<string, string>;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: GatewayErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.code = code;
    this.status = STATUS_BY_CODE[code];
    this.param = options.param ?? null;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.headers = { ...options.headers };
    this.details = options.details;
    if (options.retryAfterSeconds !== undefined)
      this.headers["Retry-After"] = String(options.retryAfterSeconds);
  }
}

/** The generic message for codes whose detail must not leak (INTERNAL). */
export const INTERNAL_MESSAGE = "internal error";

/** OpenAI's error `type` for a status, so SDKs classify our errors as they classify OpenAI's. */
export function openAIErrorType(status: number): string {
  if (status === 401) return "authentication_error";
  if (status === 403) return "permission_error";
  if (status === 404) return "not_found_error";
  if (status === 429) return "rate_limit_error";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

/** Requests under /v1 speak OpenAI's error shape; every other route speaks ErrorBody. */
export function isOpenAIPath(path: string): boolean {
  return path === "/v1" || path.startsWith("/v1/");
}

export function errorBody(err: GatewayError, requestId: string) {
  if (err.details === undefined) return { error: { code: err.code, message: err.message, requestId } };
  return { error: { code: err.code, message: err.message, requestId, details: err.details } };
}

export function openAIErrorBody(err: GatewayError) {
  const error = { message: err.message, type: openAIErrorType(err.status), param: err.param, code: err.code };
  return { error: err.details === undefined ? error : { ...error, details: err.details } };
}
