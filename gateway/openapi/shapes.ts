// Response bodies that routes build inline and no schema module describes yet: the registry's
// write answers, deployments and A/B tests as the API shows them, feedback, the OpenAI objects and
// the SSE events. Each is checked against what its route returns (shape-checks.ts, at compile time),
// so the document cannot drift from the code; a schema module that grows one replaces it here.
import { z } from "zod";
import { GenerateResponse } from "../../schema/api.ts";
import { SuccessMetric } from "../../schema/experiments.ts";
import { ModelSource } from "../../schema/registry.ts";
import { ModelSummary } from "../../schema/registry-api.ts";
import { DEPLOYMENT_STATUSES, STRATEGIES } from "../deployments/types.ts";

// ---- the registry (/models) ----

export const ModelList = z.object({ models: z.array(ModelSummary) });

export const RegisterResponse = z.object({
  model_id: z.string(),
  name: z.string(),
  version: z.string(),
  status: z.literal("registered"),
  source: ModelSource,
  tags: z.array(z.string()),
  created_at: z.string(),
});

export const MetricsRecorded = z.object({
  model_id: z.string(),
  source: z
    .string()
    .nullable()
    .describe("The request's `source` (the evaluation's label), null when it named none."),
  recorded_at: z.string(),
  metrics: z.record(z.string(), z.number()),
});

export const TagsChanged = z.object({
  name: z.string(),
  version: z.string().nullable().describe("null when the tag is on the model rather than on one version."),
  tags: z.array(z.string()).describe("The target's tags after the change."),
  changed: z.boolean().describe("False when the tag was already there (PUT) or already gone (DELETE)."),
});

export const AliasSet = z.object({
  name: z.string(),
  alias: z.string(),
  version: z.string(),
  previous: z.string().nullable().describe("The version the alias pointed at before, null when it is new."),
});

export const AliasRemoved = z.object({ name: z.string(), alias: z.string(), removed: z.string() });

export const RollbackResponse = z.object({
  name: z.string(),
  active: z.string().nullable(),
  previous: z.string().nullable(),
});

export const DeactivateResponse = z.object({
  name: z.string(),
  active: z.null(),
  previous: z.string().nullable(),
  noop: z.boolean().describe("True when no version was active (nothing changed)."),
});

export const RetireResponse = z.object({
  model_id: z.string(),
  status: z.enum(["deprecated", "archived"]),
  noop: z.boolean().describe("True when the version had that status already."),
});

export const ArtifactStored = z.object({
  model_id: z.string(),
  sha256: z.string(),
  size: z.number().int(),
  stored_at: z.string(),
});

// ---- deployments and A/B tests ----

export const RolloutEvent = z.object({
  at: z.string().nullable(),
  actor: z.string().describe("The admin's token `sub`, or `controller` for the controller's own decisions."),
  kind: z.string(),
  request_id: z.string().optional(),
  detail: z
    .record(z.string(), z.unknown())
    .describe("The decision's inputs and numbers (a canary judgement, a step, a command)."),
});

const JsonObject = z.record(z.string(), z.unknown());

export const DeploymentView = z.object({
  deployment_id: z.string(),
  model: z.string(),
  strategy: z.enum(STRATEGIES),
  status: z.enum(DEPLOYMENT_STATUSES),
  running: z.boolean(),
  baseline: z
    .string()
    .nullable()
    .describe("name:version serving before the deployment (arm a), null when none was active."),
  candidate: z.string().describe("name:version being deployed (arm b)."),
  traffic_share: z
    .number()
    .min(0)
    .max(1)
    .describe(
      "The share of end users the new version serves now (0 once it ended unsuccessfully or before it serves).",
    ),
  phase: z.number().int().describe("The canary step (or rolling batch) under way."),
  options: JsonObject.describe(
    "The strategy's options with every default applied, as the state machine stores them (camelCase).",
  ),
  criteria: JsonObject.nullable().describe(
    "The canary judge's criteria as asked, null when the defaults apply.",
  ),
  state: JsonObject.describe("The state machine's state (gateway/deployments/types.ts DeploymentState)."),
  smoke_test: z.unknown().describe("Blue-green: the last smoke test's result."),
  result: JsonObject.nullable().describe("How it ended and why, once it has."),
  created_by: z.string(),
  created_at: z.string().nullable(),
  updated_at: z.string().nullable(),
  ended_at: z.string().nullable(),
  events: z
    .array(RolloutEvent)
    .optional()
    .describe("Every decision, oldest first (GET of one deployment and commands; not in lists)."),
});

