// POST /generate: Orchard's own completion API (GenerateRequest -> GenerateResponse, or SSE with
// `chunk` events, then `done` with the usage, or `error` with the error body).
import { Hono } from "hono";
import { GenerateRequest, type GenerateResponse } from "../../schema/api.ts";
import { readConfig } from "../config.ts";
import { GatewayError } from "../errors.ts";
import { collectCompletion, dispatchToHub, type HubStream } from "../inference/hub-client.ts";
import { samplingParams } from "../inference/openai.ts";
import { inferenceHeaders, requestTimeoutMs, TIMEOUT_HEADER } from "../inference/request-options.ts";
import { SSE_HEADERS, sseBody, sseMessage } from "../inference/sse.ts";
import { auth } from "../middleware/auth/index.ts";
import { jsonBody } from "../middleware/json-body/index.ts";
import type { AppEnv } from "../types.ts";

export const generateRoutes = new Hono<AppEnv>().post(
  "/",
  auth({ role: "user" }),
  jsonBody(GenerateRequest),
  async (c) => {
    const body = c.get("body");
    const requestId = c.get("requestId");
    const started = Date.now();
    const timeoutMs = requestTimeoutMs(c.req.header(TIMEOUT_HEADER), readConfig(c.env).requestTimeoutMaxMs);
    const stream = await dispatchToHub(c.env, {
      requestId,
      model: body.model,
      timeoutMs,
      prompt: body.prompt,
      params: samplingParams({
        maxTokens: body.max_tokens,
        temperature: body.temperature,
        topP: body.top_p,
        seed: body.seed,
        stop: body.stop,
      }),
    });
    const headers = inferenceHeaders(stream);
    if (body.stream) {
      return c.body(
        sseBody(generateEvents(stream, requestId, started), () => stream.cancel()),
        200,
        {
          ...SSE_HEADERS,
          ...headers,
        },
      );
    }
    const completion = await collectCompletion(stream);
    const response: GenerateResponse = {
      text: completion.text,
      tokens_generated: completion.completionTokens,
      prompt_tokens: completion.promptTokens,
      finish_reason: completion.finishReason,
      latency_ms: Date.now() - started,
      model_name: stream.model,
      request_id: requestId,
    };
    return c.json(response, 200, headers);
  },
);

async function* generateEvents(
  stream: HubStream,
  requestId: string,
  started: number,
): AsyncGenerator<string> {
  for await (const event of stream.events()) {
    if (event.type === "chunk") {
      yield sseMessage({ text: event.text }, "chunk");
    } else if (event.type === "done") {
      const done: Omit<GenerateResponse, "text"> = {
        tokens_generated: event.usage.completionTokens,
        prompt_tokens: event.usage.promptTokens,
        finish_reason: event.finishReason,
        latency_ms: Date.now() - started,
        model_name: stream.model,
        request_id: requestId,
      };
      yield sseMessage(done, "done");
    } else {
      const error = new GatewayError(event.code, event.message);
      yield sseMessage({ error: { code: error.code, message: error.message, requestId } }, "error");
    }
  }
}
