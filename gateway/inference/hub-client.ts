// The Worker's side of the hub interface (schema/hub.ts): which pool's AgentHub serves a request,
// forwarding it there (and to the model's next pool when one cannot serve it), and reading every
// pool's snapshot. The hub answers a dispatch with either an error decided before anything was
// sent (turned into the public error here) or the caller's response itself, returned untouched.

import { DEFAULT_POOL, DispatchErrorBody, type DispatchRequest, type HubSnapshot } from "../../schema/hub.ts";
import { EXPERIMENT_HEADER, fnv1a32, VARIANT_HEADER } from "../../schema/rollouts.ts";
import { type PoolConfig, type Pools, poolsForModel, readConfig } from "../config.ts";
import { GatewayError } from "../errors.ts";
import type { AgentHub } from "../hub/agent-hub.ts";
import { describeError, log } from "../log.ts";
import { RATE_LIMIT_HEADERS } from "../ratelimit/headers.ts";

/** The pool's AgentHub, created (on first use) where POOLS says: near the pool's agents. */
export function poolHub(env: Env, pool: string = DEFAULT_POOL, pools?: Pools): DurableObjectStub<AgentHub> {
  const locationHint = (pools ?? readConfig(env).pools).byName.get(pool)?.locationHint;
  const namespace = env.AGENT_HUB as DurableObjectNamespace<AgentHub>;
  // LocationHint (config.ts) must stay assignable to the runtime's own list.
  const hint: DurableObjectLocationHint | undefined = locationHint;
  return hint === undefined ? namespace.getByName(pool) : namespace.getByName(pool, { locationHint: hint });
}

/**
 * The pools to try for a request, in order: the default pool without a model; else the pools
 * that serve the model, rotated by a hash of the request id so that requests spread over them.
 */
export function poolOrder(pools: Pools, model: string | undefined, requestId: string): readonly string[] {
  if (model === undefined) return [DEFAULT_POOL];
  const serving = poolsForModel(pools, model);
  if (serving.length < 2) return serving;
  const start = fnv1a32(requestId) % serving.length;
  return [...serving.slice(start), ...serving.slice(0, start)];
}

/** A pool's answers after which the next pool may serve the request: it has nothing to serve it with. */
const NEXT_POOL_CODES: ReadonlySet<string> = new Set(["MODEL_NOT_FOUND", "NO_AGENT_AVAILABLE"]);

/**
 * The caller's response: 200 with the body the hub renders (SSE or JSON), passed through without
 * being read. When the caller disconnects, the runtime cancels that body, and the hub the generation.
 * A pool that answers MODEL_NOT_FOUND or NO_AGENT_AVAILABLE has sent nothing yet, so the next pool
 * is tried; once a pool answered 200, its body is the answer, whatever happens to it.
 */
export async function dispatchToHub(
  env: Env,
  request: DispatchRequest,
  pools: readonly string[] = [DEFAULT_POOL],
): Promise<Response> {
  const body = JSON.stringify(request);
  const config = readConfig(env).pools;
  let unavailable: GatewayError | undefined;
  for (const [index, pool] of pools.entries()) {
    try {
      return await dispatchOnce(poolHub(env, pool, config), pool, body, request.requestId);
    } catch (err) {
      const last = index === pools.length - 1;
      if (!(err instanceof GatewayError) || !NEXT_POOL_CODES.has(err.code) || last) {
        // A model that some pool knows but cannot serve now is 503, not 404 (retrying may work).
        throw unavailable !== undefined && err instanceof GatewayError && err.code === "MODEL_NOT_FOUND"
          ? unavailable
          : err;
      }
      if (err.code === "NO_AGENT_AVAILABLE") unavailable ??= err;
      log("info", "pool cannot serve the request; trying the next", {
        requestId: request.requestId,
        pool,
        code: err.code,
        next: pools[index + 1],
      });
    }
  }
  throw new GatewayError("INTERNAL", "no pool to dispatch to");
}

async function dispatchOnce(
  hub: DurableObjectStub<AgentHub>,
  pool: string,
  body: string,
  requestId: string,
): Promise<Response> {
  let response: Response;
  try {
    response = await hub.fetch("https://hub/dispatch", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body,
    });
  } catch (err) {
    log("error", "hub unreachable", { requestId, pool, ...describeError(err) });
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
  // A request a rollout assigned says which arm failed it, as its answers do; a rate-limited or
  // admitted one, its limits (gateway/ratelimit/headers.ts).
  const headers: Record<string, string> = {};
  for (const name of [VARIANT_HEADER, EXPERIMENT_HEADER, ...RATE_LIMIT_HEADERS]) {
    const value = response.headers.get(name);
    if (value !== null) headers[name] = value;
  }
  return new GatewayError(parsed.data.code, parsed.data.message, {
    retryAfterSeconds: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined,
    headers,
  });
}

/** One configured pool and what its hub reported; snapshot null when the hub did not answer. */
export interface PoolObservation {
  pool: PoolConfig;
  snapshot: HubSnapshot | null;
}

export interface ObservePoolsOptions {
  pools?: Pools;
  /** A hub that has not answered by then is reported null (health probes must not hang). */
  timeoutMs?: number;
}

/** Every configured pool's snapshot, asked in parallel; a hub that fails is logged and reported null. */
export async function observePools(env: Env, options: ObservePoolsOptions = {}): Promise<PoolObservation[]> {
  const answers = await askPools(env, (hub) => hub.snapshot(), options);
  return answers.map(({ pool, answer }) => ({ pool, snapshot: answer }));
}

/**
 * Asks every configured pool's hub in parallel (an RPC such as scrape() or monitoring()); a hub
 * that fails or has not answered within `timeoutMs` is logged and its answer is null.
 */
export function askPools<T>(
  env: Env,
  ask: (hub: DurableObjectStub<AgentHub>) => Promise<T> | T,
  options: ObservePoolsOptions = {},
): Promise<{ pool: PoolConfig; answer: T | null }[]> {
  const pools = options.pools ?? readConfig(env).pools;
  return Promise.all(
    [...pools.byName.values()].map(async (pool) => {
      let timer: ReturnType<typeof setTimeout> | null = null;
      try {
        const answer = Promise.resolve(ask(poolHub(env, pool.name, pools)));
        const deadline =
          options.timeoutMs === undefined
            ? new Promise<never>(() => {})
            : new Promise<never>((_, reject) => {
                timer = setTimeout(
                  () => reject(new Error(`no answer within ${options.timeoutMs} ms`)),
                  options.timeoutMs,
                );
              });
        return { pool, answer: (await Promise.race([answer, deadline])) as T };
      } catch (err) {
        log("error", "pool hub did not answer", { pool: pool.name, ...describeError(err) });
        return { pool, answer: null };
      } finally {
        clearTimeout(timer);
      }
    }),
  );
}
