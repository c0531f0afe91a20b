// The gateway's OpenAPI 3.1 document, built from the operation lists in operations/ and the zod
// schemas they name. Generator: zod-openapi (6.x). It renders through zod 4's own z.toJSONSchema,
// so the document says what the schemas accept (request bodies as zod's input, responses as its
// output), it reads metadata from zod's registry instead of patching zod's prototype, and it has
// no dependencies, no eval or `new Function` and no Node built-ins, so it runs in workerd.
// @asteasolutions/zod-to-openapi 9.x was the other candidate: it needs extendZodWithOpenApi(z)
// (a prototype patch) and `.openapi()` calls in schema/, which stays free of documentation concerns.
import { z } from "zod";
import { createDocument, type ZodOpenApiOperationObject, type ZodOpenApiResponseObject } from "zod-openapi";
import { AgentsResponse, PoolSummary } from "../../schema/agents-api.ts";
import {
  AgentEventsResponse,
  AgentRevocation,
  AgentRevokeResponse,
  BreakerResetRequest,
  BreakerResetResponse,
  BreakerStatusResponse,
  ChatCompletionRequest,
  ErrorBody,
  ErrorCode,
  GenerateRequest,
  GenerateResponse,
  HealthResponse,
  OpenAIErrorBody,
  ReadyResponse,
} from "../../schema/api.ts";
import {
  AbArm,
  AbMetricResult,
  AbReport,
  CanaryCriteria,
  CanaryJudgement,
  CanaryMetricResult,
  SampleRatioReport,
} from "../../schema/experiments.ts";
import { AgentSummary, HubMetrics } from "../../schema/hub.ts";
import { ActiveAlerts, Alert, HealthScore, PerformanceReport, ReportRow } from "../../schema/monitoring.ts";
import {
  AgentFrame,
  GatewayFrame,
  GenerateFrame,
  HealthFrame,
  HelloFrame,
  HostFacts,
  ModelInfo,
  WelcomeFrame,
} from "../../schema/protocol.ts";
import { RateLimitOverrideRequest, RateLimitStatus } from "../../schema/rate-limits-api.ts";
import {
  ALIAS_PATTERN,
  ModelParameters,
  ModelSource,
  Placement,
  REGISTRY_NAME_PATTERN,
  SEMVER_PATTERN,
} from "../../schema/registry.ts";
import {
  ActivateRequest,
  ActivateResponse,
  AliasName,
  LineageResponse,
  Metrics,
  MetricsRecord,
  MetricsRequest,
  ModelDetail,
  ModelEvent,
  ModelSummary,
  RegisterRequest,
  RegistryLimits,
  RegistryName,
  SemverVersion,
  ServingResponse,
  TAG_PATTERN,
  Tag,
  VersionDetail,
  VersionSummary,
} from "../../schema/registry-api.ts";
import { AbTestStartRequest, DeployRequest, FeedbackRequest } from "../../schema/rollouts-api.ts";
import { InjectionPolicyRequest, InjectionPolicyResponse } from "../../schema/security-api.ts";
import {
  GenerateStructuredRequest,
  GenerateStructuredResponse,
  RegisteredSchema,
  RegisteredSchemaList,
  SchemaIssueBody,
  SchemaRegistration,
  StructuredFailureDetails,
  StructuredStreamChunk,
  StructuredStreamRetry,
} from "../../schema/structured.ts";
import { isOpenAIPath, STATUS_BY_CODE } from "../errors.ts";
import {
  type Access,
  AUTH_ERRORS,
  BODY_ERRORS,
  type OperationSpec,
  type ResponseSpec,
  TAGS,
} from "./operation.ts";
import { accessOperations } from "./operations/access.ts";
import { fleetOperations } from "./operations/fleet.ts";
import { inferenceOperations } from "./operations/inference.ts";
import { modelOperations } from "./operations/models.ts";
import { rateLimitOperations } from "./operations/rate-limits.ts";
import { rolloutOperations } from "./operations/rollouts.ts";
import { securityOperations } from "./operations/security.ts";
import { structuredOperations } from "./operations/structured.ts";
import * as shapes from "./shapes.ts";

/** Every operation the gateway serves, in the order the reference shows them. */
export const OPERATIONS: readonly OperationSpec[] = [
  ...inferenceOperations,
  ...structuredOperations,
  ...modelOperations,
  ...rolloutOperations,
  ...fleetOperations,
  ...securityOperations,
  ...rateLimitOperations,
  ...accessOperations,
];

/**
 * Schemas shown by name (components.schemas) and referenced wherever they occur. Request and
 * response bodies, their notable parts, the stream events and the agent socket's frames.
 */
