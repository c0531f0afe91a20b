// /v1/chat/completions with response_format (json_object, json_schema) or tools: the request becomes
// a structured one (gateway/structured/attempts.ts), and the validated answer is shaped as OpenAI
// answers it — content holding the JSON text, or message.tool_calls with finish_reason
// "tool_calls" — whole or streamed.
//
// Streaming: a response_format answer streams its JSON text as content deltas as the agent writes
// it, and is validated at the end (one attempt: what streamed cannot be taken back; an invalid end
// is an error data line, then [DONE]). A tool call is streamed only once the whole call validated
// (with retries, like the non-streamed answer): then delta.tool_calls exactly as OpenAI sends them.
import type { Context } from "hono";
import type { ChatCompletionRequest } from "../../schema/api.ts";
import { type DispatchRequest, HubHeader } from "../../schema/hub.ts";
import type { OutputFormat } from "../../schema/protocol.ts";
import { StructuredRetries } from "../../schema/structured.ts";
import { openAIErrorBody } from "../errors.ts";
import { limitedDispatch } from "../ratelimit/dispatch.ts";
import {
  chatCompletion,
  chatIdentity,
  chatToolCallChunks,
  chatToolCallCompletion,
} from "../render/openai-shapes.ts";
import { type Ending, streamRenderer } from "../render/render.ts";
import { SSE_HEADERS, sseMessage } from "../render/sse.ts";
import type { AppEnv } from "../types.ts";
import {
  firstAttempt,
  runStructured,
  type StructuredRun,
  structuredDeadline,
  structuredInvalid,
  timeLeft,
} from "./attempts.ts";
import { schemaInstruction } from "./feedback.ts";
import { hubStreamEvents, type StreamStopper } from "./hub-answer.ts";
import { recordStructuredOutcome } from "./outcomes.ts";
import { jsonText, judgeOutput } from "./output.ts";
import { type CheckedSchema, checkSchema } from "./schema-check.ts";
import { type ToolPlan, toolAnswer, toolChecked, toolInstruction, toolPlan } from "./tools.ts";

/** json_object's schema: any JSON object (what llama.cpp's and Ollama's "json" produce too). */
const ANY_OBJECT = { type: "object" } as const;

/** What a chat request asks the model to produce, checked; null for free text. */
export interface ChatStructure {
  checked: CheckedSchema;
  /** What the engine is asked to enforce. */
  format: OutputFormat;
  /** The first attempt's instruction. */
  instruction: string;
  /** The tools the model may call; null when it may not call any. */
  tools: ToolPlan | null;
  /** The answer without a tool call is JSON (response_format), not {"content"}. */
  jsonAnswer: boolean;
}

/**
 * The request's structure, every schema checked (bad ones are the schema codes, with the path
 * in param: response_format.json_schema.schema.properties.a.not, tools.0.function.parameters...).
 */
export function chatStructure(body: ChatCompletionRequest): ChatStructure | null {
  const answer = responseFormat(body);
  const tools = toolPlan(body.tools, body.tool_choice, body.parallel_tool_calls);
  if (tools !== null) {
    const checked = toolChecked(tools, answer?.checked ?? null);
    return {
      checked,
      format: checked.schema,
      instruction: `${toolInstruction(tools)}\n${schemaInstruction(checked.schema)}`,
      tools,
      jsonAnswer: answer !== null,
    };
  }
  if (answer === null) return null;
  return { ...answer, instruction: schemaInstruction(answer.checked.schema), tools: null, jsonAnswer: true };
}

function responseFormat(
  body: ChatCompletionRequest,
): { checked: CheckedSchema; format: OutputFormat } | null {
  const format = body.response_format;
  if (format == null || format.type === "text") return null;
  if (format.type === "json_object")
    return { checked: checkSchema(ANY_OBJECT, "response_format"), format: "json" };
  const schema = format.json_schema.schema;
  if (schema == null) return { checked: checkSchema(ANY_OBJECT, "response_format"), format: "json" };
  const checked = checkSchema(schema, "response_format.json_schema.schema");
  return { checked, format: checked.schema };
}

