// The model registry's operations (/models): registration, reads, lifecycle, tags, aliases,
// evaluation metrics and artifacts.
import { z } from "zod";
import type { ErrorCode } from "../../../schema/api.ts";
import {
  ActivateRequest,
  ActivateResponse,
  AliasRequest,
  LineageResponse,
  MetricsRequest,
  ModelDetail,
  RegisterRequest,
  RegistryLimits,
  ServingResponse,
  VersionDetail,
} from "../../../schema/registry-api.ts";
import type { OperationSpec } from "../operation.ts";
import {
  AliasRemoved,
  AliasSet,
  ArtifactStored,
  DeactivateResponse,
  MetricsRecorded,
  ModelList,
  RegisterResponse,
  RetireResponse,
  RollbackResponse,
  TagsChanged,
} from "../shapes.ts";
import { params } from "./params.ts";

/** How a path's `name:version` / `name@alias` fails to name a version (registry/versions.ts resolveVersion). */
const RESOLVE_ERRORS = [
  "INVALID_MODEL_ID",
  "MODEL_NOT_FOUND",
  "VERSION_NOT_FOUND",
  "ALIAS_NOT_FOUND",
] as const satisfies ErrorCode[];

/** A registry body over RegistryLimits.maxBodyBytes is METADATA_TOO_LARGE, like every other metadata limit. */
const registryBody = { maxBytes: RegistryLimits.maxBodyBytes, tooLargeCode: "METADATA_TOO_LARGE" } as const;

const retire = (status: "deprecated" | "archived"): OperationSpec => ({
  method: "post",
  path: `/models/{model_id}/${status === "deprecated" ? "deprecate" : "archive"}`,
  operationId: status === "deprecated" ? "deprecateVersion" : "archiveVersion",
  tag: "Models",
  access: "admin",
  summary: status === "deprecated" ? "Deprecate a version" : "Archive a version",
  description:
    status === "deprecated"
      ? "A deprecated version serves only requests that pin it, with a `Deprecation: true` header."
      : "An archived version is refused for good (410 MODEL_ARCHIVED); its artifact stays stored.",
  params: { path: params.modelId },
  responses: { "200": { description: "The version's status after.", json: RetireResponse } },
  errors: [...RESOLVE_ERRORS, "VERSION_ACTIVE", "VERSION_ARCHIVED"],
});

const tagChange = (method: "put" | "delete"): OperationSpec => ({
  method,
  path: "/models/{target}/tags/{tag}",
  operationId: method === "put" ? "addTag" : "removeTag",
  tag: "Models",
  access: "admin",
  summary: method === "put" ? "Tag a model or a version" : "Remove a tag from a model or a version",
  description:
    "Idempotent: `changed` says whether anything changed. The answer lists the target's tags after.",
  params: { path: params.tag },
  responses: { "200": { description: "The target's tags after.", json: TagsChanged } },
  errors: [...RESOLVE_ERRORS, "INVALID_TAG", "METADATA_TOO_LARGE"],
});

