// POST /generate/structured: a generation whose output is valid against a JSON Schema (the body's,
// or one registered with POST /schemas), or a 422 saying why not. The schema is checked before
// anything is dispatched; the attempt loop (structured/attempts.ts) validates and retries.
import { Hono } from "hono";
import { GenerateStructuredRequest, type GenerateStructuredResponse } from "../../schema/structured.ts";
import { GatewayError } from "../errors.ts";
import { inferenceRequest } from "../inference/inference-request.ts";
import { generateParams } from "../inference/openai.ts";
import { auth } from "../middleware/auth/index.ts";
import { jsonBody } from "../middleware/json-body/index.ts";
import { type PromptParts, screenPrompt } from "../security/screen-prompt.ts";
import { runStructured } from "../structured/attempts.ts";
import { type CheckedSchema, checkSchema } from "../structured/schema-check.ts";
import { readSchema } from "../structured/schema-store.ts";
import { streamStructured } from "../structured/stream.ts";
import type { AppEnv } from "../types.ts";

/** The prompt screen reads the prompt, or every message (users' scored, as on chat). */
export const structuredParts: PromptParts<GenerateStructuredRequest> = {
  model: (body) => body.model,
  *scored(body) {
    if (body.prompt !== undefined) yield { text: body.prompt, param: "prompt" };
    for (const [i, m] of (body.messages ?? []).entries()) {
      if (m.role === "user") yield { text: m.content, param: `messages.${i}.content` };
    }
  },
  mapTexts: (body, map) => {
    if (body.prompt !== undefined) {
      const prompt = map(body.prompt, "prompt");
      return prompt === body.prompt ? body : { ...body, prompt };
    }
    let changed = false;
    const messages = (body.messages ?? []).map((m, i) => {
      const content = map(m.content, `messages.${i}.content`);
      if (content === m.content) return m;
      changed = true;
      return { ...m, content };
    });
    return changed ? { ...body, messages } : body;
  },
};

/** The body's schema checked, or the registered one its name names (SCHEMA_NOT_FOUND). */
async function requestSchema(
  db: D1Database,
  schema: string | Record<string, unknown>,
): Promise<CheckedSchema> {
  if (typeof schema !== "string") return checkSchema(schema, "schema");
  const row = await readSchema(db, schema);
  if (row === null) {
    throw new GatewayError("SCHEMA_NOT_FOUND", `no schema is registered as ${JSON.stringify(schema)}`, {
      param: "schema",
    });
  }
  return checkSchema(JSON.parse(row.schema), "schema");
}

/** Answer headers passed on from the last generation (model, rollout arm, rate limits). */
const DROPPED_HEADERS = new Set(["content-type", "content-length"]);

export const structuredRoutes = new Hono<AppEnv>().post(
  "/",
  auth({ role: "user" }),
  jsonBody(GenerateStructuredRequest),
  screenPrompt("generate", structuredParts),
  async (c) => {
    const body = c.get("body");
    const { requestId, receivedAt, timeoutMs, caller, subject, pools } = inferenceRequest(c, body.model);
    const checked = await requestSchema(c.env.DB, body.schema);
    const run = {
      dispatch: {
        requestId,
        model: body.model,
        timeoutMs,
        ...(body.prompt !== undefined ? { prompt: body.prompt } : { messages: body.messages }),
        params: generateParams(body),
        response: {
          api: "generate" as const,
          stream: body.stream,
          includeUsage: false,
          requestId,
          receivedAt,
        },
        subject,
        caller,
      },
      pools,
      checked,
      maxRetries: body.max_retries,
      feedback: body.prompt !== undefined ? ("prompt" as const) : ("messages" as const),
    };
    if (body.stream) return streamStructured(c, run);
    const result = await runStructured(c, run);
    const answer: GenerateStructuredResponse = {
      data: result.data,
      raw: result.raw,
      attempts: result.attempts,
      usage: { prompt_tokens: result.usage.promptTokens, completion_tokens: result.usage.completionTokens },
      model_name: result.model,
      request_id: requestId,
      latency_ms: Date.now() - receivedAt,
    };
    const headers = new Headers();
    for (const [name, value] of result.headers) if (!DROPPED_HEADERS.has(name)) headers.set(name, value);
    headers.set("Content-Type", "application/json");
    return new Response(JSON.stringify(answer), { status: 200, headers });
  },
);
