// HTTP bodies of the model registry (/models): registration, metrics, activation and aliases, with
// the documented limits. A field that breaks a limit carries its own stable code (CodedIssueParams),
// so the json-body middleware answers INVALID_VERSION, METADATA_TOO_LARGE, ... instead of INVALID_REQUEST.
import { z } from "zod";
import type { CodedIssueParams, ErrorCode } from "./api.ts";
import { ModelIdError, parseModelId } from "./model-id.ts";
import {
  ALIAS_PATTERN,
  ModelParameters,
  ModelSource,
  Placement,
  REGISTRY_NAME_PATTERN,
  SEMVER_PATTERN,
  Sha256,
  VersionStatus,
} from "./registry.ts";

/** Registry metadata limits (README "Model registry"); beyond them: 400 METADATA_TOO_LARGE. */
export const RegistryLimits = {
  /** The whole JSON body of a registration or a metrics post. */
  maxBodyBytes: 64 * 1024,
  maxDescriptionChars: 2000,
  maxTags: 32,
  maxTagChars: 64,
  maxMetrics: 64,
  maxMetricNameChars: 64,
  maxDependencies: 32,
  maxDependencyChars: 256,
  maxLabelChars: 64,
  /** Longest activation wait (POST .../activate `timeout_ms`), and the default. */
  maxActivationTimeoutMs: 600_000,
  defaultActivationTimeoutMs: 60_000,
} as const;

/** Tags: letters, digits and . _ : -, starting with a letter or digit. */
export const TAG_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/;

function coded(ctx: z.RefinementCtx, code: ErrorCode, message: string): void {
  ctx.addIssue({ code: "custom", message, params: { code } satisfies CodedIssueParams });
}

export const RegistryName = z.string().superRefine((name, ctx) => {
  if (!REGISTRY_NAME_PATTERN.test(name)) {
    coded(
      ctx,
      "INVALID_MODEL_NAME",
      "a model name is 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit",
    );
  }
});

export const SemverVersion = z.string().superRefine((version, ctx) => {
  if (!SEMVER_PATTERN.test(version))
    coded(ctx, "INVALID_VERSION", "a version is semver, e.g. 1.0.0 or 2.1.0-rc.1");
});

export const AliasName = z.string().superRefine((alias, ctx) => {
  if (!ALIAS_PATTERN.test(alias))
    coded(ctx, "INVALID_ALIAS", "an alias is 1 to 32 of a-z 0-9 _ -, starting with a letter");
});

export const Tag = z.string().superRefine((tag, ctx) => {
  if (tag.length > RegistryLimits.maxTagChars) {
    coded(ctx, "METADATA_TOO_LARGE", `a tag has at most ${RegistryLimits.maxTagChars} characters`);
  } else if (!TAG_PATTERN.test(tag)) {
    coded(ctx, "INVALID_TAG", "a tag is letters, digits and . _ : -, starting with a letter or digit");
  }
});

const Tags = z
  .array(Tag)
  .superRefine((tags, ctx) => {
    if (tags.length > RegistryLimits.maxTags)
      coded(ctx, "METADATA_TOO_LARGE", `at most ${RegistryLimits.maxTags} tags`);
  })
  .transform((tags) => [...new Set(tags)]);

/** Named figures: finite numbers only (400 INVALID_METRICS), at most maxMetrics of them. */
export const Metrics = z.record(z.string(), z.unknown()).transform((raw, ctx) => {
  const entries = Object.entries(raw);
  if (entries.length > RegistryLimits.maxMetrics) {
    coded(ctx, "METADATA_TOO_LARGE", `at most ${RegistryLimits.maxMetrics} metrics`);
    return z.NEVER;
  }
  for (const [key, value] of entries) {
    if (key.length === 0 || key.length > RegistryLimits.maxMetricNameChars) {
      coded(
        ctx,
        "METADATA_TOO_LARGE",
        `a metric name has 1 to ${RegistryLimits.maxMetricNameChars} characters`,
      );
      return z.NEVER;
    }
    if (typeof value !== "number" || !Number.isFinite(value)) {
      coded(ctx, "INVALID_METRICS", `metric "${key.slice(0, 64)}" is not a finite number`);
      return z.NEVER;
    }
  }
  return raw as Record<string, number>;
});

