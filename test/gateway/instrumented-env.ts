// The real Worker called with instrumented bindings: the real D1 and the real AgentHub namespace,
// wrapped so a test can count the queries the Worker prepares and see every hub it reaches (with
// the options it is created with, and what it is asked). Nothing is faked: each call goes through.
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { SignJWT } from "jose";
import worker from "../../gateway/index.ts";
import type { GatewayFrame } from "../../schema/protocol.ts";
import { BASE, type Closed, helloFrame, sleep } from "./helpers.ts";

/** The Worker's fetch handler with these bindings (vars overridden, D1 or hubs wrapped). */
export async function fetchWith(bindings: object, path: string, init?: RequestInit): Promise<Response> {
  const ctx = createExecutionContext();
  const response = await worker.fetch(new Request(`${BASE}${path}`, init), bindings as Env, ctx);
  await waitOnExecutionContext(ctx);
  return response;
}

/** Calls a binding's methods on the binding itself (bindings keep private state). */
function forwarding<T extends object>(
  target: T,
  intercept: (name: string, call: () => unknown) => unknown,
): T {
  return new Proxy(target, {
    get(t, property) {
      const value = Reflect.get(t, property, t);
      if (typeof value !== "function" || typeof property !== "string") return value;
      return (...args: unknown[]) => intercept(property, () => value.apply(t, args));
    },
  });
}

/** env.DB, counting every statement the Worker prepares (and every batch or exec). */
export function countingD1(db: D1Database = env.DB) {
  const counter = { queries: 0 };
  const wrapped = forwarding(db, (name, call) => {
    if (name === "prepare" || name === "exec" || name === "batch") counter.queries += 1;
    return call();
  });
  return { db: wrapped, counter };
}

export interface HubCall {
  pool: string;
  /** The options getByName() was given (the location hint). */
  options: DurableObjectNamespaceGetDurableObjectOptions | undefined;
  /** "getByName", or the stub method called: "fetch", "snapshot", "disconnectAgent", ... */
  method: string;
  /** For "fetch": the request's URL path and headers. */
  path?: string;
  headers?: Headers;
}

/** env.AGENT_HUB, recording each hub the Worker reaches and what it asks it. */
export function recordingHubs(namespace: DurableObjectNamespace = env.AGENT_HUB) {
  const calls: HubCall[] = [];
  const wrapped = new Proxy(namespace, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (property !== "getByName" || typeof value !== "function") {
        return typeof value === "function" ? value.bind(target) : value;
      }
      return (pool: string, options?: DurableObjectNamespaceGetDurableObjectOptions) => {
        calls.push({ pool, options, method: "getByName" });
        const stub = target.getByName(pool, options);
        return new Proxy(stub, {
          get(s, method) {
            // A stub answers every property name with an RPC method; "then" must stay undefined so
            // the stub is never mistaken for a promise.
            if (typeof method !== "string" || method === "then") return undefined;
            return (...args: unknown[]) => {
              const call: HubCall = { pool, options, method };
              if (method === "fetch") {
                const request = new Request(args[0] as RequestInfo, args[1] as RequestInit | undefined);
                call.path = new URL(request.url).pathname;
                call.headers = request.headers;
              }
              calls.push(call);
              return (s as unknown as Record<string, (...a: unknown[]) => unknown>)[method]?.(...args);
            };
          },
        });
      };
    },
  });
  return { namespace: wrapped, calls };
}

/** An agent token like helpers.token(), with the `exp` it carries. */
export async function agentToken(
  sub: string,
  expiresInSeconds: number,
): Promise<{ token: string; exp: number }> {
  const now = Math.floor(Date.now() / 1000);
  const exp = now + expiresInSeconds;
  const token = await new SignJWT({ role: "agent" })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(sub)
    .setIssuedAt(now)
    .setExpirationTime(exp)
    .sign(new TextEncoder().encode(env.JWT_SECRET));
  return { token, exp };
}

/** An agent's socket upgraded through `fetchWith` (helpers.TestAgent always uses the default bindings). */
export interface RawAgent {
  id: string;
  ws: WebSocket;
  closed: Promise<Closed>;
}

/** Upgrades /agents/connect with these bindings and this token; throws if the gateway refused. */
export async function connectWith(bindings: object, id: string, token: string): Promise<RawAgent> {
  const response = await fetchWith(bindings, "/agents/connect", {
    headers: { Upgrade: "websocket", Authorization: `Bearer ${token}` },
  });
  const ws = response.webSocket;
  if (response.status !== 101 || ws === null) {
    throw new Error(`upgrade refused: ${response.status} ${await response.text()}`);
  }
  const closed = new Promise<Closed>((resolve) =>
    ws.addEventListener("close", (event) => resolve({ code: event.code, reason: event.reason })),
  );
  ws.accept();
  return { id, ws, closed };
}

/** Sends hello and resolves on the welcome frame. */
export function sayHello(agent: RawAgent): Promise<void> {
  const welcomed = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent ${agent.id}: no welcome`)), 3000);
    agent.ws.addEventListener("message", (event) => {
      if (typeof event.data === "string" && event.data.startsWith("{")) {
        const frame = JSON.parse(event.data) as GatewayFrame;
        if (frame.type === "welcome") {
          clearTimeout(timer);
          resolve();
        }
      }
    });
  });
  agent.ws.send(JSON.stringify(helloFrame(agent.id)));
  return welcomed;
}

export function closeQuietly(agent: RawAgent): void {
  try {
    agent.ws.close(1000, "test done");
  } catch {
    // already closed
  }
}

/** The close, or null if the socket is still open after `ms`. */
export function closedWithin(agent: { closed: Promise<Closed> }, ms: number): Promise<Closed | null> {
  return Promise.race([agent.closed, sleep(ms).then(() => null)]);
}
