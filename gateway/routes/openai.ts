// The OpenAI-compatible API under /v1: chat completions (plain and streamed) and the model list,
// shaped so the official SDKs work when pointed at <gateway>/v1 with an Orchard JWT as API key.
// The hub renders the completion and its chunks (render/render.ts); with response_format or tools the
// answer is validated here first and shaped by structured/chat.ts.
import { Hono, type MiddlewareHandler } from "hono";
import { ChatCompletionRequest } from "../../schema/api.ts";
import type { DispatchRequest } from "../../schema/hub.ts";
import { GatewayError } from "../errors.ts";
import { observePools } from "../inference/hub-client.ts";
import { inferenceRequest } from "../inference/inference-request.ts";
import { chatMessages, chatParams } from "../inference/openai.ts";
import { auth } from "../middleware/auth/index.ts";
import { jsonBody } from "../middleware/json-body/index.ts";
import { limitedDispatch } from "../ratelimit/dispatch.ts";
import { chatGate } from "../security/screen-prompt.ts";
import { type ChatStructure, chatStructure, structuredChat } from "../structured/chat.ts";
import type { AppEnv } from "../types.ts";

/**
 * response_format's and tools' schemas are checked (and composed) before the prompt screen and
 * before anything is dispatched: a bad schema is a 400 naming its path.
 */
const checkStructure: MiddlewareHandler<
  AppEnv & { Variables: { body: ChatCompletionRequest; chatStructure: ChatStructure | null } }
> = async (c, next) => {
  c.set("chatStructure", chatStructure(c.get("body")));
  await next();
};

export const openaiRoutes = new Hono<AppEnv>()
  .post(
    "/chat/completions",
    auth({ role: "user" }),
    jsonBody(ChatCompletionRequest),
    checkStructure,
    chatGate,
    async (c) => {
      const body = c.get("body");
      const { requestId, receivedAt, timeoutMs, caller, subject, pools } = inferenceRequest(
        c,
        body.model,
        body.user,
      );
      const dispatch: DispatchRequest = {
        requestId,
        model: body.model,
        messages: chatMessages(body),
        params: chatParams(body),
        timeoutMs,
        response: {
          api: "chat",
          stream: body.stream === true,
          includeUsage: body.stream === true && body.stream_options?.include_usage === true,
          requestId,
          receivedAt,
        },
        subject,
        caller,
      };
      const structure = c.get("chatStructure");
      if (structure !== null) return structuredChat(c, structure, dispatch, pools);
      return limitedDispatch(c, dispatch, pools);
    },
  )
  .get("/models", auth({ role: "user" }), async (c) => {
    const observed = await observePools(c.env);
    if (observed.every((o) => o.snapshot === null)) {
      throw new GatewayError("UPSTREAM_ERROR", "no agent pool is answering");
    }
    // A model several pools serve is listed once, as old as its oldest sighting.
    const firstSeen = new Map<string, number>();
    for (const { snapshot } of observed) {
      for (const m of snapshot?.models ?? []) {
        firstSeen.set(m.id, Math.min(m.firstSeenAt, firstSeen.get(m.id) ?? Number.POSITIVE_INFINITY));
      }
    }
    return c.json({
      object: "list",
      data: [...firstSeen]
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([id, firstSeenAt]) => ({
          id,
          object: "model",
          created: Math.floor(firstSeenAt / 1000),
          owned_by: "orchard",
        })),
    });
  });
