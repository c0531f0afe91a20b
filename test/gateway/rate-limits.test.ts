// Rate limits end to end in workerd: caller -> Worker -> the default pool's hub (the limiter's home)
// -> scripted agent. Each limit is exact under 50 concurrent callers, streamed requests settle with
// their real usage when the stream ends (a cancelled one releases), answers and 429s carry the
// RateLimit fields, and the admin routes set, show and remove overrides. Every test uses its own
// subject (token sub), so no test sees another's buckets.
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { app } from "../../gateway/index.ts";
import { parseRateLimits } from "../../gateway/ratelimit/config.ts";
import type { GenerateFrame } from "../../schema/protocol.ts";
import { RateLimitStatus } from "../../schema/rate-limits-api.ts";
import {
  BASE,
  bearer,
  gatewayFetch,
  SseReader,
  type TestAgent,
  token,
  trackedAgents,
  uniqueId,
  waitFor,
} from "./helpers.ts";

const agents = trackedAgents();
const admin = () => bearer({ sub: "rate-limit-admin", role: "admin" });
/** Limits high enough not to matter, so a test limits exactly one thing. */
const HIGH = { rpm: 100_000, tpm: 100_000_000, concurrency: 10_000 };

async function setLimits(subject: string, limits: Record<string, number | null>): Promise<Response> {
  return gatewayFetch(`/rate-limits/${encodeURIComponent(subject)}`, {
    method: "PUT",
    headers: { "Content-Type": "application/json", ...(await admin()) },
    body: JSON.stringify(limits),
  });
}

async function limitsOf(subject: string, query = ""): Promise<RateLimitStatus> {
  const response = await gatewayFetch(`/rate-limits/${encodeURIComponent(subject)}${query}`, {
    headers: await admin(),
  });
  expect(response.status).toBe(200);
  return RateLimitStatus.parse(await response.json());
}

interface Caller {
  sub: string;
  role?: "user" | "admin";
  claims?: Record<string, unknown>;
}

async function callerToken({ sub, role = "user", claims }: Caller): Promise<string> {
  if (claims === undefined) return token({ sub, role });
  const { SignJWT } = await import("jose");
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ role, ...claims })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(sub)
    .setIssuedAt(now)
    .setExpirationTime(now + 300)
    .sign(new TextEncoder().encode(env.JWT_SECRET));
}