const Description = z.string().superRefine((text, ctx) => {
  if (text.length > RegistryLimits.maxDescriptionChars) {
    coded(
      ctx,
      "METADATA_TOO_LARGE",
      `a description has at most ${RegistryLimits.maxDescriptionChars} characters`,
    );
  }
});

/** A version's model id `name:version` (the form `parent` takes). */
export const VersionId = z.string().transform((text, ctx) => {
  try {
    const { name, version } = parseModelId(text);
    if (version !== null && SEMVER_PATTERN.test(version)) return { name, version };
  } catch (err) {
    if (!(err instanceof ModelIdError)) throw err;
  }
  coded(ctx, "INVALID_MODEL_ID", "a model id is name:version, e.g. my-model:1.0.0");
  return z.NEVER;
});

// ---- POST /models/register ----

/**
 * The specification's body (model_path, name, version, description, model_type, framework, tags,
 * performance_metrics) plus where agents get the weights (`source`; `model_path` alone means a path
 * on the agents), the file's sha256/size, load parameters, lineage (parent, dependencies) and the
 * placement an activation uses unless it names its own.
 */
export const RegisterRequest = z
  .strictObject({
    name: RegistryName,
    version: SemverVersion,
    model_path: z.string().min(1).max(1024).optional(),
    description: Description.optional(),
    model_type: z.string().min(1).max(64).optional(),
    framework: z.string().min(1).max(64).optional(),
    tags: Tags.default([]),
    performance_metrics: Metrics.default({}),
    source: ModelSource.optional(),
    sha256: Sha256.optional(),
    size: z.number().int().positive().optional(),
    parameters: ModelParameters.default({}),
    parent: VersionId.optional(),
    dependencies: z
      .array(z.string().min(1).max(RegistryLimits.maxDependencyChars))
      .max(RegistryLimits.maxDependencies)
      .default([]),
    placement: Placement.optional(),
  })
  .transform((body, ctx) => {
    const source: ModelSource | undefined =
      body.source ?? (body.model_path === undefined ? undefined : { kind: "path", path: body.model_path });
    if (source === undefined) {
      ctx.addIssue({ code: "custom", message: "model_path or source is required", path: ["source"] });
      return z.NEVER;
    }
    if (source.kind === "artifact" && (body.sha256 === undefined || body.size === undefined)) {
      ctx.addIssue({ code: "custom", message: "an artifact source needs sha256 and size", path: ["sha256"] });
      return z.NEVER;
    }
    return { ...body, source };
  });
export type RegisterRequest = z.output<typeof RegisterRequest>;

// ---- POST /models/{model_id}/metrics ----

/** A time as an ISO 8601 string or epoch milliseconds. */
export const Instant = z.union([z.number().int().nonnegative(), z.iso.datetime({ offset: true })]);

export const MetricsRequest = z.strictObject({
  metrics: Metrics,
  /** Where the figures come from (an evaluation harness's name); stored as the evaluation's label. */
  source: z.string().min(1).max(RegistryLimits.maxLabelChars).optional(),
  recorded_at: Instant.optional(),
});
export type MetricsRequest = z.output<typeof MetricsRequest>;

// ---- POST /models/{model_id}/activate ----

export const ActivateRequest = z.strictObject({
  /** How many agents must hold it loaded (and in which pools) before the switch. */
  placement: Placement.optional(),
  timeout_ms: z.number().int().min(0).max(RegistryLimits.maxActivationTimeoutMs).optional(),
});
export type ActivateRequest = z.output<typeof ActivateRequest>;

// ---- PUT /models/{name}/aliases/{alias} ----

export const AliasRequest = z.strictObject({ version: SemverVersion });

