// The Worker's side of the hub interface (hub/dispatch.ts): forwards one inference request to its
// pool's AgentHub. The hub answers with either an error decided before anything was sent (turned
// into the public error here) or the caller's response itself, which the Worker returns untouched.

import { GatewayError } from "../errors.ts";
import type { AgentHub } from "../hub/agent-hub.ts";
import { DEFAULT_POOL, DispatchErrorBody, type DispatchRequest } from "../hub/dispatch.ts";
import { describeError, log } from "../log.ts";

export function poolHub(env: Env, pool: string = DEFAULT_POOL): DurableObjectStub<AgentHub> {
  return (env.AGENT_HUB as DurableObjectNamespace<AgentHub>).getByName(pool);
}

/**
 * The caller's response: 200 with the body the hub renders (SSE or JSON), passed through without
 * being read. When the caller disconnects, the runtime cancels that body, and the hub the generation.
 */
export async function dispatchToHub(
  env: Env,
  request: DispatchRequest,
  pool = DEFAULT_POOL,
): Promise<Response> {
  let response: Response;
  try {
    response = await poolHub(env, pool).fetch("https://hub/dispatch", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
    });
  } catch (err) {
    log("error", "hub unreachable", { requestId: request.requestId, pool, ...describeError(err) });
    throw new GatewayError("UPSTREAM_ERROR", "the agent pool is unavailable", { cause: err });
  }
  if (!response.ok || response.body === null) throw await hubFailure(response);
  // The same body, with headers the middleware may add to (a fetched Response's are immutable,
  // and working around that by catching the TypeError costs more than this copy).
  return new Response(response.body, response);
}

async function hubFailure(response: Response): Promise<GatewayError> {
  const parsed = DispatchErrorBody.safeParse(await response.json().catch(() => null));
  if (!parsed.success)
    return new GatewayError("UPSTREAM_ERROR", `the agent pool answered ${response.status}`);
  const retryAfter = Number(response.headers.get("Retry-After"));
  return new GatewayError(parsed.data.code, parsed.data.message, {
    retryAfterSeconds: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined,
  });
}