export const modelOperations: OperationSpec[] = [
  {
    method: "post",
    path: "/models/register",
    operationId: "registerVersion",
    tag: "Models",
    access: "admin",
    summary: "Register a model version",
    description:
      "Versions are immutable: registering one twice is 409 VERSION_EXISTS. Where agents get the weights is " +
      "`source` (`model_path` alone is a path on the agents); an `artifact` source needs `sha256` and `size`, " +
      "and the weights are uploaded with PUT /models/{model_id}/artifact. Registering does not serve the " +
      "version: activate it or deploy it.",
    body: {
      schema: RegisterRequest,
      ...registryBody,
      example: {
        name: "tinyllama",
        version: "1.1.0",
        model_path: "/opt/models/tinyllama-1.1b-q4_k_m.gguf",
        description: "TinyLlama 1.1B chat, Q4_K_M",
        model_type: "llm",
        framework: "llama.cpp",
        tags: ["chat", "small"],
        performance_metrics: { accuracy: 0.61, tokens_per_second: 48.5 },
        parameters: { contextLength: 2048, engines: ["llamacpp"] },
        placement: { replicas: 2 },
      },
    },
    responses: { "201": { description: "Registered.", json: RegisterResponse } },
    errors: [
      "INVALID_MODEL_NAME",
      "INVALID_VERSION",
      "INVALID_MODEL_ID",
      "INVALID_TAG",
      "INVALID_METRICS",
      "PARENT_NOT_FOUND",
      "VERSION_EXISTS",
    ],
  },
  {
    method: "get",
    path: "/models",
    operationId: "listModels",
    tag: "Models",
    access: "user",
    summary: "List registered models",
    responses: { "200": { description: "Every registered model, by name.", json: ModelList } },
    errors: [],
  },
  {
    method: "get",
    path: "/models/{name}",
    operationId: "getModel",
    tag: "Models",
    access: "user",
    summary: "A model with its versions and aliases",
    params: { path: params.name },
    responses: { "200": { description: "The model.", json: ModelDetail } },
    errors: ["MODEL_NOT_FOUND"],
  },
  {
    method: "get",
    path: "/models/{name}/{version}",
    operationId: "getVersion",
    tag: "Models",
    access: "user",
    summary: "One version: metadata, metrics and events",
    params: { path: params.nameVersion },
    responses: { "200": { description: "The version.", json: VersionDetail } },
    errors: ["MODEL_NOT_FOUND", "VERSION_NOT_FOUND"],
  },
  {
    method: "get",
    path: "/models/{name}/lineage",
    operationId: "getLineage",
    tag: "Models",
    access: "user",
    summary: "A model's lineage: versions, parent and dependency edges, events, metrics",
    params: { path: params.name },
    responses: { "200": { description: "The lineage.", json: LineageResponse } },
    errors: ["MODEL_NOT_FOUND"],
  },
  {
    method: "get",
    path: "/models/{name}/serving",
    operationId: "getServingVersion",
    tag: "Models",
    access: "user",
    summary: "Which version served a name at a time",
    params: {
      path: params.name,
      query: z.object({
        at: z.string().optional().describe("An ISO 8601 time or epoch milliseconds; absent: now."),
      }),
    },
    responses: { "200": { description: "The version serving then.", json: ServingResponse } },
    errors: ["MODEL_NOT_FOUND", "INVALID_TIME"],
  },
  {
    method: "post",
    path: "/models/{model_id}/metrics",
    operationId: "recordMetrics",
    tag: "Models",
    access: "admin",
    summary: "Record an evaluation's metrics for a version",
    description:
      "Appends to the version's metric history (GET /models/{name}/{version} `evaluation_metrics`).",
    params: { path: params.modelId },
    body: {
      schema: MetricsRequest,
      ...registryBody,
      example: {
        metrics: { accuracy: 0.64, rouge_l: 0.41 },
        source: "nightly-eval",
        recorded_at: 1767225600000,
      },
    },
    responses: { "201": { description: "Recorded.", json: MetricsRecorded } },
    errors: [...RESOLVE_ERRORS, "INVALID_METRICS"],
  },
  tagChange("put"),
  tagChange("delete"),
  {
    method: "put",
    path: "/models/{name}/aliases/{alias}",
    operationId: "setAlias",
    tag: "Models",
    access: "admin",
    summary: "Point an alias at a version",
    description: "`name@alias` then names that version wherever a model id is accepted, inference included.",
    params: { path: params.alias },
    body: { schema: AliasRequest, example: { version: "1.1.0" } },
    responses: { "200": { description: "The alias after, and before.", json: AliasSet } },
    errors: ["INVALID_ALIAS", "INVALID_VERSION", "MODEL_NOT_FOUND", "VERSION_NOT_FOUND", "VERSION_ARCHIVED"],
  },
  {
    method: "delete",
    path: "/models/{name}/aliases/{alias}",
    operationId: "removeAlias",
    tag: "Models",
    access: "admin",
    summary: "Remove an alias",
    params: { path: params.alias },
    responses: { "200": { description: "The version the alias pointed at.", json: AliasRemoved } },
    errors: ["INVALID_ALIAS", "MODEL_NOT_FOUND", "ALIAS_NOT_FOUND"],
  },
  {
    method: "post",
    path: "/models/{model_id}/activate",
    operationId: "activateVersion",
    tag: "Models",
    access: "admin",
    summary: "Make a version the one its name serves",
    description:
      "Waits (up to `timeout_ms`) until the placement's agents hold the version loaded, then switches every pool " +
      "at once; the version active before becomes the previous one (rollback target), kept warm. No body: the " +
      "version's own placement and the default timeout.",
    params: { path: params.modelId },
    body: {
      schema: ActivateRequest,
      optional: true,
      example: { placement: { replicas: 2, pools: ["default"] }, timeout_ms: 120000 },
    },
    responses: { "200": { description: "Active.", json: ActivateResponse } },
    errors: [...RESOLVE_ERRORS, "VERSION_ARCHIVED", "ACTIVATION_NOT_READY"],
  },
  {
    method: "post",
    path: "/models/{name}/rollback",
    operationId: "rollbackModel",
    tag: "Models",
    access: "admin",
    summary: "Serve the previous version again",
    description: "Instant: the hubs keep the previous version warm. The active one becomes the previous.",
    params: { path: params.name },
    responses: { "200": { description: "The versions after.", json: RollbackResponse } },
    errors: ["MODEL_NOT_FOUND", "NO_PREVIOUS_VERSION", "VERSION_ARCHIVED"],
  },
  {
    method: "post",
    path: "/models/{name}/deactivate",
    operationId: "deactivateModel",
    tag: "Models",
    access: "admin",
    summary: "Stop serving a name",
    description: "Requests for the bare name are then refused; ids that pin a version keep working.",
    params: { path: params.name },
    responses: { "200": { description: "The versions after.", json: DeactivateResponse } },
    errors: ["MODEL_NOT_FOUND"],
  },
  retire("deprecated"),
  retire("archived"),
  {
    method: "put",
    path: "/models/{model_id}/artifact",
    operationId: "uploadArtifact",
    tag: "Models",
    access: "admin",
    summary: "Upload a version's weights",
    description:
      "Streams the body into storage while hashing it; a length or sha256 other than the registration's is " +
      "refused and nothing is kept. Once per version: artifacts are immutable.",
    params: {
      path: params.modelId,
      header: z.object({
        "Content-Length": z
          .string()
          .regex(/^[0-9]+$/)
          .describe("Exactly the registered `size`."),
      }),
    },
    rawBody: {
      contentType: "application/octet-stream",
      description: "The weights: one GGUF file, or an MLX folder as a tar.",
    },
    responses: { "201": { description: "Stored.", json: ArtifactStored } },
    errors: [
      ...RESOLVE_ERRORS,
      "SOURCE_NOT_ARTIFACT",
      "ARTIFACT_EXISTS",
      "ARTIFACT_TOO_LARGE",
      "ARTIFACT_SIZE_MISMATCH",
      "ARTIFACT_HASH_MISMATCH",
    ],
  },
  {
    method: "get",
    path: "/models/{model_id}/artifact",
    operationId: "downloadArtifact",
    tag: "Models",
    access: "agent_or_admin",
    summary: "Download a version's weights",
    description: "Agents fetch weights with their own token and resume interrupted downloads with Range.",
    params: {
      path: params.modelId,
      header: z.object({
        Range: z.string().optional().describe("One range: `bytes=a-b`, `bytes=a-` or `bytes=-n`."),
      }),
    },
    responses: {
      "200": {
        description: "The whole artifact.",
        content: { "application/octet-stream": { type: "string", format: "binary" } },
        headers: z.object({
          ETag: z.string().describe("The artifact's sha256, quoted."),
          "Accept-Ranges": z.literal("bytes"),
        }),
      },
      "206": {
        description: "The requested range.",
        content: { "application/octet-stream": { type: "string", format: "binary" } },
        headers: z.object({
          ETag: z.string().describe("The artifact's sha256, quoted."),
          "Content-Range": z.string().describe("`bytes a-b/size`."),
        }),
      },
    },
    errors: [...RESOLVE_ERRORS, "SOURCE_NOT_ARTIFACT", "ARTIFACT_NOT_FOUND", "RANGE_NOT_SATISFIABLE"],
  },
];