// ---- responses ----

export const MetricsRecord = z.object({
  source: z.string(),
  label: z.string().nullable(),
  recorded_at: z.string(),
  pool: z.string().nullable(),
  window_start: z.string().nullable(),
  window_end: z.string().nullable(),
  metrics: z.record(z.string(), z.number().nullable()),
});
export type MetricsRecord = z.infer<typeof MetricsRecord>;

export const ModelEvent = z.object({
  id: z.number(),
  kind: z.string(),
  version: z.string().nullable(),
  actor: z.string(),
  at: z.string(),
  request_id: z.string().nullable(),
  detail: z.record(z.string(), z.unknown()),
});
export type ModelEvent = z.infer<typeof ModelEvent>;

export const VersionSummary = z.object({
  model_id: z.string(),
  version: z.string(),
  status: VersionStatus,
  tags: z.array(z.string()),
  /** The aliases pointing at this version. */
  aliases: z.array(z.string()),
  created_at: z.string(),
});

export const VersionDetail = VersionSummary.extend({
  name: z.string(),
  description: z.string().nullable(),
  model_type: z.string().nullable(),
  framework: z.string().nullable(),
  model_path: z.string().nullable(),
  source: ModelSource,
  sha256: z.string().nullable(),
  size: z.number().nullable(),
  parameters: ModelParameters,
  parent: z.string().nullable(),
  dependencies: z.array(z.string()),
  placement: Placement.nullable(),
  created_by: z.string(),
  /** Where GET .../artifact serves it from, once uploaded. */
  artifact: z.object({ path: z.string(), stored_at: z.string() }).nullable(),
  performance_metrics: z.record(z.string(), z.number()),
  evaluation_metrics: z.array(MetricsRecord),
  live_metrics: z.array(MetricsRecord),
  events: z.array(ModelEvent),
});
export type VersionDetail = z.infer<typeof VersionDetail>;

export const ModelSummary = z.object({
  name: z.string(),
  description: z.string().nullable(),
  active_version: z.string().nullable(),
  previous_version: z.string().nullable(),
  /** The active version's status, or "registered" while none is active. */
  status: VersionStatus,
  tags: z.array(z.string()),
  /** The pools that serve this name (POOLS' lists; a model listed nowhere: "default"). */
  pools: z.array(z.string()),
  versions: z.number(),
});

export const ModelDetail = ModelSummary.extend({
  aliases: z.record(z.string(), z.string()),
  /** Newest first by semver precedence (here a list, where GET /models has a count). */
  versions: z.array(VersionSummary),
});
export type ModelDetail = z.infer<typeof ModelDetail>;

export const LineageResponse = z.object({
  name: z.string(),
  versions: z.array(
    z.object({
      version: z.string(),
      parent: z.string().nullable(),
      dependencies: z.array(z.string()),
      status: VersionStatus,
      created_at: z.string(),
    }),
  ),
  edges: z.array(z.object({ from: z.string(), to: z.string(), kind: z.enum(["parent", "dependency"]) })),
  events: z.array(
    z.object({
      kind: z.string(),
      version: z.string().nullable(),
      actor: z.string(),
      at: z.string(),
      detail: z.record(z.string(), z.unknown()),
    }),
  ),
  metrics: z.record(z.string(), z.array(MetricsRecord)),
});
export type LineageResponse = z.infer<typeof LineageResponse>;

export const ServingResponse = z.object({
  name: z.string(),
  at: z.string(),
  version: z.string().nullable(),
  /** When that version started serving (the event that made it), null when none served. */
  since: z.string().nullable(),
});
export type ServingResponse = z.infer<typeof ServingResponse>;

export const ActivateResponse = z.object({
  model_id: z.string(),
  previous: z.string().nullable(),
  /** Agents that had it loaded at the switch. */
  loaded_on: z.array(z.string()),
  /** True when the version was active already (nothing changed). */
  noop: z.boolean(),
});
export type ActivateResponse = z.infer<typeof ActivateResponse>;