const NAMED_SCHEMAS = {
  ErrorCode,
  ErrorBody,
  OpenAIErrorBody,
  GenerateRequest,
  GenerateResponse,
  GenerateStreamChunk: shapes.GenerateStreamChunk,
  GenerateStreamDone: shapes.GenerateStreamDone,
  GenerateStructuredRequest,
  GenerateStructuredResponse,
  StructuredStreamChunk,
  StructuredStreamRetry,
  StructuredFailureDetails,
  SchemaIssue: SchemaIssueBody,
  SchemaRegistration,
  RegisteredSchema,
  RegisteredSchemaList,
  ChatCompletion: shapes.ChatCompletion,
  ChatCompletionChunk: shapes.ChatCompletionChunk,
  OpenAIModelList: shapes.OpenAIModelList,
  FeedbackRequest,
  FeedbackRecorded: shapes.FeedbackRecorded,
  RegisterResponse: shapes.RegisterResponse,
  ModelSource,
  ModelParameters,
  Placement,
  ModelList: shapes.ModelList,
  ModelSummary,
  ModelDetail,
  VersionSummary,
  VersionDetail,
  MetricsRecord,
  ModelEvent,
  LineageResponse,
  ServingResponse,
  MetricsRecorded: shapes.MetricsRecorded,
  TagsChanged: shapes.TagsChanged,
  AliasSet: shapes.AliasSet,
  AliasRemoved: shapes.AliasRemoved,
  ActivateRequest,
  ActivateResponse,
  RollbackResponse: shapes.RollbackResponse,
  DeactivateResponse: shapes.DeactivateResponse,
  RetireResponse: shapes.RetireResponse,
  ArtifactStored: shapes.ArtifactStored,
  DeployRequest,
  CanaryCriteria,
  CanaryJudgement,
  DeploymentView: shapes.DeploymentView,
  DeploymentList: shapes.DeploymentList,
  RolloutEvent: shapes.RolloutEvent,
  AbTestStartRequest,
  AbTestView: shapes.AbTestView,
  AbTestList: shapes.AbTestList,
  CanaryMetricResult,
  AbReport,
  AbArm,
  AbMetricResult,
  SampleRatioReport,
  AgentsResponse,
  PoolSummary,
  HubMetrics,
  AgentSummary,
  ModelInfo,
  AgentRevocation,
  AgentRevokeResponse,
  AgentEventsResponse,
  BreakerStatusResponse,
  BreakerResetRequest,
  BreakerResetResponse,
  RateLimitOverrideRequest,
  RateLimitStatus,
  InjectionPolicyRequest,
  InjectionPolicyResponse,
  HealthResponse,
  ReadyResponse,
  PerformanceReport,
  ReportRow,
  HealthScore,
  ActiveAlerts,
  Alert,
  AgentFrame,
  HelloFrame,
  HealthFrame,
  HostFacts,
  GatewayFrame,
  WelcomeFrame,
  GenerateFrame,
};

/**
 * Request bodies with transforms, named too. zod-openapi renders every component in components.schemas
 * both ways and a transform has no output schema, so these carry their name as zod metadata instead
 * (on a copy: the schema itself stays as schema/ wrote it) and are named where they are used.
 */
const NAMED_INPUTS = new Map<z.ZodType, z.ZodType>(
  Object.entries({ ChatCompletionRequest, RegisterRequest, MetricsRequest }).map(([id, schema]) => [
    schema,
    schema.meta({ id }),
  ]),
);

/**
 * What zod cannot say about schemas that check a string (or a record) in a refinement: the same
 * patterns and limits the refinement applies, from the same constants.
 */
const REFINED = new Map<z.ZodType, Record<string, unknown>>([
  [RegistryName, { pattern: REGISTRY_NAME_PATTERN.source }],
  [SemverVersion, { pattern: SEMVER_PATTERN.source }],
  [AliasName, { pattern: ALIAS_PATTERN.source }],
  [Tag, { pattern: TAG_PATTERN.source, maxLength: RegistryLimits.maxTagChars }],
  [Metrics, { additionalProperties: { type: "number" }, maxProperties: RegistryLimits.maxMetrics }],
]);

const BEARER = "bearerAuth";
const METRICS_TOKEN = "metricsToken";

/** OpenAPI 3.1 lets a non-OAuth scheme list the roles it requires; alternatives are separate entries. */
const SECURITY: Record<Access, Record<string, string[]>[]> = {
  public: [],
  user: [{ [BEARER]: ["user"] }, { [BEARER]: ["admin"] }],
  admin: [{ [BEARER]: ["admin"] }],
  agent: [{ [BEARER]: ["agent"] }],
  agent_or_admin: [{ [BEARER]: ["agent"] }, { [BEARER]: ["admin"] }],
  admin_or_metrics_token: [{ [BEARER]: ["admin"] }, { [METRICS_TOKEN]: [] }],
};

