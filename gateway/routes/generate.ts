// POST /generate: Orchard's own completion API (GenerateRequest -> GenerateResponse, or SSE with
// `chunk` events, then `done` with the usage, or `error` with the error body). The hub renders
// the answer (inference/render.ts); this route validates, authorizes and passes it on.
import { Hono } from "hono";
import { GenerateRequest } from "../../schema/api.ts";
import { USER_HEADER } from "../../schema/rollouts.ts";
import { readConfig } from "../config.ts";
import { poolOrder } from "../inference/hub-client.ts";
import { samplingParams } from "../inference/openai.ts";
import { endUser, requestTimeoutMs, TIMEOUT_HEADER } from "../inference/request-options.ts";
import { auth } from "../middleware/auth/index.ts";
import { jsonBody } from "../middleware/json-body/index.ts";
import { limitedDispatch } from "../ratelimit/dispatch.ts";
import { generateGate } from "../security/screen-prompt.ts";
import type { AppEnv } from "../types.ts";

export const generateRoutes = new Hono<AppEnv>().post(
  "/",
  auth({ role: "user" }),
  jsonBody(GenerateRequest),
  generateGate,
  async (c) => {
    const body = c.get("body");
    const requestId = c.get("requestId");
    const receivedAt = Date.now();
    const config = readConfig(c.env);
    const timeoutMs = requestTimeoutMs(c.req.header(TIMEOUT_HEADER), config.requestTimeoutMaxMs);
    const caller = c.get("caller").sub;
    const subject = endUser(c.req.header(USER_HEADER), undefined, caller);
    // Without a model: DEFAULT_MODEL's pools, or (none set) the default pool, whose hub picks one.
    const pools = poolOrder(config.pools, body.model ?? config.defaultModel, requestId);
    return limitedDispatch(
      c,
      {
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
        response: { api: "generate", stream: body.stream, includeUsage: false, requestId, receivedAt },
        subject,
        caller,
      },
      pools,
    );
  },
);
