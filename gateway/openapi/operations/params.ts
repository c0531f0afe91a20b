// Path parameters and headers several operations share, built from the patterns and limits the
// routes check them with (the routes read raw strings from the path, so these only describe them).
import { z } from "zod";
import { AgentId } from "../../../schema/api.ts";
import { HubHeader } from "../../../schema/hub.ts";
import { ALIAS_PATTERN, REGISTRY_NAME_PATTERN, SEMVER_PATTERN } from "../../../schema/registry.ts";
import { RegistryLimits, TAG_PATTERN } from "../../../schema/registry-api.ts";
import { EXPERIMENT_HEADER, USER_HEADER, VARIANT_HEADER } from "../../../schema/rollouts.ts";
import { MAX_USER_LENGTH, TIMEOUT_HEADER } from "../../inference/request-options.ts";

export const ModelName = z
  .string()
  .regex(REGISTRY_NAME_PATTERN)
  .describe("A registry model name: 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit.");

export const ModelId = z
  .string()
  .describe(
    "A version: `name:version` (e.g. `llama-3.2-1b:1.0.0`) or `name@alias` (e.g. `llama-3.2-1b@stable`).",
  );

export const Version = z
  .string()
  .regex(SEMVER_PATTERN)
  .describe("A semver version, e.g. `1.0.0` or `2.1.0-rc.1`.");

export const params = {
  name: z.object({ name: ModelName }),
  modelId: z.object({ model_id: ModelId }),
  nameVersion: z.object({ name: ModelName, version: Version }),
  tag: z.object({
    target: z.string().describe("A model name, or one version of it as `name:version` or `name@alias`."),
    tag: z
      .string()
      .regex(TAG_PATTERN)
      .max(RegistryLimits.maxTagChars)
      .describe("Letters, digits and . _ : -, starting with a letter or digit."),
  }),
  alias: z.object({
    name: ModelName,
    alias: z
      .string()
      .regex(ALIAS_PATTERN)
      .describe("1 to 32 of a-z 0-9 _ -, starting with a letter (`stable`, `prod-eu`)."),
  }),
  agentId: z.object({ id: AgentId.describe("The agent's id: the `sub` of its token.") }),
};

/** Request headers of the inference operations. */
export const InferenceHeaders = z.object({
  [TIMEOUT_HEADER]: z
    .string()
    .regex(/^[0-9]{1,16}$/)
    .optional()
    .describe(
      "This request's deadline in ms (queue wait and generation), capped at REQUEST_TIMEOUT_MAX_MS; absent: REQUEST_TIMEOUT_MS.",
    ),
  [USER_HEADER]: z
    .string()
    .max(MAX_USER_LENGTH)
    .optional()
    .describe(
      "The end user the request is for, for sticky assignment in deployments and A/B tests (default: the token's `sub`).",
    ),
});

/** Response headers of an answered inference request. */
export const AnswerHeaders = z.object({
  [HubHeader.model]: z.string().describe("The model id that answered."),
  [HubHeader.fallback]: z
    .string()
    .optional()
    .describe("The model that was asked for, when a MODEL_FALLBACKS substitute answered."),
  [VARIANT_HEADER]: z
    .string()
    .optional()
    .describe("The arm a running rollout assigned the end user to (`a`/`b`, `baseline`/`canary`)."),
  [EXPERIMENT_HEADER]: z.string().optional().describe("The id of that deployment or A/B test."),
  Deprecation: z
    .literal("true")
    .optional()
    .describe("The pinned version is deprecated: it still serves, but not for long."),
  "RateLimit-Policy": z
    .string()
    .optional()
    .describe(
      'The caller\'s quota policies (draft-ietf-httpapi-ratelimit-headers), on answers and on 429 RATE_LIMITED: "rpm";q=600;w=60, "tpm";q=200000;w=60;orchard-unit="tokens", "concurrency";q=16;qu="concurrent-requests".',
    ),
  RateLimit: z
    .string()
    .optional()
    .describe(
      'What is left of each policy after this request: "rpm";r=599;t=1, "tpm";r=199744;t=1, "concurrency";r=15.',
    ),
});

/** Location of what a 201/202 created. */
export const LocationHeader = z.object({
  Location: z.string().describe("The path of the created resource."),
});
