// The attempt loop of structured outputs: dispatch with `format` (through the rate limiter, so each
// attempt counts), validate the answer against the checked schema, and on failure try again with
// the issues fed back, bounded by max_retries and the request's deadline; when they run out,
// STRUCTURED_OUTPUT_INVALID (422) with the issues, the last raw output and the attempts.
// runStructured answers whole; streamStructured streams each attempt's text as it comes.
import type { Context } from "hono";
import type { DispatchRequest } from "../../schema/hub.ts";
import type { FinishReason } from "../../schema/protocol.ts";
import { readConfig } from "../config.ts";
import { GatewayError } from "../errors.ts";
import { limitedDispatch } from "../ratelimit/dispatch.ts";
import type { AppEnv } from "../types.ts";
import {
  type FeedbackShape,
  instructMessages,
  instructPrompt,
  retryMessages,
  retryPrompt,
  schemaInstruction,
} from "./feedback.ts";
import { readGenerateAnswer } from "./hub-answer.ts";
import { recordStructuredOutcome } from "./outcomes.ts";
import { judgeOutput } from "./output.ts";
import type { CheckedSchema, SchemaIssue } from "./schema-check.ts";

export type { FeedbackShape } from "./feedback.ts";

export interface StructuredRun {
  /** The request as a plain generation would send it; `format` is set from `checked` if absent. */
  dispatch: DispatchRequest;
  pools: readonly string[];
  checked: CheckedSchema;
  /** Attempts after the first (StructuredRetries: 0..5, default 2). */
  maxRetries: number;
  feedback: FeedbackShape;
  /** The first attempt's instruction; undefined: schemaInstruction(checked.schema); null: none. */
  instruction?: string | null;
}

export interface StructuredUsage {
  promptTokens: number;
  completionTokens: number;
}

export interface StructuredResult {
  data: unknown;
  raw: string;
  attempts: number;
  /** Summed over the attempts. */
  usage: StructuredUsage;
  /** The model the hub answered with (model_name). */
  model: string;
  finishReason: FinishReason;
  /** The last answer's headers (X-Orchard-Model, rollout variant, rate limits). */
  headers: Headers;
}

/** The details of STRUCTURED_OUTPUT_INVALID. */
export interface StructuredFailure {
  errors: SchemaIssue[];
  raw: string;
  attempts: number;
}

export function structuredInvalid(failure: StructuredFailure, why: string): GatewayError {
  return new GatewayError(
    "STRUCTURED_OUTPUT_INVALID",
    `the output did not match the schema after ${failure.attempts} attempt${failure.attempts === 1 ? "" : "s"}${why}`,
    { details: { ...failure } },
  );
}

/** The deadline of the whole structured request (epoch ms): all attempts share it. */
export function structuredDeadline<E extends AppEnv>(c: Context<E>, dispatch: DispatchRequest): number {
  const timeoutMs = dispatch.timeoutMs ?? readConfig(c.env).requestTimeoutMs;
  return dispatch.response.receivedAt + timeoutMs;
}

/** The first attempt's request: `format` set, the instruction added, the answer whole. */
export function firstAttempt(run: StructuredRun, stream: boolean): DispatchRequest {
  const { dispatch, checked } = run;
  const instruction = run.instruction === undefined ? schemaInstruction(checked.schema) : run.instruction;
  const request: DispatchRequest = {
    ...dispatch,
    format: dispatch.format ?? checked.schema,
    response: { ...dispatch.response, api: "generate", stream },
  };
  if (instruction === null) return request;
  if (request.messages !== undefined)
    return { ...request, messages: instructMessages(request.messages, instruction) };
  return { ...request, prompt: instructPrompt(request.prompt ?? "", instruction) };
}

/** The next attempt's request after `previous` answered `raw` with `issues`. */
export function nextAttempt(
  previous: DispatchRequest,
  feedback: FeedbackShape,
  raw: string,
  issues: readonly SchemaIssue[],
  timeoutMs: number,
): DispatchRequest {
  if (feedback === "messages" && previous.messages !== undefined) {
    return { ...previous, timeoutMs, messages: retryMessages(previous.messages, raw, issues) };
  }
  if (previous.prompt !== undefined) {
    return { ...previous, timeoutMs, prompt: retryPrompt(previous.prompt, raw, issues) };
  }
  return {
    ...previous,
    timeoutMs,
    messages: retryMessages(previous.messages ?? [], raw, issues),
  };
}

/** Milliseconds left of the deadline; an attempt needs at least one. */
export const timeLeft = (deadline: number) => Math.floor(deadline - Date.now());

/** A timeout that ended a retry (not the first attempt) ends the request as a 422, not a 504. */
export const DEADLINE_CODES: ReadonlySet<string> = new Set(["GATEWAY_TIMEOUT", "QUEUE_TIMEOUT"]);

export async function runStructured<E extends AppEnv>(
  c: Context<E>,
  run: StructuredRun,
): Promise<StructuredResult> {
  const deadline = structuredDeadline(c, run.dispatch);
  let request = firstAttempt(run, false);
  const usage: StructuredUsage = { promptTokens: 0, completionTokens: 0 };
  let failure: StructuredFailure | null = null;
  let model = run.dispatch.model ?? "";
  for (let attempt = 1; attempt <= run.maxRetries + 1; attempt++) {
    if (attempt > 1) {
      const left = timeLeft(deadline);
      if (left < 1 && failure !== null) break;
      request = nextAttempt(
        request,
        run.feedback,
        failure?.raw ?? "",
        failure?.errors ?? [],
        Math.max(1, left),
      );
    } else {
      request = { ...request, timeoutMs: Math.max(1, timeLeft(deadline)) };
    }
    let response: Response;
    try {
      response = await limitedDispatch(c, request, run.pools);
    } catch (err) {
      if (failure !== null && err instanceof GatewayError && DEADLINE_CODES.has(err.code)) break;
      throw err;
    }
    const answer = await readGenerateAnswer(response);
    usage.promptTokens += answer.prompt_tokens;
    usage.completionTokens += answer.tokens_generated;
    model = answer.model_name;
    const verdict = judgeOutput(answer.text, answer.finish_reason, run.checked);
    if (verdict.valid) {
      recordStructuredOutcome(c, run.pools, { model, outcome: "valid", attempts: attempt });
      return {
        data: verdict.data,
        raw: answer.text,
        attempts: attempt,
        usage,
        model,
        finishReason: answer.finish_reason,
        headers: response.headers,
      };
    }
    failure = { errors: verdict.issues, raw: answer.text, attempts: attempt };
  }
  // failure is set: the loop ran at least once, and only a failed attempt continues it.
  const last = failure as StructuredFailure;
  recordStructuredOutcome(c, run.pools, { model, outcome: "invalid", attempts: last.attempts });
  const why = last.attempts < run.maxRetries + 1 ? " (the request's deadline ended the retries)" : "";
  throw structuredInvalid(last, why);
}
