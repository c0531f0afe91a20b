// Streamed structured output (POST /generate/structured with stream: true): each attempt's raw
// text as `chunk` {text, attempt} events while it is generated; after an attempt that failed
// validation, `retry` {attempt, errors}; then `done` {data, raw, attempts, usage, model_name,
// request_id, latency_ms} once an output validated, or `error` {error: {code, message, requestId,
// details?}}. A refusal of the first attempt (no agent, rate limited) is still an HTTP status.
import type { Context } from "hono";
import type { ErrorCode } from "../../schema/api.ts";
import type { DispatchRequest } from "../../schema/hub.ts";
import type { FinishReason } from "../../schema/protocol.ts";
import { GatewayError } from "../errors.ts";
import { describeError, log } from "../log.ts";
import { limitedDispatch } from "../ratelimit/dispatch.ts";
import { SSE_HEADERS, sseMessage } from "../render/sse.ts";
import type { AppEnv } from "../types.ts";
import {
  DEADLINE_CODES,
  firstAttempt,
  nextAttempt,
  type StructuredFailure,
  type StructuredRun,
  type StructuredUsage,
  structuredDeadline,
  structuredInvalid,
  timeLeft,
} from "./attempts.ts";
import { hubStreamEvents, type StreamStopper } from "./hub-answer.ts";
import { recordStructuredOutcome } from "./outcomes.ts";
import { judgeOutput } from "./output.ts";

const encoder = new TextEncoder();

/** What one streamed attempt ended with: its text and summary, or the hub's error event. */
type AttemptEnd =
  | { ok: true; raw: string; finishReason: FinishReason; model: string }
  | { ok: false; code: ErrorCode; message: string };

export async function streamStructured<E extends AppEnv>(
  c: Context<E>,
  run: StructuredRun,
): Promise<Response> {
  const deadline = structuredDeadline(c, run.dispatch);
  const requestId = run.dispatch.response.requestId;
  let request: DispatchRequest = { ...firstAttempt(run, true), timeoutMs: Math.max(1, timeLeft(deadline)) };
  const first = await limitedDispatch(c, request, run.pools);
  // Written as it comes, never awaited (an attempt's output is bounded by max_tokens, and waiting
  // on a slow reader would hold the next attempt back); a caller that goes away aborts the generation.
  const stopper: StreamStopper = { stop: null };
  const pipe = new IdentityTransformStream();
  const writer = pipe.writable.getWriter();
  const body = pipe.readable;
  let open = true;
  // workerd learns that the caller went away when it next writes: then the attempt is stopped.
  const lost = () => {
    if (!open) return;
    open = false;
    stopper.stop?.();
  };
  writer.closed.catch(lost);
  const send = (data: unknown, event: string) => {
    if (!open) return;
    writer.write(encoder.encode(sseMessage(data, event))).catch(lost);
  };
  const sendError = (err: GatewayError) =>
    send(
      {
        error: {
          code: err.code,
          message: err.message,
          requestId,
          ...(err.details === undefined ? {} : { details: err.details }),
        },
      },
      "error",
    );
  const usage: StructuredUsage = { promptTokens: 0, completionTokens: 0 };

  const readAttempt = async (response: Response, attempt: number): Promise<AttemptEnd> => {
    let raw = "";
    for await (const event of hubStreamEvents(response, stopper)) {
      if (event.event === "chunk") {
        raw += event.text;
        if (event.text !== "") send({ text: event.text, attempt }, "chunk");
      } else if (event.event === "done") {
        usage.promptTokens += event.summary.prompt_tokens;
        usage.completionTokens += event.summary.tokens_generated;
        return { ok: true, raw, finishReason: event.summary.finish_reason, model: event.summary.model_name };
      } else return { ok: false, code: event.code, message: event.message };
    }
    return { ok: false, code: "UPSTREAM_ERROR", message: "the agent pool's stream ended early" };
  };

  const pump = async () => {
    let response = first;
    let failure: StructuredFailure | null = null;
    let model = run.dispatch.model ?? "";
    for (let attempt = 1; ; attempt++) {
      const end = await readAttempt(response, attempt);
      if (!end.ok) {
        sendError(new GatewayError(end.code, end.message));
        return;
      }
      model = end.model;
      const verdict = judgeOutput(end.raw, end.finishReason, run.checked);
      if (verdict.valid) {
        recordStructuredOutcome(c, run.pools, { model, outcome: "valid", attempts: attempt });
        send(
          {
            data: verdict.data,
            raw: end.raw,
            attempts: attempt,
            usage: { prompt_tokens: usage.promptTokens, completion_tokens: usage.completionTokens },
            model_name: model,
            request_id: requestId,
            latency_ms: Date.now() - run.dispatch.response.receivedAt,
          },
          "done",
        );
        return;
      }
      failure = { errors: verdict.issues, raw: end.raw, attempts: attempt };
      const left = timeLeft(deadline);
      if (attempt > run.maxRetries || left < 1) break;
      if (!open) return;
      send({ attempt, errors: verdict.issues }, "retry");
      request = nextAttempt(request, run.feedback, end.raw, verdict.issues, left);
      try {
        response = await limitedDispatch(c, request, run.pools);
      } catch (err) {
        if (err instanceof GatewayError && DEADLINE_CODES.has(err.code)) break;
        throw err;
      }
    }
    recordStructuredOutcome(c, run.pools, { model, outcome: "invalid", attempts: failure.attempts });
    const why = failure.attempts <= run.maxRetries ? " (the request's deadline ended the retries)" : "";
    sendError(structuredInvalid(failure, why));
  };

  const finished = pump()
    .catch((err: unknown) => {
      if (!open) return;
      if (err instanceof GatewayError) return sendError(err);
      log("error", "structured stream failed", { requestId, ...describeError(err) });
      return sendError(new GatewayError("INTERNAL", "internal error"));
    })
    .finally(() => {
      if (open) writer.close().catch(() => {});
    });
  try {
    c.executionCtx.waitUntil(finished);
  } catch {
    // No execution context (a test calling the app directly): the stream runs all the same.
  }
  const headers = new Headers(first.headers);
  for (const [name, value] of Object.entries(SSE_HEADERS)) headers.set(name, value);
  headers.delete("Content-Length");
  return new Response(body, { status: 200, headers });
}