function generate(
  caller: Caller,
  body: Record<string, unknown>,
  fetcher: (request: Request) => Promise<Response> = (r) => gatewayFetch(r.url.slice(BASE.length), r),
): Promise<Response> {
  return callerToken(caller).then((jwt) =>
    fetcher(
      new Request(`${BASE}/generate`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${jwt}` },
        body: JSON.stringify(body),
      }),
    ),
  );
}

/** Answers every generate frame at once with `done` (no chunk: the order of two frames is not kept here). */
function answerAll(agent: TestAgent, usage = { promptTokens: 1, completionTokens: 2 }) {
  let running = true;
  const answered: GenerateFrame[] = [];
  const loop = (async () => {
    while (running) {
      const frame = await agent.next("generate", 200).catch(() => null);
      if (frame === null) continue;
      answered.push(frame);
      agent.send({
        type: "done",
        id: frame.id,
        finishReason: "stop",
        usage,
        timings: { firstTokenMs: 1, totalMs: 1 },
      });
    }
  })();
  return {
    answered,
    stop: async () => {
      running = false;
      await loop;
    },
  };
}

/** Every generate frame the agent has been sent within `ms` (none answered). */
async function framesWithin(agent: TestAgent, count: number): Promise<GenerateFrame[]> {
  const frames: GenerateFrame[] = [];
  for (;;) {
    const frame = await agent.next("generate", frames.length < count ? 3000 : 300).catch(() => null);
    if (frame === null) return frames;
    frames.push(frame);
  }
}

function statuses(responses: Response[]): Record<number, number> {
  const counts: Record<number, number> = {};
  for (const r of responses) counts[r.status] = (counts[r.status] ?? 0) + 1;
  return counts;
}

/** RateLimit's `r` for a policy. */
function remaining(header: string | null, policy: string): number {
  const match = header?.match(new RegExp(`"${policy}";r=(\\d+)`));
  if (!match) throw new Error(`no ${policy} in ${header}`);
  return Number(match[1]);
}

const drain = (responses: Response[]) =>
  Promise.all(responses.map((r) => (r.bodyUsed ? null : r.arrayBuffer())));

describe("rate limits, exact under 50 concurrent callers", () => {
  it("requests per minute: exactly rpm of 50 are served, the rest are 429 RATE_LIMITED", async () => {
    const model = uniqueId("rl-rpm");
    const sub = uniqueId("rpm-caller");
    expect((await setLimits(sub, { ...HIGH, rpm: 10 })).status).toBe(200);
    const agent = await agents.serving(model, 64);
    const answering = answerAll(agent);
    const responses = await Promise.all(
      Array.from({ length: 50 }, () => generate({ sub }, { model, prompt: "hi", max_tokens: 4 })),
    );
    await answering.stop();
    expect(statuses(responses)).toEqual({ 200: 10, 429: 40 });
    expect(answering.answered).toHaveLength(10);
    const refused = responses.find((r) => r.status === 429) as Response;
    expect(await refused.json()).toMatchObject({ error: { code: "RATE_LIMITED" } });
    // One request drains every 6 s at 10 per minute.
    const retryAfter = Number(refused.headers.get("Retry-After"));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(6);
    expect(remaining(refused.headers.get("RateLimit"), "rpm")).toBe(0);
    await drain(responses);
    const after = await limitsOf(sub);
    expect(after.usage.concurrency).toBe(0);
    expect(after.usage.rpm).toBe(10);
  });

  it("tokens per minute: prompt + max_tokens reserved at admission, the real usage settled at the end", async () => {
    const model = uniqueId("rl-tpm");
    const sub = uniqueId("tpm-caller");
    // Each request reserves ceil(4 / 4) + 99 = 100 tokens: 10 fit in 1,000.
    await setLimits(sub, { ...HIGH, tpm: 1_000 });
    const agent = await agents.serving(model, 64);
    const startedAt = Date.now();
    const pending = Array.from({ length: 50 }, () =>
      generate({ sub }, { model, prompt: "abcd", max_tokens: 99 }),
    );
    // Nothing is answered until every admission is decided: all 50 compete for the same budget.
    const frames = await framesWithin(agent, 10);
    expect(frames).toHaveLength(10);
    const refused = await waitFor(async () => {
      const settled = await Promise.all(pending.map((p) => Promise.race([p, null])));
      const done = settled.filter((r): r is Response => r !== null);
      return done.length === 40 ? done : null;
    });
    expect(statuses(refused)).toEqual({ 429: 40 });
    expect((await limitsOf(sub)).usage).toMatchObject({ concurrency: 10 });
    for (const frame of frames) {
      agent.send({
        type: "done",
        id: frame.id,
        finishReason: "stop",
        usage: { promptTokens: 1, completionTokens: 5 },
        timings: { firstTokenMs: 1, totalMs: 1 },
      });
    }
    const responses = await Promise.all(pending);
    expect(statuses(responses)).toEqual({ 200: 10, 429: 40 });
    await drain(responses);
    // Settled with 6 tokens each: 60 of the 1,000 are used, less what drained meanwhile (1,000 a minute).
    const after = await waitFor(async () => {
      const status = await limitsOf(sub);
      return status.usage.concurrency === 0 ? status : null;
    });
    const drained = Math.ceil(((Date.now() - startedAt) * 1_000) / 60_000);
    expect(after.usage.tpm).toBeLessThanOrEqual(60);
    expect(after.usage.tpm).toBeGreaterThanOrEqual(60 - drained);
    expect(after.remaining.tpm).toBeGreaterThanOrEqual(940);
  });

  it("concurrent requests: exactly `concurrency` run at once; a finished one frees its slot", async () => {
    const model = uniqueId("rl-conc");
    const sub = uniqueId("conc-caller");
    await setLimits(sub, { ...HIGH, concurrency: 5 });
    const agent = await agents.serving(model, 64);
    const pending = Array.from({ length: 50 }, () =>
      generate({ sub }, { model, prompt: "hi", max_tokens: 4 }),
    );
    const frames = await framesWithin(agent, 5);
    expect(frames).toHaveLength(5);
    const refused = await waitFor(async () => {
      const settled = await Promise.all(pending.map((p) => Promise.race([p, null])));
      const done = settled.filter((r): r is Response => r !== null);
      return done.length === 45 ? done : null;
    });
    expect(statuses(refused)).toEqual({ 429: 45 });
    expect(refused[0]?.headers.get("Retry-After")).toBe("1");
    expect(remaining(refused[0]?.headers.get("RateLimit") ?? null, "concurrency")).toBe(0);
    for (const frame of frames) {
      agent.send({
        type: "done",
        id: frame.id,
        finishReason: "stop",
        usage: { promptTokens: 1, completionTokens: 1 },
        timings: { firstTokenMs: 1, totalMs: 1 },
      });
    }
    const responses = await Promise.all(pending);
    expect(statuses(responses)).toEqual({ 200: 5, 429: 45 });
    await drain(responses);
    await waitFor(async () => (await limitsOf(sub)).usage.concurrency === 0);
    const answering = answerAll(agent);
    const next = await generate({ sub }, { model, prompt: "hi", max_tokens: 4 });
    await answering.stop();
    expect(next.status).toBe(200);
    expect(remaining(next.headers.get("RateLimit"), "concurrency")).toBe(4);
  });

  it("is exact across pools: a request for another pool is admitted by the home first, and settled from there", async () => {
    // shared-model: POOLS lists lab-a and default. Its agent is in default, so a request that tries
    // lab-a first fails over to default with the same reservation.
    const sub = uniqueId("pools-caller");
    await setLimits(sub, { ...HIGH, rpm: 7 });
    const agent = await agents.serving("shared-model", 64);
    const answering = answerAll(agent);
    const responses = await Promise.all(
      Array.from({ length: 50 }, () =>
        generate({ sub }, { model: "shared-model", prompt: "hi", max_tokens: 4 }),
      ),
    );
    await answering.stop();
    expect(statuses(responses)).toEqual({ 200: 7, 429: 43 });
    const ok = responses.find((r) => r.status === 200) as Response;
    expect(ok.headers.get("RateLimit-Policy")).toContain('"rpm";q=7;w=60');
    await drain(responses);
    await waitFor(async () => (await limitsOf(sub)).usage.concurrency === 0, 3000, "every settlement");
    // A lab pool with no agent refuses before dispatch: the Worker releases the reservation.
    const refusedByPool = await generate(
      { sub: uniqueId("lab-caller") },
      { model: "lab-a-model", prompt: "x" },
    );
    expect([404, 503]).toContain(refusedByPool.status);
  });
});

describe("streaming", () => {
  it("a stream's reservation settles when it ends, with the usage the agent reported", async () => {
    const model = uniqueId("rl-stream");
    const sub = uniqueId("stream-caller");
    // 101 tokens reserved per request (1 prompt + 100 max_tokens); two do not fit in 150.
    await setLimits(sub, { ...HIGH, tpm: 150 });
    const agent = await agents.serving(model, 4);
    const first = generate({ sub }, { model, prompt: "abcd", max_tokens: 100, stream: true });
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, "hello", 3);
    const stream = await first;
    expect(stream.status).toBe(200);
    expect(stream.headers.get("RateLimit")).toContain('"tpm";r=49;');
    const reader = new SseReader(stream.body as ReadableStream<Uint8Array>);
    expect((await reader.next())?.event).toBe("chunk");
    // While it streams, its reservation holds the tokens.
    const second = await generate({ sub }, { model, prompt: "abcd", max_tokens: 100 });
    expect(second.status).toBe(429);
    expect(await second.json()).toMatchObject({ error: { code: "RATE_LIMITED" } });
    await agent.done(frame.id, { promptTokens: 1, completionTokens: 5 });
    expect((await reader.next())?.event).toBe("done");
    expect(await reader.next()).toBeNull();
    const after = await limitsOf(sub);
    expect(after.usage.concurrency).toBe(0);
    expect(after.usage.tpm).toBeGreaterThanOrEqual(5);
    expect(after.usage.tpm).toBeLessThanOrEqual(6);
    // 6 used: 101 more fit now.
    const answering = answerAll(agent);
    const third = await generate({ sub }, { model, prompt: "abcd", max_tokens: 100 });
    await answering.stop();
    expect(third.status).toBe(200);
  });

  it("a cancelled stream releases its slot and is charged what it streamed", async () => {
    const model = uniqueId("rl-cancel");
    const sub = uniqueId("cancel-caller");
    // 101 tokens reserved; charged 101, a second would not fit in 110 for the next 50 s.
    await setLimits(sub, { ...HIGH, tpm: 110, concurrency: 1 });
    const agent = await agents.serving(model, 4);
    const pending = generate({ sub }, { model, prompt: "abcd", max_tokens: 100, stream: true });
    const frame = await agent.next("generate");
    await agent.chunk(frame.id, "partial", 3);
    const stream = await pending;
    const reader = new SseReader(stream.body as ReadableStream<Uint8Array>);
    expect((await reader.next())?.event).toBe("chunk");
    const busy = await generate({ sub }, { model, prompt: "x", max_tokens: 4 });
    expect(busy.status).toBe(429);
    await busy.arrayBuffer();
    await reader.cancel();
    expect((await agent.next("cancel")).id).toBe(frame.id);
    const after = await waitFor(async () => {
      const status = await limitsOf(sub);
      return status.usage.concurrency === 0 ? status : null;
    });
    // Charged the prompt (1) and the 3 tokens streamed, not the 101 reserved: another 101 fit.
    expect(after.usage.tpm).toBeLessThanOrEqual(4);
    const answering = answerAll(agent);
    const next = await generate({ sub }, { model, prompt: "abcd", max_tokens: 100 });
    await answering.stop();
    expect(next.status).toBe(200);
    await next.arrayBuffer();
  });
});

describe("the RateLimit fields and the 429", () => {
  it("answers carry RateLimit-Policy and RateLimit; the 429 adds Retry-After", async () => {
    const model = uniqueId("rl-headers");
    const sub = uniqueId("headers-caller");
    await setLimits(sub, { rpm: 2, tpm: 10_000, concurrency: 3 });
    const agent = await agents.serving(model, 4);
    const answering = answerAll(agent);
    const ok1 = await generate({ sub }, { model, prompt: "abcdefgh", max_tokens: 10 });
    const ok2 = await generate({ sub }, { model, prompt: "abcdefgh", max_tokens: 10 });
    const refused = await generate({ sub }, { model, prompt: "abcdefgh", max_tokens: 10 });
    await answering.stop();
    expect([ok1.status, ok2.status, refused.status]).toEqual([200, 200, 429]);
    const policy = `"rpm";q=2;w=60, "tpm";q=10000;w=60;orchard-unit="tokens", "concurrency";q=3;qu="concurrent-requests"`;
    for (const r of [ok1, ok2, refused]) expect(r.headers.get("RateLimit-Policy")).toBe(policy);
    // 12 tokens reserved each (2 + 10), settled at 3 (the agent's usage).
    expect(ok1.headers.get("RateLimit")).toBe(`"rpm";r=1;t=30, "tpm";r=9988;t=1, "concurrency";r=2`);
    expect(remaining(ok2.headers.get("RateLimit"), "rpm")).toBe(0);
    expect(remaining(refused.headers.get("RateLimit"), "rpm")).toBe(0);
    // Two requests at 2 per minute: one drains in 30 s.
    const retryAfter = Number(refused.headers.get("Retry-After"));
    expect(retryAfter).toBeGreaterThanOrEqual(29);
    expect(retryAfter).toBeLessThanOrEqual(30);
    expect(refused.headers.get("X-Error-Code")).toBe("RATE_LIMITED");
    expect(await refused.json()).toEqual({
      error: {
        code: "RATE_LIMITED",
        message: "rate limit exceeded: requests per minute (limit 2)",
        requestId: expect.any(String),
      },
    });
    await drain([ok1, ok2]);
  });

  it("on /v1 the 429 has OpenAI's error shape and the same headers", async () => {
    const model = uniqueId("rl-openai");
    const sub = uniqueId("openai-caller");
    await setLimits(sub, { ...HIGH, rpm: 1 });
    const agent = await agents.serving(model, 4);
    const answering = answerAll(agent);
    const chat = async () =>
      gatewayFetch("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json", ...(await bearer({ sub })) },
        body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }], max_tokens: 8 }),
      });
    const ok = await chat();
    const refused = await chat();
    await answering.stop();
    expect(ok.status).toBe(200);
    expect(ok.headers.get("RateLimit")).toContain('"rpm";r=0;');
    await ok.arrayBuffer();
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("Retry-After"))).toBeGreaterThanOrEqual(59);
    expect(refused.headers.get("RateLimit-Policy")).toContain('"rpm";q=1;w=60');
    expect(await refused.json()).toEqual({
      error: {
        message: "rate limit exceeded: requests per minute (limit 1)",
        type: "rate_limit_error",
        param: null,
        code: "RATE_LIMITED",
      },
    });
  });

  it("a request too large for the whole token budget says so", async () => {
    const sub = uniqueId("large-caller");
    await setLimits(sub, { ...HIGH, tpm: 100 });
    const response = await generate({ sub }, { model: uniqueId("rl-large"), prompt: "x", max_tokens: 200 });
    expect(response.status).toBe(429);
    expect(((await response.json()) as { error: { message: string } }).error.message).toContain(
      "lower max_tokens",
    );
  });

  it("a request refused before dispatch (no agent for the model) releases its reservation", async () => {
    const sub = uniqueId("nobody-caller");
    const response = await generate(
      { sub },
      { model: uniqueId("nobody-serves"), prompt: "x", max_tokens: 4 },
    );
    expect(response.status).toBe(404);
    expect(response.headers.get("RateLimit-Policy")).not.toBeNull();
    expect((await limitsOf(sub)).usage).toEqual({ rpm: 0, tpm: 0, concurrency: 0 });
  });

  it("counts refusals in ml_inference_rate_limited_total", async () => {
    const sub = uniqueId("metric-caller");
    await setLimits(sub, { ...HIGH, tpm: 10 });
    const read = async () => {
      const text = await (await gatewayFetch("/metrics", { headers: await admin() })).text();
      const line = text
        .split("\n")
        .find(
          (l) =>
            l.startsWith("ml_inference_rate_limited_total{") &&
            l.includes('reason="tpm"') &&
            l.includes('route="generate"'),
        );
      return line === undefined ? 0 : Number(line.split(" ").at(-1));
    };
    const before = await read();
    const response = await generate({ sub }, { model: uniqueId("rl-metric"), prompt: "x", max_tokens: 50 });
    expect(response.status).toBe(429);
    expect(await read()).toBe(before + 1);
    const text = await (await gatewayFetch("/metrics", { headers: await admin() })).text();
    expect(text).toContain("# TYPE ml_inference_rate_limited_total counter");
    expect(text).toMatch(
      /ml_inference_rate_limited_total\{pool="default",route="generate",reason="tpm"\} \d+/,
    );
  });
});

describe("where limits come from", () => {
  it("per role: RATE_LIMITS' user and admin defaults", async () => {
    const model = uniqueId("rl-roles");
    const agent = await agents.serving(model, 8);
    const answering = answerAll(agent);
    const configured = JSON.stringify({ user: { rpm: 1 }, admin: { rpm: 2, concurrency: 3 } });
    const fetcher = withEnv({ RATE_LIMITS: configured });
    const user = uniqueId("role-user");
    const adminSub = uniqueId("role-admin");
    const u = [
      await generate({ sub: user }, { model, prompt: "x" }, fetcher),
      await generate({ sub: user }, { model, prompt: "x" }, fetcher),
    ];
    const a = await Promise.all(
      [1, 2, 3].map(() => generate({ sub: adminSub, role: "admin" }, { model, prompt: "x" }, fetcher)),
    );
    await answering.stop();
    expect(u.map((r) => r.status)).toEqual([200, 429]);
    expect(u[0]?.headers.get("RateLimit-Policy")).toContain('"rpm";q=1;w=60, "tpm";q=200000;w=60');
    expect(statuses(a)).toEqual({ 200: 2, 429: 1 });
    expect(a[0]?.headers.get("RateLimit-Policy")).toContain('"concurrency";q=3;');
    await drain([...u, ...a]);
    // GET shows the defaults of the role the subject used last (the Worker's RATE_LIMITS).
    const status = RateLimitStatus.parse(
      await (
        await fetcher(new Request(`${BASE}/rate-limits/${adminSub}`, { headers: await admin() }))
      ).json(),
    );
    expect(status).toMatchObject({
      role: "admin",
      limits: { rpm: { limit: 2, source: "role" }, concurrency: { limit: 3, source: "role" } },
    });
  });

  it("per model: a model's own limits on top of the subject's, named in the policy", async () => {
    const model = uniqueId("rl-big");
    const agent = await agents.serving(model, 8);
    const answering = answerAll(agent);
    const fetcher = withEnv({ RATE_LIMITS: JSON.stringify({ user: { models: { [model]: { rpm: 2 } } } }) });
    const sub = uniqueId("model-caller");
    const responses: Response[] = [];
    for (let i = 0; i < 3; i++) responses.push(await generate({ sub }, { model, prompt: "x" }, fetcher));
    await answering.stop();
    expect(responses.map((r) => r.status)).toEqual([200, 200, 429]);
    expect(responses[0]?.headers.get("RateLimit-Policy")).toContain(`"rpm:${model}";q=2;w=60`);
    expect(remaining(responses[1]?.headers.get("RateLimit") ?? null, `rpm:${model}`)).toBe(0);
    expect(remaining(responses[1]?.headers.get("RateLimit") ?? null, "rpm")).toBe(598);
    await drain(responses);
  });

  it("a malformed RATE_LIMITS is logged and the built-in defaults apply", async () => {
    const errors = vi.spyOn(console, "error");
    const model = uniqueId("rl-malformed");
    const agent = await agents.serving(model, 2);
    const answering = answerAll(agent);
    const response = await generate(
      { sub: uniqueId("malformed") },
      { model, prompt: "x" },
      withEnv({ RATE_LIMITS: '{"user": {"rpm": "lots"}}' }),
    );
    await answering.stop();
    expect(response.status).toBe(200);
    expect(response.headers.get("RateLimit-Policy")).toBe(
      `"rpm";q=600;w=60, "tpm";q=200000;w=60;orchard-unit="tokens", "concurrency";q=16;qu="concurrent-requests"`,
    );
    expect(errors.mock.calls.some(([line]) => String(line).includes("RATE_LIMITS is neither"))).toBe(true);
    errors.mockRestore();
    await response.arrayBuffer();
  });

  it('RATE_LIMITS "off": nothing is limited or counted, and answers carry no RateLimit fields', async () => {
    const model = uniqueId("rl-off");
    const sub = uniqueId("off-caller");
    await setLimits(sub, { rpm: 1, concurrency: 1 });
    const agent = await agents.serving(model, 8);
    const answering = answerAll(agent);
    const fetcher = withEnv({ RATE_LIMITS: "off" });
    const responses = await Promise.all(
      Array.from({ length: 5 }, () => generate({ sub }, { model, prompt: "x" }, fetcher)),
    );
    await answering.stop();
    expect(statuses(responses)).toEqual({ 200: 5 });
    for (const r of responses) {
      expect(r.headers.get("RateLimit")).toBeNull();
      expect(r.headers.get("RateLimit-Policy")).toBeNull();
    }
    await drain(responses);
    const status = RateLimitStatus.parse(
      await (await fetcher(new Request(`${BASE}/rate-limits/${sub}`, { headers: await admin() }))).json(),
    );
    expect(status).toMatchObject({
      enforced: false,
      usage: { rpm: 0, concurrency: 0 },
      overrides: { rpm: 1 },
    });
  });

  it("a token's rate_limits claim sets limits; an admin's override wins over it", async () => {
    const model = uniqueId("rl-claim");
    const agent = await agents.serving(model, 8);
    const answering = answerAll(agent);
    const sub = uniqueId("claim-caller");
    const caller = { sub, claims: { rate_limits: { rpm: 2 } } };
    const first = [
      await generate(caller, { model, prompt: "x" }),
      await generate(caller, { model, prompt: "x" }),
    ];
    const third = await generate(caller, { model, prompt: "x" });
    expect([...first, third].map((r) => r.status)).toEqual([200, 200, 429]);
    const shown = await limitsOf(sub);
    expect(shown.limits.rpm).toEqual({ limit: 2, source: "token" });
    expect(shown.tokenClaim).toEqual({ rpm: 2 });
    await setLimits(sub, { rpm: 3 });
    const fourth = await generate(caller, { model, prompt: "x" });
    await answering.stop();
    expect(fourth.status).toBe(200);
    expect((await limitsOf(sub)).limits.rpm).toEqual({ limit: 3, source: "override" });
    await drain([...first, third, fourth]);
  });
});

describe("/rate-limits/{subject} (admin)", () => {
  it("401 without a token, 403 for a user", async () => {
    expect((await gatewayFetch("/rate-limits/someone")).status).toBe(401);
    const user = await bearer({ sub: "someone" });
    expect((await gatewayFetch("/rate-limits/someone", { headers: user })).status).toBe(403);
    const put = await gatewayFetch("/rate-limits/someone", {
      method: "PUT",
      headers: { "Content-Type": "application/json", ...user },
      body: JSON.stringify({ rpm: 1_000_000 }),
    });
    expect(put.status).toBe(403);
    expect(await put.json()).toMatchObject({ error: { code: "FORBIDDEN" } });
    expect((await gatewayFetch("/rate-limits/someone", { method: "DELETE", headers: user })).status).toBe(
      403,
    );
  });

  it("400 INVALID_REQUEST for bodies, subjects and roles out of bounds", async () => {
    const sub = uniqueId("invalid");
    for (const body of [
      {},
      { rpm: 0 },
      { rpm: -1 },
      { rpm: 1.5 },
      { rpm: "10" },
      { rpm: 1e13 },
      { rmp: 10 },
    ]) {
      const response = await setLimits(sub, body as Record<string, number>);
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(await response.json()).toMatchObject({ error: { code: "INVALID_REQUEST" } });
    }
    const malformed = await gatewayFetch(`/rate-limits/${sub}`, {
      method: "PUT",
      headers: { "Content-Type": "application/json", ...(await admin()) },
      body: "{",
    });
    expect(malformed.status).toBe(400);
    expect(await malformed.json()).toMatchObject({ error: { code: "INVALID_JSON" } });
    const long = await gatewayFetch(`/rate-limits/${"s".repeat(129)}`, { headers: await admin() });
    expect(long.status).toBe(400);
    expect(await long.json()).toMatchObject({ error: { code: "INVALID_REQUEST" } });
    const role = await gatewayFetch(`/rate-limits/${sub}?role=agent`, { headers: await admin() });
    expect(role.status).toBe(400);
    expect((await limitsOf(sub)).overrides).toEqual({});
  });

  it("PUT sets overrides field by field, null removes one, DELETE removes them all", async () => {
    const sub = uniqueId("admin-target");
    // The suite's RATE_LIMITS (vitest.config.ts) for users and admins.
    const roles = parseRateLimits(env.RATE_LIMITS).roles;
    const fresh = await limitsOf(sub);
    expect(fresh).toEqual({
      subject: sub,
      role: "user",
      enforced: true,
      limits: {
        rpm: { limit: roles.user.limits.rpm, source: "role" },
        tpm: { limit: roles.user.limits.tpm, source: "role" },
        concurrency: { limit: roles.user.limits.concurrency, source: "role" },
      },
      usage: { rpm: 0, tpm: 0, concurrency: 0 },
      remaining: roles.user.limits,
      overrides: {},
      tokenClaim: null,
      models: [],
    });
    const set = await setLimits(sub, { rpm: 5, tpm: 500 });
    expect(set.status).toBe(200);
    expect(RateLimitStatus.parse(await set.json())).toMatchObject({
      limits: { rpm: { limit: 5, source: "override" }, tpm: { limit: 500, source: "override" } },
      overrides: { rpm: 5, tpm: 500 },
    });
    const removed = RateLimitStatus.parse(await (await setLimits(sub, { rpm: null, concurrency: 2 })).json());
    expect(removed.overrides).toEqual({ tpm: 500, concurrency: 2 });
    expect(removed.limits.rpm).toEqual({ limit: roles.user.limits.rpm, source: "role" });
    expect((await limitsOf(sub, "?role=admin")).limits).toEqual({
      rpm: { limit: roles.admin.limits.rpm, source: "role" },
      tpm: { limit: 500, source: "override" },
      concurrency: { limit: 2, source: "override" },
    });
    const cleared = await gatewayFetch(`/rate-limits/${sub}`, { method: "DELETE", headers: await admin() });
    expect(cleared.status).toBe(200);
    expect(RateLimitStatus.parse(await cleared.json()).overrides).toEqual({});
    expect((await limitsOf(sub)).limits.tpm).toEqual({ limit: roles.user.limits.tpm, source: "role" });
  });

  it("overrides are kept in the home hub's storage, so they outlive a restart", async () => {
    const sub = uniqueId("restart-target");
    await setLimits(sub, { tpm: 777 });
    // What a restart reads back (HubRateLimits.restore); the buckets reach storage within a second.
    const { runInDurableObject } = await import("cloudflare:test");
    const stored = await runInDurableObject(env.AGENT_HUB.getByName("default"), (_, state) =>
      state.storage.get(`rl:o:${sub}`),
    );
    expect(stored).toEqual({ tpm: 777 });
  });
});

/** The app with some vars replaced: the Worker's view of RATE_LIMITS (the hub only applies what it is sent). */
function withEnv(vars: Record<string, string>) {
  return async (request: Request): Promise<Response> => {
    const ctx = createExecutionContext();
    const response = await app.fetch(request, { ...env, ...vars }, ctx);
    await waitOnExecutionContext(ctx);
    return response;
  };
}