/** Every code an operation can answer with: its own, then those its kind always has. */
export function errorCodesOf(op: OperationSpec): ErrorCode[] {
  const codes: ErrorCode[] = [...op.errors];
  if (op.access !== "public") codes.push(...AUTH_ERRORS);
  if (op.body !== undefined) {
    codes.push(
      ...BODY_ERRORS.filter((c) => c !== "PAYLOAD_TOO_LARGE"),
      op.body.tooLargeCode ?? "PAYLOAD_TOO_LARGE",
    );
  }
  codes.push("INTERNAL");
  return [...new Set(codes)];
}

function errorResponses(op: OperationSpec): Record<string, ZodOpenApiResponseObject> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of errorCodesOf(op)) {
    const status = STATUS_BY_CODE[code];
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const body = isOpenAIPath(op.path) ? OpenAIErrorBody : ErrorBody;
  const responses: Record<string, ZodOpenApiResponseObject> = {};
  for (const [status, codes] of [...byStatus].sort(([a], [b]) => a - b)) {
    const retry = status === 429 || status === 503;
    responses[String(status)] = {
      description: `Error: ${codes.join(", ")}.`,
      "x-error-codes": codes,
      headers: {
        "X-Request-Id": { $ref: "#/components/headers/RequestId" },
        "X-Error-Code": { $ref: "#/components/headers/ErrorCode" },
        ...(retry ? { "Retry-After": { $ref: "#/components/headers/RetryAfter" } } : {}),
      },
      content: { "application/json": { schema: body } },
    };
  }
  return responses;
}

function successResponse(spec: ResponseSpec): ZodOpenApiResponseObject {
  const content: NonNullable<ZodOpenApiResponseObject["content"]> = {};
  if (spec.json !== undefined) content["application/json"] = { schema: spec.json };
  for (const [type, schema] of Object.entries(spec.content ?? {})) content[type] = { schema };
  const headers: Record<string, unknown> = { "X-Request-Id": { $ref: "#/components/headers/RequestId" } };
  for (const [name, schema] of Object.entries(spec.headers?.shape ?? {})) {
    const header = z.toJSONSchema(schema as z.ZodType, { io: "output", unrepresentable: "any" });
    const { description, ...rest } = header as { description?: string; $schema?: string };
    delete rest.$schema;
    headers[name] = {
      ...(description === undefined ? {} : { description }),
      required: !(schema as z.ZodType).isOptional(),
      schema: rest,
    };
  }
  return {
    description: spec.description,
    headers: headers as ZodOpenApiResponseObject["headers"],
    ...(Object.keys(content).length > 0 ? { content } : {}),
  };
}

function operationObject(op: OperationSpec): ZodOpenApiOperationObject {
  const responses: Record<string, ZodOpenApiResponseObject> = {};
  for (const [status, spec] of Object.entries(op.responses)) responses[status] = successResponse(spec);
  const body = op.body;
  return {
    operationId: op.operationId,
    summary: op.summary,
    ...(op.description === undefined ? {} : { description: op.description }),
    tags: [op.tag],
    security: SECURITY[op.access],
    parameters: [{ $ref: "#/components/parameters/RequestId" }],
    ...(op.params === undefined ? {} : { requestParams: op.params }),
    ...(body === undefined
      ? {}
      : {
          requestBody: {
            required: body.optional !== true,
            ...(body.optional ? { description: "Optional: no body stands for `{}`." } : {}),
            content: {
              "application/json": {
                schema: NAMED_INPUTS.get(body.schema) ?? body.schema,
                example: body.example,
              },
            },
          },
        }),
    ...(op.rawBody === undefined
      ? {}
      : {
          requestBody: {
            required: true,
            description: op.rawBody.description,
            content: { [op.rawBody.contentType]: { schema: { type: "string", format: "binary" } } },
          },
        }),
    responses: { ...responses, ...errorResponses(op) },
  };
}

export interface DocumentOptions {
  /** The gateway's version (ORCHARD_VERSION). */
  version: string;
}

