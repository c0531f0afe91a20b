// The inference routes' dispatch with the rate limiter (docs/rate-limits.md). A request only the
// default pool can serve carries its ask to that pool's hub, the limiter's home, which admits it
// inside the dispatch: no round trip more than without limits. A request for another pool is
// admitted by an RPC to the home first, then dispatched with its reservation's id; the hub that
// serves it settles the reservation when it ends, and a refusal before that releases it here.
import type { Context } from "hono";
import { DEFAULT_POOL, type DispatchRequest } from "../../schema/hub.ts";
import { GatewayError } from "../errors.ts";
import { dispatchToHub, poolHub } from "../inference/hub-client.ts";
import { describeError, log } from "../log.ts";
import type { AppEnv } from "../types.ts";
import { rateLimitAsk } from "./ask.ts";
import type { AdmitAnswer } from "./hub-limits.ts";

export async function limitedDispatch<E extends AppEnv>(
  c: Context<E>,
  request: DispatchRequest,
  pools: readonly string[],
): Promise<Response> {
  const ask = rateLimitAsk(c, request, pools);
  if (ask === null) return dispatchToHub(c.env, request, pools);
  if (pools.length === 1 && pools[0] === DEFAULT_POOL) {
    return dispatchToHub(c.env, { ...request, reservation: ask }, pools);
  }
  const home = poolHub(c.env, DEFAULT_POOL);
  let answer: AdmitAnswer;
  try {
    answer = (await home.rateLimit({ op: "admit", ask })) as AdmitAnswer;
  } catch (err) {
    // Fails open: the default pool's hub being away must not stop every other pool serving.
    log("error", "rate limiter unreachable; serving the request without limits", {
      requestId: request.requestId,
      ...describeError(err),
    });
    return dispatchToHub(c.env, request, pools);
  }
  if (!answer.admitted) {
    throw new GatewayError("RATE_LIMITED", answer.message, {
      retryAfterSeconds: answer.retryAfterSeconds,
      headers: answer.headers,
    });
  }
  try {
    const response = await dispatchToHub(
      c.env,
      { ...request, reservation: { ...ask, id: answer.id } },
      pools,
    );
    for (const [name, value] of Object.entries(answer.headers)) response.headers.set(name, value);
    return response;
  } catch (err) {
    // Refused before anything streamed. If a hub's job already settled it, this is a no-op there.
    const release = home
      .rateLimit({ op: "settle", subject: ask.subject, id: answer.id, tokens: null })
      .catch((e: unknown) =>
        log("error", "rate limit release did not reach the default pool's hub", {
          requestId: request.requestId,
          ...describeError(e),
        }),
      );
    try {
      c.executionCtx.waitUntil(release);
    } catch {
      // No execution context (a test calling the app directly): the promise runs all the same.
    }
    if (err instanceof GatewayError) Object.assign(err.headers, answer.headers);
    throw err;
  }
}
