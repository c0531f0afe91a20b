// Helpers for the end-to-end tests of deployments and A/B tests: the HTTP calls they repeat, a
// traffic driver sending requests as many distinct end users (X-Orchard-User) while a controller
// works, and a poll of GET /deployments/{id} until it reaches a status.
import { expect } from "vitest";
import { readSse, type Stack } from "../helpers/stack.ts";

export const PROMPT = "Once upon a time";

export type Api = (path: string, init?: RequestInit & { token?: string }) => Promise<Response>;

export function apiOf(stack: Stack, defaultToken: () => string): Api {
  return (path, init = {}) => {
    const { token = defaultToken(), headers, ...rest } = init;
    return fetch(`${stack.origin}${path}`, {
      ...rest,
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", ...(headers ?? {}) },
    });
  };
}

export async function json<T = Record<string, unknown>>(res: Response, status: number): Promise<T> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  return JSON.parse(text) as T;
}

/** One answer as a caller saw it. */
export interface Answer {
  user: string;
  status: number;
  /** X-Orchard-Model: the name:version that answered. */
  model: string;
  variant: string | null;
  experiment: string | null;
  requestId: string | null;
  /** null when the request succeeded (and, streaming, ended without an error event). */
  error: string | null;
  text: string;
  startedAt: number;
  endedAt: number;
}

/** One /generate for `name` as end user `user`; streaming reads the whole SSE stream. */
export async function generate(
  api: Api,
  token: string,
  name: string,
  user: string,
  { stream = false, maxTokens = 4 }: { stream?: boolean; maxTokens?: number } = {},
): Promise<Answer> {
  const startedAt = Date.now();
  const res = await api("/generate", {
    method: "POST",
    token,
    headers: { "X-Orchard-User": user },
    body: JSON.stringify({ model: name, prompt: PROMPT, max_tokens: maxTokens, temperature: 0, stream }),
  });
  const head = {
    user,
    status: res.status,
    model: res.headers.get("x-orchard-model") ?? "",
    variant: res.headers.get("x-orchard-variant"),
    experiment: res.headers.get("x-orchard-experiment"),
    requestId: res.headers.get("x-request-id"),
    startedAt,
  };
  if (res.status !== 200) {
    return { ...head, error: `${res.status} ${await res.text()}`, text: "", endedAt: Date.now() };
  }
  if (!stream) {
    const body = (await res.json()) as { text?: string };
    return { ...head, error: null, text: body.text ?? "", endedAt: Date.now() };
  }
  const events = await readSse(res);
  const failed = events.find((e) => e.event === "error");
  const text = events
    .filter((e) => e.event === "chunk")
    .map((e) => (JSON.parse(e.data) as { text: string }).text)
    .join("");
  const done = events.some((e) => e.event === "done");
  const error = failed ? failed.data : done ? null : "stream ended without a done event";
  return { ...head, error, text, endedAt: Date.now() };
}

const FAILED = { status: 0, model: "", variant: null, experiment: null, requestId: null, text: "" };

/**
 * Sends requests for `name` from `concurrency` callers until stopped, each request as a new end
 * user (`<prefix>-<n>`, so a share of users is a share of requests).
 */
export function driveTraffic(
  api: Api,
  token: string,
  name: string,
  {
    concurrency = 8,
    prefix = "user",
    stream = false,
    maxTokens = 4,
  }: { concurrency?: number; prefix?: string; stream?: boolean; maxTokens?: number } = {},
): { results: Answer[]; stop(): Promise<Answer[]> } {
  const results: Answer[] = [];
  let next = 0;
  let stopped = false;
  const callers = Array.from({ length: concurrency }, async () => {
    while (!stopped) {
      const n = next++;
      results.push(
        await generate(api, token, name, `${prefix}-${n}`, { stream, maxTokens }).catch((err: unknown) => ({
          ...FAILED,
          user: `${prefix}-${n}`,
          error: `fetch failed: ${String(err)}`,
          startedAt: Date.now(),
          endedAt: Date.now(),
        })),
      );
    }
  });
  const driver = {
    results,
    async stop() {
      stopped = true;
      await Promise.all(callers);
      running.delete(driver);
      return results;
    },
  };
  running.add(driver);
  return driver;
}

const running = new Set<{ stop(): Promise<Answer[]> }>();

/** Stops every driver still sending (a test that failed before stopping its own); for afterEach. */
export async function stopAllTraffic(): Promise<void> {
  await Promise.all([...running].map((d) => d.stop()));
}

export interface DeploymentView {
  deployment_id: string;
  status: string;
  running: boolean;
  traffic_share: number;
  baseline: string | null;
  candidate: string;
  state: {
    steps?: Array<{
      index: number;
      share: number;
      verdict: string | null;
      requests?: { a: number; b: number };
      lastJudgement?: { verdict: string; requests: { a: number; b: number }; summary: Judgement };
    }>;
    reason?: string;
  };
  result: Record<string, unknown> | null;
  events: Array<{ at: string; actor: string; kind: string; detail: Record<string, unknown> }>;
}

export interface Judgement {
  verdict: string;
  reason: string;
  metrics: Array<{
    metric: string;
    critical: boolean;
    verdict: string;
    reason: string;
    estimate: number | null;
    interval: [number, number] | null;
    p_value: number | null;
    baseline: { n: number; value: number | null };
    canary: { n: number; value: number | null };
  }>;
}

/** Polls GET /deployments/{id} until its status is one of `statuses`. */
export async function waitForDeployment(
  api: Api,
  id: string,
  statuses: string[],
  timeoutMs = 90_000,
): Promise<DeploymentView> {
  const deadline = Date.now() + timeoutMs;
  let last: DeploymentView | undefined;
  while (Date.now() < deadline) {
    last = await json<DeploymentView>(await api(`/deployments/${id}`), 200);
    if (statuses.includes(last.status)) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(
    `deployment ${id} never reached ${statuses.join("|")}; last: ${JSON.stringify(last).slice(0, 4000)}`,
  );
}

/** Polls until `check` returns a value (not undefined). */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await check();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Counts of answers by X-Orchard-Model. */
export function byModel(answers: Answer[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const a of answers)
    counts[a.model || `status ${a.status}`] = (counts[a.model || `status ${a.status}`] ?? 0) + 1;
  return counts;
}

/** `fn` over `items`, at most `limit` at a time, results in order. */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i] as T);
      }
    }),
  );
  return out;
}