export function buildDocument({ version }: DocumentOptions) {
  const paths: Record<string, Record<string, ZodOpenApiOperationObject>> = {};
  for (const op of OPERATIONS) {
    const item = paths[op.path] ?? {};
    if (item[op.method] !== undefined) throw new Error(`two operations for ${op.method} ${op.path}`);
    item[op.method] = operationObject(op);
    paths[op.path] = item;
  }
  const document = createDocument(
    {
      openapi: "3.1.0",
      info: {
        title: "Orchard gateway",
        version,
        description:
          "The public HTTP surface of Orchard: inference over a fleet of Mac agents, the model registry, " +
          "deployments, A/B tests, the fleet's state and its monitoring. Callers authenticate with a bearer " +
          "JWT whose `role` is user (inference, reads), admin (everything a user may, and the control plane) or " +
          "agent (nodes). Every response carries X-Request-Id; every error has a stable `code` (also in " +
          "X-Error-Code) to branch on, never its message. Errors under /v1 have OpenAI's shape " +
          "(OpenAIErrorBody), all others ErrorBody.",
      },
      tags: Object.entries(TAGS).map(([name, description]) => ({ name, description })),
      paths,
      components: {
        schemas: NAMED_SCHEMAS,
        securitySchemes: {
          [BEARER]: {
            type: "http",
            scheme: "bearer",
            bearerFormat: "JWT",
            description:
              "A JWT with `sub`, `exp` and `role` (user, admin or agent): HS256 signed with JWT_SECRET (or a " +
              "JWT_SECRETS key named by its `kid`), or an identity provider's RS256/ES256/EdDSA token verified " +
              "with the keys at JWT_JWKS_URL (role from JWT_ROLE_CLAIM); `iss` and `aud` are checked when " +
              "configured, `nbf` with JWT_CLOCK_TOLERANCE_S. A revoked token (POST /tokens/revoke) is TOKEN_REVOKED.",
          },
          [METRICS_TOKEN]: {
            type: "http",
            scheme: "bearer",
            description:
              "METRICS_TOKEN: the Prometheus scrape token, a shared secret (not a JWT) for /metrics only.",
          },
        },
        parameters: {
          RequestId: {
            name: "X-Request-Id",
            in: "header",
            required: false,
            description:
              "Your id for this request (1 to 64 of A-Z a-z 0-9 . _ : = -); otherwise one is made.",
            schema: { type: "string", pattern: "^[A-Za-z0-9._:=-]{1,64}$" },
          },
        },
        headers: {
          RequestId: { description: "The request's id, as sent or as made.", schema: { type: "string" } },
          ErrorCode: { description: "The error's stable code (as in the body).", schema: { type: "string" } },
          RetryAfter: { description: "Seconds to wait before retrying.", schema: { type: "integer" } },
        },
      },
    },
    {
      override: ({ zodSchema, jsonSchema }) => {
        const extra = REFINED.get(zodSchema as unknown as z.ZodType);
        if (extra !== undefined) Object.assign(jsonSchema, extra);
      },
    },
  );
  return plainOutputNames(document);
}

/**
 * zod-openapi renders every named schema both ways, names the output form `XOutput` where the two
 * differ, and renders the input form of schemas only responses use (the named schemas refer to one
 * another in its input pass). What the document does not reach (from its paths, or a named schema
 * nothing refers to: a stream event, a frame) is dropped, and an `XOutput` whose `X` was dropped
 * becomes `X`: a schema keeps two forms only when requests and responses both use it.
 */
function plainOutputNames<D extends { components?: { schemas?: Record<string, unknown> } }>(document: D): D {
  const schemas = document.components?.schemas ?? {};
  const refs = (value: unknown) =>
    [...JSON.stringify(value).matchAll(/"#\/components\/schemas\/([^"]+)"/g)].map((m) => m[1] as string);
  const referenced = new Set(refs(schemas));
  const roots = [
    ...refs({ ...document, components: { ...document.components, schemas: {} } }),
    ...Object.keys(schemas).filter((name) => !referenced.has(name) && !(`${name}Output` in schemas)),
  ];
  const reached = new Set<string>();
  for (const todo = roots; todo.length > 0; ) {
    const name = todo.pop() as string;
    if (reached.has(name)) continue;
    reached.add(name);
    todo.push(...refs(schemas[name]));
  }
  const renamed = new Map<string, string>();
  for (const name of Object.keys(schemas)) {
    if (reached.has(name)) continue;
    const output = `${name}Output`;
    if (reached.has(output)) {
      schemas[name] = schemas[output];
      renamed.set(output, name);
    } else delete schemas[name];
  }
  for (const output of renamed.keys()) delete schemas[output];
  let text = JSON.stringify(document);
  for (const [output, name] of renamed)
    text = text.replaceAll(`"#/components/schemas/${output}"`, `"#/components/schemas/${name}"`);
  return JSON.parse(text) as D;
}

export type OpenApiDocument = ReturnType<typeof buildDocument>;
