// POST /generate: Orchard's own completion API (GenerateRequest -> GenerateResponse, or SSE with
// `chunk` events, then `done` with the usage, or `error` with the error body). The hub renders
// the answer (inference/render.ts); this route validates, authorizes and passes it on.
import { Hono } from "hono";
import { GenerateRequest } from "../../schema/api.ts";
import { inferenceRequest } from "../inference/inference-request.ts";
import { generateParams } from "../inference/openai.ts";
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
    const { requestId, receivedAt, timeoutMs, caller, subject, pools } = inferenceRequest(c, body.model);
    return limitedDispatch(
      c,
      {
        requestId,
        model: body.model,
        timeoutMs,
        prompt: body.prompt,
        params: generateParams(body),
        response: { api: "generate", stream: body.stream, includeUsage: false, requestId, receivedAt },
        subject,
        caller,
      },
      pools,
    );
  },
);