/** Answers a structured chat request (`dispatch` is the chat request as a plain one would go). */
export async function structuredChat<E extends AppEnv>(
  c: Context<E>,
  structure: ChatStructure,
  dispatch: DispatchRequest,
  pools: readonly string[],
): Promise<Response> {
  const run: StructuredRun = {
    dispatch: { ...dispatch, format: structure.format },
    pools,
    checked: structure.checked,
    maxRetries: StructuredRetries.default,
    feedback: "messages",
    instruction: structure.instruction,
  };
  const shape = dispatch.response;
  if (shape.stream && structure.tools === null) return streamJson(c, run);

  const result = await runStructured(c, run);
  const identity = chatIdentity(shape.requestId, result.model, shape.receivedAt);
  const headers = answerHeaders(result.headers, shape.stream);
  const answer =
    structure.tools === null
      ? ({ kind: "content", text: jsonText(result.raw) } as const)
      : toolAnswer(result.data, structure.jsonAnswer);
  if (answer.kind === "calls") {
    if (!shape.stream) {
      return new Response(JSON.stringify(chatToolCallCompletion(identity, answer.calls, result.usage)), {
        headers,
      });
    }
    const chunks = chatToolCallChunks(identity, answer.calls, result.usage, shape.includeUsage);
    return new Response(`${chunks.map((chunk) => sseMessage(chunk)).join("")}${sseMessage("[DONE]")}`, {
      headers,
    });
  }
  const ending: Ending = { finishReason: result.finishReason, usage: result.usage };
  if (!shape.stream) {
    const body = chatCompletion(identity, {
      text: answer.text,
      finishReason: result.finishReason,
      promptTokens: result.usage.promptTokens,
      completionTokens: result.usage.completionTokens,
    });
    return new Response(JSON.stringify(body), { headers });
  }
  const renderer = streamRenderer(shape, result.model);
  return new Response(`${renderer.opening()}${renderer.chunk(answer.text)}${renderer.done(ending)}`, {
    headers,
  });
}

/**
 * A streamed response_format answer: one attempt, its text streamed as content deltas as the
 * agent writes it, validated when it ends; invalid, the stream ends with STRUCTURED_OUTPUT_INVALID
 * as an error data line (the SDKs raise it), then [DONE].
 */
async function streamJson<E extends AppEnv>(c: Context<E>, run: StructuredRun): Promise<Response> {
  const deadline = structuredDeadline(c, run.dispatch);
  const request = { ...firstAttempt(run, true), timeoutMs: Math.max(1, timeLeft(deadline)) };
  const response = await limitedDispatch(c, request, run.pools);
  const shape = run.dispatch.response;
  const renderer = streamRenderer(shape, response.headers.get(HubHeader.model) ?? run.dispatch.model ?? "");
  // The stopper cancels the hub's body at once (a generator's return() waits for its pending read).
  const stopper: StreamStopper = { stop: null };
  const events = hubStreamEvents(response, stopper);
  const encoder = new TextEncoder();
  let text = "";
  let opened = false;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const out = (s: string) => {
        if (s !== "") controller.enqueue(encoder.encode(s));
      };
      if (!opened) {
        opened = true;
        out(renderer.opening());
      }
      const next = await events.next();
      if (next.done) {
        controller.close();
        return;
      }
      const event = next.value;
      if (event.event === "chunk") {
        text += event.text;
        out(renderer.chunk(event.text));
        return;
      }
      if (event.event === "error") out(renderer.error(event.code, event.message));
      else {
        const finishReason = event.summary.finish_reason;
        const verdict = judgeOutput(text, finishReason, run.checked);
        recordStructuredOutcome(c, run.pools, {
          model: event.summary.model_name,
          outcome: verdict.valid ? "valid" : "invalid",
          attempts: 1,
        });
        if (verdict.valid) {
          out(
            renderer.done({
              finishReason,
              usage: {
                promptTokens: event.summary.prompt_tokens,
                completionTokens: event.summary.tokens_generated,
              },
            }),
          );
        } else {
          // As the non-streamed 422's body, details and all (one attempt: what streamed stays streamed).
          const invalid = structuredInvalid({ errors: verdict.issues, raw: text, attempts: 1 }, "");
          out(`${sseMessage(openAIErrorBody(invalid))}${sseMessage("[DONE]")}`);
        }
      }
      controller.close();
      await events.return(undefined);
    },
    cancel() {
      stopper.stop?.();
      events.return(undefined).catch(() => {});
    },
  });
  return new Response(body, { headers: answerHeaders(response.headers, true) });
}

/** The hub's headers of the answer (model, rollout variant, rate limits), with the caller's content type. */
function answerHeaders(from: Headers, stream: boolean): Headers {
  const headers = new Headers(from);
  headers.delete("Content-Length");
  if (stream) for (const [name, value] of Object.entries(SSE_HEADERS)) headers.set(name, value);
  else headers.set("Content-Type", "application/json");
  return headers;
}
