// The structured-output operations: POST /generate/structured and the registered schemas
// (/schemas). docs/structured-outputs.md has what is checked, enforced and validated where.
import { z } from "zod";
import type { ErrorCode } from "../../../schema/api.ts";
import {
  GenerateStructuredRequest,
  GenerateStructuredResponse,
  RegisteredSchema,
  RegisteredSchemaList,
  SchemaName,
  SchemaRegistration,
} from "../../../schema/structured.ts";
import type { OperationSpec } from "../operation.ts";
import { AnswerHeaders, InferenceHeaders } from "./params.ts";

/** The schema check's codes (gateway/structured/schema-check.ts); `param` names the path. */
export const SCHEMA_ERRORS = [
  "INVALID_SCHEMA",
  "UNSUPPORTED_SCHEMA_KEYWORD",
  "SCHEMA_REMOTE_REF",
  "SCHEMA_TOO_LARGE",
] as const satisfies ErrorCode[];

const nameParam = z.object({ name: SchemaName.describe("The schema's registered name.") });

const PERSON = {
  type: "object",
  properties: { name: { type: "string" }, age: { type: "integer", minimum: 0 } },
  required: ["name", "age"],
};

export const structuredOperations: OperationSpec[] = [
  {
    method: "post",
    path: "/generate/structured",
    operationId: "generateStructured",
    tag: "Structured outputs",
    access: "user",
    summary: "Generate JSON that is valid against a JSON Schema",
    description:
      "An output valid against `schema` (a JSON Schema, or a name registered with POST /schemas), checked " +
      "before dispatch; enforced by agents that can, validated here, retried with the issues fed back " +
      "(`max_retries`, the deadline; each attempt is rate-limited). None valid: 422 STRUCTURED_OUTPUT_INVALID " +
      "with `error.details` {errors, raw, attempts}. Streamed: `chunk` (StructuredStreamChunk), `retry` " +
      "(StructuredStreamRetry), then `done` (GenerateStructuredResponse) or `error` (ErrorBody). " +
      "docs/structured-outputs.md.",
    params: { header: InferenceHeaders },
    body: {
      schema: GenerateStructuredRequest,
      example: {
        prompt: "Ada Lovelace, 36. As JSON:",
        model: "llama-3.2-1b",
        schema: PERSON,
      },
    },
    responses: {
      "200": {
        description: "The validated output: one JSON body, or (stream: true) an event stream.",
        json: GenerateStructuredResponse,
        content: {
          "text/event-stream": {
            type: "string",
            description:
              "event: chunk|retry|done|error, data: JSON (StructuredStreamChunk, StructuredStreamRetry, GenerateStructuredResponse, ErrorBody).",
          },
        },
        headers: AnswerHeaders,
      },
    },
    errors: [
      "MODEL_NOT_FOUND",
      "MODEL_ARCHIVED",
      "CONTEXT_OVERFLOW",
      "QUEUE_FULL",
      "UPSTREAM_ERROR",
      "NO_AGENT_AVAILABLE",
      "QUEUE_TIMEOUT",
      "GATEWAY_TIMEOUT",
      "PROMPT_INJECTION",
      "CONTENT_FILTERED",
      "RATE_LIMITED",
      ...SCHEMA_ERRORS,
      "SCHEMA_NOT_FOUND",
      "STRUCTURED_OUTPUT_INVALID",
    ],
  },
  {
    method: "post",
    path: "/schemas",
    operationId: "registerSchema",
    tag: "Structured outputs",
    access: "admin",
    summary: "Register a JSON Schema by name",
    description:
      "Checked as /generate/structured checks it. The same schema again: 200, unchanged; another under a taken " +
      "name: 409 SCHEMA_EXISTS.",
    body: { schema: SchemaRegistration, example: { name: "person", schema: PERSON } },
    responses: {
      "201": { description: "Registered.", json: RegisteredSchema },
      "200": { description: "The name already holds this schema.", json: RegisteredSchema },
    },
    errors: [...SCHEMA_ERRORS, "SCHEMA_EXISTS"],
  },
  {
    method: "get",
    path: "/schemas",
    operationId: "listSchemas",
    tag: "Structured outputs",
    access: "user",
    summary: "The registered schemas",
    responses: { "200": { description: "Every registered schema, by name.", json: RegisteredSchemaList } },
    errors: [],
  },
  {
    method: "get",
    path: "/schemas/{name}",
    operationId: "getSchema",
    tag: "Structured outputs",
    access: "user",
    summary: "One registered schema",
    params: { path: nameParam },
    responses: { "200": { description: "The schema.", json: RegisteredSchema } },
    errors: ["INVALID_REQUEST", "SCHEMA_NOT_FOUND"],
  },
  {
    method: "delete",
    path: "/schemas/{name}",
    operationId: "deleteSchema",
    tag: "Structured outputs",
    access: "admin",
    summary: "Delete a registered schema",
    params: { path: nameParam },
    responses: { "204": { description: "Deleted." } },
    errors: ["INVALID_REQUEST", "SCHEMA_NOT_FOUND"],
  },
];
