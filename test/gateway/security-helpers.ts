// Shared by the security-*.test.ts files: calling the Worker with vars of the test's choosing, and
// answering a generate frame from a scripted agent with chunks the test chooses.
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import worker from "../../gateway/index.ts";
import type { GenerateFrame } from "../../schema/protocol.ts";
import { BASE, bearer, type TestAgent, type TokenOptions } from "./helpers.ts";

/** The Worker with `vars` over the test bindings; waits for its waitUntil work before returning. */
export async function fetchWithVars(
  vars: Record<string, string | undefined>,
  path: string,
  init: RequestInit = {},
): Promise<Response> {
  const ctx = createExecutionContext();
  const response = await worker.fetch(new Request(`${BASE}${path}`, init), { ...env, ...vars } as Env, ctx);
  await waitOnExecutionContext(ctx);
  return response;
}

/** A JSON POST (or PUT) with a token, through fetchWithVars. */
export async function sendJson(
  path: string,
  body: unknown,
  {
    vars = {},
    token = {},
    method = "POST",
  }: { vars?: Record<string, string>; token?: TokenOptions; method?: string } = {},
): Promise<Response> {
  return fetchWithVars(vars, path, {
    method,
    headers: { "Content-Type": "application/json", ...(await bearer(token)) },
    body: JSON.stringify(body),
  });
}

/** Answers the next generate frame with `pieces` as chunks, then done. */
export async function answer(agent: TestAgent, pieces: readonly string[]): Promise<GenerateFrame> {
  const frame = await agent.next("generate");
  for (const piece of pieces) await agent.chunk(frame.id, piece);
  await agent.done(frame.id, { promptTokens: 4, completionTokens: Math.max(1, pieces.length) });
  return frame;
}

export const chatBody = (model: string, user: string, extra: Record<string, unknown> = {}) => ({
  model,
  messages: [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: user },
  ],
  ...extra,
});
