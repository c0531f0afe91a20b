// The inference operations: POST /generate, the OpenAI-compatible /v1 routes, and POST /feedback.

import type { ErrorCode } from "../../../schema/api.ts";
import { ChatCompletionRequest, GenerateRequest, GenerateResponse } from "../../../schema/api.ts";
import { FeedbackRequest } from "../../../schema/rollouts-api.ts";
import type { OperationSpec } from "../operation.ts";
import { ChatCompletion, FeedbackRecorded, OpenAIModelList } from "../shapes.ts";
import { AnswerHeaders, InferenceHeaders } from "./params.ts";

/** What the hub answers when a request cannot be served, decided before anything streams. */
const DISPATCH_ERRORS = [
  "MODEL_NOT_FOUND",
  "MODEL_ARCHIVED",
  "CONTEXT_OVERFLOW",
  "QUEUE_FULL",
  "UPSTREAM_ERROR",
  "NO_AGENT_AVAILABLE",
  "QUEUE_TIMEOUT",
  "GATEWAY_TIMEOUT",
  // The prompt screen (gateway/security): the injection rules under block, a content filter.
  "PROMPT_INJECTION",
  "CONTENT_FILTERED",
  "RATE_LIMITED",
] as const satisfies ErrorCode[];

export const inferenceOperations: OperationSpec[] = [
  {
    method: "post",
    path: "/generate",
    operationId: "generate",
    tag: "Inference",
    access: "user",
    summary: "Generate a completion for a prompt",
    description:
      "Orchard's own completion API. Without `model`, DEFAULT_MODEL serves (or, when none is set, the first " +
      "model an agent serves). With `stream: true` the answer is server-sent events as tokens arrive: `chunk` " +
      "events (GenerateStreamChunk), then `done` (GenerateStreamDone) or, when the generation fails after the " +
      "first chunk, `error` (ErrorBody). Failures before the first chunk are retried on another agent " +
      "and otherwise answered with an error status.",
    params: { header: InferenceHeaders },
    body: {
      schema: GenerateRequest,
      example: {
        prompt: "Write a haiku about apples.",
        model: "llama-3.2-1b",
        max_tokens: 64,
        temperature: 0.7,
      },
    },
    responses: {
      "200": {
        description: "The completion: one JSON body, or (stream: true) an event stream.",
        json: GenerateResponse,
        content: {
          "text/event-stream": {
            type: "string",
            description:
              "event: chunk|done|error, data: JSON (GenerateStreamChunk, GenerateStreamDone, ErrorBody).",
          },
        },
        headers: AnswerHeaders,
      },
    },
    errors: DISPATCH_ERRORS,
  },
  {
    method: "post",
    path: "/v1/chat/completions",
    operationId: "createChatCompletion",
    tag: "Inference",
    access: "user",
    summary: "Create a chat completion (OpenAI-compatible)",
    description:
      "OpenAI's chat completions, so the official SDKs work against `<gateway>/v1` with an Orchard JWT as the API " +
      "key. Unknown fields are ignored; fields that change what a request means and that Orchard does not " +
      "implement (the legacy functions/function_call, log probabilities, audio, n > 1, ...) are refused with " +
      "UNSUPPORTED_PARAMETER, never silently dropped. `response_format` (json_object, json_schema) and `tools` " +
      "(with tool_choice none/auto/required/named, parallel_tool_calls, tool messages) are structured outputs: " +
      "every schema is checked before dispatch, the answer is validated and retried with the issues fed back, and " +
      '422 STRUCTURED_OUTPUT_INVALID when every attempt failed (README "Structured outputs and tools"). A ' +
      "streamed response_format answer streams its JSON and is validated at the end; streamed tool calls are sent " +
      "once the call validated. Streamed (`stream: true`): `data:` lines of " +
      "ChatCompletionChunk, then `data: [DONE]`; a failure after the first chunk is a `data:` line with an " +
      "OpenAIErrorBody, then `[DONE]`. Errors on /v1 have OpenAI's shape (OpenAIErrorBody).",
    params: { header: InferenceHeaders },
    body: {
      schema: ChatCompletionRequest,
      example: {
        model: "llama-3.2-1b",
        messages: [
          { role: "system", content: "You answer in one sentence." },
          { role: "user", content: "Why do apples turn brown?" },
        ],
        max_tokens: 64,
        temperature: 0.2,
      },
    },
    responses: {
      "200": {
        description: "The completion: one JSON body, or (stream: true) an event stream.",
        json: ChatCompletion,
        content: {
          "text/event-stream": {
            type: "string",
            description:
              "data: JSON (ChatCompletionChunk, or OpenAIErrorBody on a failure), then data: [DONE].",
          },
        },
        headers: AnswerHeaders,
      },
    },
    errors: [
      ...DISPATCH_ERRORS,
      "UNSUPPORTED_PARAMETER",
      "INVALID_SCHEMA",
      "UNSUPPORTED_SCHEMA_KEYWORD",
      "SCHEMA_REMOTE_REF",
      "SCHEMA_TOO_LARGE",
      "UNKNOWN_TOOL",
      "TOOL_CALL_MISMATCH",
      "STRUCTURED_OUTPUT_INVALID",
    ],
  },
  {
    method: "get",
    path: "/v1/models",
    operationId: "listOpenAIModels",
    tag: "Inference",
    access: "user",
    summary: "List the models agents serve now (OpenAI-compatible)",
    description: "Every model some connected agent serves, over every pool, each once, sorted by id.",
    responses: { "200": { description: "The models.", json: OpenAIModelList } },
    errors: ["UPSTREAM_ERROR"],
  },
  {
    method: "post",
    path: "/feedback",
    operationId: "recordFeedback",
    tag: "Inference",
    access: "user",
    summary: "Give feedback on an answer",
    description:
      "A score in [0, 1] or thumbs up (1) / down (0) on a request the same caller made in the last 24 hours " +
      "(`request_id` is its X-Request-Id). Feedback on a request a deployment or A/B test assigned counts toward " +
      "that arm's `feedback` and `accuracy` metrics.",
    body: {
      schema: FeedbackRequest,
      example: { request_id: "8b0d6f5e-2c1a-4f7e-9d3b-5a6c7e8f9a0b", thumbs: "up" },
    },
    responses: { "201": { description: "Recorded.", json: FeedbackRecorded } },
    errors: ["REQUEST_NOT_FOUND", "FEEDBACK_FORBIDDEN", "FEEDBACK_EXISTS"],
  },
];