/** `events` is left out of list rows. */
export const DeploymentList = z.object({ deployments: z.array(DeploymentView) });

export const AbTestView = z.object({
  test_id: z.string(),
  status: z.enum(["running", "stopped", "completed"]),
  running: z.boolean(),
  model: z.string().describe("The name whose requests are split (model_a's)."),
  model_a: z.string(),
  model_b: z.string(),
  traffic_split: z.number(),
  duration_hours: z.number(),
  success_metrics: z.array(SuccessMetric),
  alpha: z.number(),
  min_requests: z.number().int(),
  created_by: z.string(),
  started_at: z.string().nullable(),
  ends_at: z.string().nullable(),
  ended_at: z.string().nullable(),
  results: z
    .unknown()
    .describe(
      "The report (AbReport): live while it runs, final once it ended; null in lists and before any figure exists.",
    ),
  unavailable: z
    .number()
    .int()
    .optional()
    .describe("Requests the hubs could not count (a pool not answering)."),
  missing_pools: z.array(z.string()).optional().describe("Pools missing from the figures."),
  events: z.array(RolloutEvent).optional(),
});

/** `events` and the live `results` are left out of list rows. */
export const AbTestList = z.object({ ab_tests: z.array(AbTestView) });

export const FeedbackRecorded = z.object({
  request_id: z.string(),
  score: z.number().min(0).max(1),
  recorded: z.literal(true),
  experiment: z
    .object({ id: z.string(), variant: z.string() })
    .nullable()
    .describe("The A/B test or deployment arm that served the request, null when none did."),
});

// ---- inference ----

export const GenerateStreamChunk = z
  .object({ text: z.string() })
  .describe("`data` of a /generate stream's `chunk` event: the text generated since the last one.");
export const GenerateStreamDone = GenerateResponse.omit({ text: true }).describe(
  "`data` of a /generate stream's `done` event: the answer's summary without its text.",
);

const OpenAIUsage = z.object({
  prompt_tokens: z.number().int(),
  completion_tokens: z.number().int(),
  total_tokens: z.number().int(),
});

const ToolCall = z.object({
  id: z.string().describe('"call_" and 24 letters and digits.'),
  type: z.literal("function"),
  function: z.object({ name: z.string(), arguments: z.string().describe("The arguments as JSON text.") }),
});

export const ChatCompletion = z.object({
  id: z.string(),
  object: z.literal("chat.completion"),
  created: z.number().int(),
  model: z.string(),
  choices: z.array(
    z.object({
      index: z.number().int(),
      message: z.object({
        role: z.literal("assistant"),
        content: z.string().nullable().describe("null when the model called tools."),
        refusal: z.null(),
        tool_calls: z
          .array(ToolCall)
          .optional()
          .describe("The calls the model made (tools), each validated against its function's parameters."),
      }),
      logprobs: z.null(),
      finish_reason: z.enum(["stop", "length", "tool_calls"]),
    }),
  ),
  usage: OpenAIUsage,
  system_fingerprint: z.null(),
});

export const ChatCompletionChunk = z
  .object({
    id: z.string(),
    object: z.literal("chat.completion.chunk"),
    created: z.number().int(),
    model: z.string(),
    choices: z
      .array(
        z.object({
          index: z.number().int(),
          delta: z.object({
            role: z.literal("assistant").optional(),
            content: z.string().nullable().optional(),
            tool_calls: z
              .array(
                z.object({
                  index: z.number().int(),
                  id: z.string().optional(),
                  type: z.literal("function").optional(),
                  function: z.object({ name: z.string().optional(), arguments: z.string() }),
                }),
              )
              .optional()
              .describe(
                'A call\'s first delta has its index, id, type and name (arguments ""), the next ones add arguments; sent once the call validated.',
              ),
          }),
          logprobs: z.null(),
          finish_reason: z.enum(["stop", "length", "tool_calls"]).nullable(),
        }),
      )
      .describe("Empty in the last chunk when stream_options.include_usage asked for the usage."),
    system_fingerprint: z.null(),
    usage: OpenAIUsage.nullable()
      .optional()
      .describe("With include_usage: null in every chunk but the last, which carries it."),
  })
  .describe("One `data:` line of a streamed chat completion (the stream ends with `data: [DONE]`).");

export const OpenAIModelList = z.object({
  object: z.literal("list"),
  data: z.array(
    z.object({
      id: z.string(),
      object: z.literal("model"),
      created: z.number().int().describe("When any pool first saw an agent serve it (epoch seconds)."),
      owned_by: z.literal("orchard"),
    }),
  ),
});
