// Structured outputs' public contract: the JSON Schema keywords the gateway accepts, its limits on a
// schema, and the bodies of POST /generate/structured and /schemas (zod; OpenAPI is generated from
// these). docs/structured-outputs.md says what each keyword does where (enforced, validated).
import { z } from "zod";
import { Limits } from "./api.ts";
import { ModelName } from "./protocol.ts";

/** Limits on one schema (a tool set counts as one schema); beyond them: SCHEMA_TOO_LARGE. */
export const SchemaLimits = {
  /** JSON.stringify(schema) in UTF-8 bytes. */
  maxBytes: 32 * 1024,
  /** Subschemas nested inside each other (the root is depth 1). */
  maxDepth: 32,
  /** Subschemas in all (the root, every property, item, branch and definition). */
  maxSubschemas: 512,
  /** Function definitions in one chat request's `tools`. */
  maxTools: 128,
} as const;

/** `max_retries`: the attempts after the first one that failed validation. */
export const StructuredRetries = { min: 0, max: 5, default: 2 } as const;

/** Keywords whose value is one subschema (or `true`/`false`). */
export const SCHEMA_KEYWORDS = ["additionalProperties", "additionalItems", "propertyNames"] as const;
/** Keywords whose value is a list of subschemas (`items` too, in draft-07's tuple form). */
export const SCHEMA_LIST_KEYWORDS = ["anyOf", "oneOf", "allOf", "prefixItems"] as const;
/** Keywords whose value maps names to subschemas. */
export const SCHEMA_MAP_KEYWORDS = ["properties", "$defs", "definitions"] as const;
/** Keywords that constrain a value without holding subschemas. */
export const VALUE_KEYWORDS = [
  "type",
  "required",
  "enum",
  "const",
  "minItems",
  "maxItems",
  "uniqueItems",
  "minLength",
  "maxLength",
  "pattern",
  "format",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
  "multipleOf",
  "minProperties",
  "maxProperties",
  "$ref",
] as const;
/** Keywords that say something about a schema without constraining the value. */
export const ANNOTATION_KEYWORDS = [
  "$schema",
  "$comment",
  "title",
  "description",
  "default",
  "examples",
  "deprecated",
  "readOnly",
  "writeOnly",
] as const;

/** Every keyword a schema may use; any other is UNSUPPORTED_SCHEMA_KEYWORD, never ignored. */
export const SUPPORTED_SCHEMA_KEYWORDS: readonly string[] = [
  ...SCHEMA_KEYWORDS,
  "items",
  ...SCHEMA_LIST_KEYWORDS,
  ...SCHEMA_MAP_KEYWORDS,
  ...VALUE_KEYWORDS,
  ...ANNOTATION_KEYWORDS,
];

/** `format` values the gateway validates. */
export const SUPPORTED_FORMATS = ["date-time", "date", "time", "email", "uuid"] as const;

/** `$schema` values accepted: draft 2020-12 and draft-07 (what zod and the openai SDK emit). */
export const SUPPORTED_DIALECTS = {
  "https://json-schema.org/draft/2020-12/schema": "2020-12",
  "http://json-schema.org/draft-07/schema#": "7",
  "http://json-schema.org/draft-07/schema": "7",
} as const;

/** A registered schema's name: what /generate/structured's `schema` may say instead of a schema. */
export const SchemaName = z
  .string()
  .min(1)
  .max(64)
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9._-]*$/,
    "letters, digits, '.', '_' and '-', starting with a letter or digit",
  );

/** A JSON Schema as a body carries it: an object, checked by the gateway (checkSchema) after parsing. */
export const JsonSchemaValue = z.record(z.string(), z.unknown());

const stop = z.union([
  z.string().min(1).max(Limits.maxStopChars),
  z.array(z.string().min(1).max(Limits.maxStopChars)).max(Limits.maxStopSequences),
]);

const StructuredMessage = z.strictObject({
  role: z.enum(["system", "user", "assistant"]),
  content: z.string().max(Limits.maxPromptChars),
});

// ---- POST /generate/structured ----

export const GenerateStructuredRequest = z
  .strictObject({
    prompt: z.string().min(1).max(Limits.maxPromptChars).optional(),
    messages: z.array(StructuredMessage).min(1).max(Limits.maxMessages).optional(),
    /** A JSON Schema, or the name of one registered with POST /schemas. */
    schema: z.union([SchemaName, JsonSchemaValue]),
    model: ModelName.optional(),
    max_retries: z
      .number()
      .int()
      .min(StructuredRetries.min)
      .max(StructuredRetries.max)
      .default(StructuredRetries.default),
    max_tokens: z.number().int().min(1).max(Limits.maxTokens).default(256),
    temperature: z.number().min(0).max(2).optional(),
    top_p: z.number().gt(0).max(1).optional(),
    seed: z.number().int().optional(),
    stop: stop.optional(),
    stream: z.boolean().default(false),
  })
  .refine((b) => (b.prompt === undefined) !== (b.messages === undefined), {
    message: "exactly one of prompt or messages",
    path: ["prompt"],
  });
export type GenerateStructuredRequest = z.infer<typeof GenerateStructuredRequest>;

export const StructuredUsage = z.object({
  prompt_tokens: z.number().int(),
  completion_tokens: z.number().int(),
});

export const GenerateStructuredResponse = z.object({
  /** The output, parsed, valid against the schema. */
  data: z.unknown(),
  /** The model's text that `data` was parsed from. */
  raw: z.string(),
  /** Generations it took (1 = valid the first time). */
  attempts: z.number().int().min(1),
  /** Summed over the attempts. */
  usage: StructuredUsage,
  model_name: z.string(),
  request_id: z.string(),
  latency_ms: z.number(),
});
export type GenerateStructuredResponse = z.infer<typeof GenerateStructuredResponse>;

/** One way an output fails its schema: where (a JSON pointer into the output, "" = the root), why. */
export const SchemaIssueBody = z.object({
  path: z.string(),
  message: z.string(),
  keyword: z.string(),
});

/** STRUCTURED_OUTPUT_INVALID's `error.details`. */
export const StructuredFailureDetails = z.object({
  errors: z.array(SchemaIssueBody),
  raw: z.string(),
  attempts: z.number().int(),
});

/** `data` of a streamed structured request's `chunk` event: text of the attempt being generated. */
export const StructuredStreamChunk = z.object({ text: z.string(), attempt: z.number().int().min(1) });

/** `data` of its `retry` event: the attempt failed validation with these issues; the next one follows. */
export const StructuredStreamRetry = z.object({
  attempt: z.number().int().min(1),
  errors: z.array(SchemaIssueBody),
});

// ---- /schemas ----

export const SchemaRegistration = z.strictObject({
  name: SchemaName,
  schema: JsonSchemaValue,
  description: z.string().max(1024).optional(),
});
export type SchemaRegistration = z.infer<typeof SchemaRegistration>;

export const RegisteredSchema = z.object({
  name: z.string(),
  schema: JsonSchemaValue,
  description: z.string().nullable(),
  created_at: z.string(),
  created_by: z.string(),
});
export type RegisteredSchema = z.infer<typeof RegisteredSchema>;

export const RegisteredSchemaList = z.object({ schemas: z.array(RegisteredSchema) });
