// The OpenAI-compatible API under /v1: chat completions (plain and streamed) and the model list,
// shaped so the official SDKs work when pointed at <gateway>/v1 with an Orchard JWT as API key.
import { Hono } from "hono";
import { ChatCompletionRequest } from "../../schema/api.ts";
import { readConfig } from "../config.ts";
import { GatewayError, openAIErrorBody } from "../errors.ts";
import { collectCompletion, dispatchToHub, type HubStream, poolHub } from "../inference/hub-client.ts";
import {
  type ChatIdentity,
  chatChunk,
  chatCompletion,
  chatIdentity,
  chatMessages,
  chatParams,
  chatUsageChunk,
  openAIFinishReason,
} from "../inference/openai.ts";
import { inferenceHeaders, requestTimeoutMs, TIMEOUT_HEADER } from "../inference/request-options.ts";
import { SSE_HEADERS, sseBody, sseMessage } from "../inference/sse.ts";
import { auth } from "../middleware/auth/index.ts";
import { jsonBody } from "../middleware/json-body/index.ts";
import type { AppEnv } from "../types.ts";

export const openaiRoutes = new Hono<AppEnv>()
  .post("/chat/completions", auth({ role: "user" }), jsonBody(ChatCompletionRequest), async (c) => {
    const body = c.get("body");
    const requestId = c.get("requestId");
    const timeoutMs = requestTimeoutMs(c.req.header(TIMEOUT_HEADER), readConfig(c.env).requestTimeoutMaxMs);
    const stream = await dispatchToHub(c.env, {
      requestId,
      model: body.model,
      messages: chatMessages(body),
      params: chatParams(body),
      timeoutMs,
    });
    const identity = chatIdentity(requestId, stream.model);
    const headers = inferenceHeaders(stream);
    if (body.stream) {
      const includeUsage = body.stream_options?.include_usage === true;
      return c.body(
        sseBody(chatChunks(stream, identity, includeUsage), () => stream.cancel()),
        200,
        {
          ...SSE_HEADERS,
          ...headers,
        },
      );
    }
    return c.json(chatCompletion(identity, await collectCompletion(stream)), 200, headers);
  })
  .get("/models", auth({ role: "user" }), async (c) => {
    const { models } = await poolHub(c.env).snapshot();
    return c.json({
      object: "list",
      data: models.map((m) => ({
        id: m.id,
        object: "model",
        created: Math.floor(m.firstSeenAt / 1000),
        owned_by: "orchard",
      })),
    });
  });

/**
 * Role delta first, content deltas, a finish chunk, the usage chunk if asked, then [DONE]. A failure
 * after the first chunk is a data line carrying `error` (the SDKs raise an APIError for it), then
 * [DONE], so clients that only wait for [DONE] also see the stream end.
 */
async function* chatChunks(
  stream: HubStream,
  identity: ChatIdentity,
  includeUsage: boolean,
): AsyncGenerator<string> {
  yield sseMessage(chatChunk(identity, { role: "assistant", content: "" }, null, includeUsage));
  for await (const event of stream.events()) {
    if (event.type === "chunk") {
      if (event.text !== "")
        yield sseMessage(chatChunk(identity, { content: event.text }, null, includeUsage));
    } else if (event.type === "done") {
      yield sseMessage(chatChunk(identity, {}, openAIFinishReason(event.finishReason), includeUsage));
      if (includeUsage) {
        yield sseMessage(chatUsageChunk(identity, event.usage.promptTokens, event.usage.completionTokens));
      }
      yield sseMessage("[DONE]");
    } else {
      yield sseMessage(openAIErrorBody(new GatewayError(event.code, event.message)));
      yield sseMessage("[DONE]");
    }
  }
}
