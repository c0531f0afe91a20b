// The rate limiter's pure parts: the book's buckets and reservations at a chosen clock, RATE_LIMITS
// parsing, the RateLimit header fields, the prompt estimate, the token claim, and the hub's hand
// check of the ask against its zod schema.
import fc from "fast-check";
import { SignJWT } from "jose";
import { describe, expect, it, vi } from "vitest";
import { estimatePromptTokens, tokenClaim } from "../../gateway/ratelimit/ask.ts";
import { RateLimitBook, WINDOW_MS } from "../../gateway/ratelimit/book.ts";
import { DEFAULT_RATE_LIMITS, modelLimits, parseRateLimits } from "../../gateway/ratelimit/config.ts";
import { rateLimitHeaders } from "../../gateway/ratelimit/headers.ts";
import { isRateLimitAsk, MAX_RATE_LIMIT, RateLimitAsk } from "../../schema/hub.ts";

const T0 = 1_000_000;

function ask(overrides: Partial<RateLimitAsk> = {}): RateLimitAsk {
  return {
    subject: "alice",
    role: "user",
    limits: { rpm: 10, tpm: 1_000, concurrency: 4 },
    promptTokens: 1,
    tokens: 100,
    pool: "default",
    route: "generate",
    ...overrides,
  };
}

const admitted = (v: ReturnType<RateLimitBook["admit"]>) => (v.admitted ? v.id : null);

describe("RateLimitBook", () => {
  it("admits exactly rpm requests within a minute, then refuses with the wait until one drains", () => {
    const book = new RateLimitBook("t");
    const limits = { rpm: 10, tpm: 1_000_000, concurrency: 1_000 };
    const verdicts = Array.from({ length: 50 }, () => book.admit(ask({ limits }), T0, 60_000, true));
    expect(verdicts.filter((v) => v.admitted)).toHaveLength(10);
    const refused = verdicts[10];
    expect(refused).toMatchObject({ admitted: false, reason: "rpm" });
    // One request drains every 6 s at 10 per minute.
    expect(refused?.admitted === false && refused.retryAfterSeconds).toBe(6);
    expect(book.admit(ask({ limits }), T0 + 5_999, 60_000, true).admitted).toBe(false);
    expect(book.admit(ask({ limits }), T0 + 6_000, 60_000, true).admitted).toBe(true);
  });

  it("reserves prompt + max_tokens, so concurrent admissions cannot overshoot tpm", () => {
    const book = new RateLimitBook("t");
    const limits = { rpm: 1_000, tpm: 1_000, concurrency: 1_000 };
    const ids = Array.from({ length: 50 }, () => admitted(book.admit(ask({ limits }), T0, 60_000, true)));
    expect(ids.filter((id) => id !== null)).toHaveLength(10);
    // Settled with the real usage (6 tokens each), the budget comes back.
    for (const id of ids) if (id !== null) book.settle("alice", id, 6, T0);
    expect(book.report("alice", T0).usage).toEqual({ rpm: 10, tpm: 60, concurrency: 0 });
    const more = Array.from({ length: 50 }, () => book.admit(ask({ limits }), T0, 60_000, true));
    expect(more.filter((v) => v.admitted)).toHaveLength(9);
  });

  it("refuses a request larger than the whole tpm budget, saying so", () => {
    const book = new RateLimitBook("t");
    const verdict = book.admit(ask({ tokens: 1_001 }), T0, 60_000, true);
    expect(verdict).toMatchObject({ admitted: false, reason: "tpm", retryAfterSeconds: 60 });
    expect(verdict.admitted === false && verdict.message).toContain("lower max_tokens");
  });

  it("counts open reservations against concurrency; a settle frees the slot", () => {
    const book = new RateLimitBook("t");
    const limits = { rpm: 1_000, tpm: 1_000_000, concurrency: 4 };
    const ids = Array.from({ length: 50 }, () => admitted(book.admit(ask({ limits }), T0, 60_000, true)));
    const open = ids.filter((id): id is string => id !== null);
    expect(open).toHaveLength(4);
    const refused = book.admit(ask({ limits }), T0, 60_000, true);
    expect(refused).toMatchObject({ admitted: false, reason: "concurrency", retryAfterSeconds: 1 });
    book.settle("alice", open[0] as string, 10, T0);
    expect(book.admit(ask({ limits }), T0, 60_000, true).admitted).toBe(true);
  });

  it("a release (never reached an agent) gives back the request, its tokens and its slot", () => {
    const book = new RateLimitBook("t");
    const id = admitted(book.admit(ask(), T0, 60_000, true)) as string;
    expect(book.report("alice", T0).usage).toEqual({ rpm: 1, tpm: 100, concurrency: 1 });
    expect(book.settle("alice", id, null, T0)).toBe(true);
    expect(book.report("alice", T0).usage).toEqual({ rpm: 0, tpm: 0, concurrency: 0 });
    // Twice is a no-op; a late settle with tokens still charges them.
    expect(book.settle("alice", id, null, T0)).toBe(false);
    expect(book.settle("alice", id, 7, T0)).toBe(false);
    expect(book.report("alice", T0).usage.tpm).toBe(7);
  });

  it("drains continuously at the limit per minute", () => {
    const book = new RateLimitBook("t");
    book.admit(ask({ tokens: 600 }), T0, 60_000, true);
    expect(book.report("alice", T0 + WINDOW_MS / 2).usage.tpm).toBe(100);
    expect(book.report("alice", T0 + WINDOW_MS).usage.tpm).toBe(0);
  });

  it("an override beats the token's claim, which beats the role's default", () => {
    const book = new RateLimitBook("t");
    const claim = { rpm: 2 };
    expect(admitted(book.admit(ask({ claim }), T0, 60_000, true))).not.toBeNull();
    expect(admitted(book.admit(ask({ claim }), T0, 60_000, true))).not.toBeNull();
    expect(book.admit(ask({ claim }), T0, 60_000, true)).toMatchObject({ admitted: false, reason: "rpm" });
    book.setOverride("alice", { rpm: 3 });
    expect(book.admit(ask({ claim }), T0, 60_000, true).admitted).toBe(true);
    expect(book.override("alice")).toEqual({ rpm: 3 });
  });

  it("applies a model's own limits on top of the subject's", () => {
    const book = new RateLimitBook("t");
    const model = { key: "big", limits: { tpm: 250 } };
    expect(book.admit(ask({ model }), T0, 60_000, true).admitted).toBe(true);
    expect(book.admit(ask({ model }), T0, 60_000, true).admitted).toBe(true);
    const refused = book.admit(ask({ model }), T0, 60_000, true);
    expect(refused).toMatchObject({ admitted: false, reason: "model_tpm" });
    expect(refused.policies.map((p) => p.name)).toEqual(["rpm", "tpm", "concurrency", "tpm:big"]);
    // Other models still have the subject's budget.
    expect(book.admit(ask(), T0, 60_000, true).admitted).toBe(true);
  });

  it("expires reservations admitted by RPC after their deadline, and local ones after a restart", () => {
    const book = new RateLimitBook("t");
    admitted(book.admit(ask(), T0, 1_000, false));
    admitted(book.admit(ask(), T0, 1_000, true));
    expect(book.nextExpiry()).toBe(T0 + 1_000 + 5_000);
    expect(book.expire(T0 + 5_999)).toBe(0);
    expect(book.expire(T0 + 6_000)).toBe(1);
    expect(book.report("alice", T0 + 6_000).usage.concurrency).toBe(1);
    // The local one is over when the hub restarted (its request died with it); its tokens stay charged.
    const restored = new RateLimitBook("u");
    const stored = book.stored("alice") as NonNullable<ReturnType<RateLimitBook["stored"]>>;
    expect(stored.open).toHaveLength(1);
    restored.load("alice", stored, T0 + 6_000);
    expect(restored.report("alice", T0 + 6_000).usage).toMatchObject({ concurrency: 0, tpm: 200 - 100 });
  });

  it("forgets subjects that have drained and hold nothing", () => {
    const book = new RateLimitBook("t");
    const id = admitted(book.admit(ask(), T0, 60_000, true)) as string;
    expect(book.prune(T0 + WINDOW_MS)).toEqual([]);
    book.settle("alice", id, 10, T0 + WINDOW_MS);
    expect(book.prune(T0 + 2 * WINDOW_MS)).toEqual(["alice"]);
    expect(book.subjects).toBe(0);
  });
});

describe("RATE_LIMITS", () => {
  it("defaults per role when unset or empty; off turns the limiter off", () => {
    for (const raw of [undefined, "", "  "]) {
      const config = parseRateLimits(raw);
      expect(config.enabled).toBe(true);
      expect(config.roles.user.limits).toEqual(DEFAULT_RATE_LIMITS.user);
      expect(config.roles.admin.limits).toEqual(DEFAULT_RATE_LIMITS.admin);
    }
    expect(parseRateLimits("off").enabled).toBe(false);
    expect(parseRateLimits(" OFF ").enabled).toBe(false);
  });

  it("takes limits per role, field by field over the defaults, and models per role", () => {
    const config = parseRateLimits(
      JSON.stringify({ user: { rpm: 5, models: { big: { tpm: 300 } } }, admin: { concurrency: 2 } }),
    );
    expect(config.roles.user.limits).toEqual({ ...DEFAULT_RATE_LIMITS.user, rpm: 5 });
    expect(config.roles.admin.limits).toEqual({ ...DEFAULT_RATE_LIMITS.admin, concurrency: 2 });
    expect(modelLimits(config.roles.user, "big")).toEqual({ key: "big", limits: { tpm: 300 } });
    expect(modelLimits(config.roles.user, "big:1.0.0")).toEqual({ key: "big", limits: { tpm: 300 } });
    expect(modelLimits(config.roles.user, "big@prod")).toEqual({ key: "big", limits: { tpm: 300 } });
    expect(modelLimits(config.roles.user, "small")).toBeUndefined();
    expect(modelLimits(config.roles.admin, "big")).toBeUndefined();
  });

  it("logs a malformed value and keeps the built-in defaults (never off)", () => {
    const errors = vi.spyOn(console, "error").mockImplementation(() => {});
    try {
      for (const raw of [
        "{not json",
        "[]",
        JSON.stringify({ user: { rpm: 0 } }),
        JSON.stringify({ user: { rpm: 1.5 } }),
        JSON.stringify({ user: { rpm: MAX_RATE_LIMIT + 1 } }),
        JSON.stringify({ agent: { rpm: 5 } }),
        JSON.stringify({ user: { rmp: 5 } }),
        JSON.stringify({ user: { models: { big: {} } } }),
      ]) {
        const config = parseRateLimits(raw);
        expect(config.enabled, raw).toBe(true);
        expect(config.roles.user.limits, raw).toEqual(DEFAULT_RATE_LIMITS.user);
      }
      expect(errors).toHaveBeenCalledTimes(8);
      expect(String(errors.mock.calls[0]?.[0])).toContain("RATE_LIMITS");
    } finally {
      errors.mockRestore();
    }
  });
});

describe("RateLimit-Policy and RateLimit", () => {
  it("writes one structured-field item per policy; tokens as their own named policy", () => {
    const book = new RateLimitBook("t");
    const verdict = book.admit(
      ask({ limits: { rpm: 600, tpm: 200_000, concurrency: 16 }, tokens: 1_000 }),
      T0,
      60_000,
      true,
    );
    expect(rateLimitHeaders(verdict.policies)).toEqual({
      "RateLimit-Policy": `"rpm";q=600;w=60, "tpm";q=200000;w=60;orchard-unit="tokens", "concurrency";q=16;qu="concurrent-requests"`,
      RateLimit: `"rpm";r=599;t=1, "tpm";r=199000;t=1, "concurrency";r=15`,
    });
  });
});

describe("the ask", () => {
  it("estimates the prompt as ceil(chars / 4), chat messages with 4 tokens each for the template", () => {
    expect(estimatePromptTokens({ prompt: "" })).toBe(0);
    expect(estimatePromptTokens({ prompt: "abcde" })).toBe(2);
    expect(
      estimatePromptTokens({
        messages: [
          { role: "system", content: "abcd" },
          { role: "user", content: "e" },
        ],
      }),
    ).toBe(2 + 8);
  });

  it("reads the token's rate_limits claim; a malformed one is ignored", async () => {
    const key = new TextEncoder().encode("claim-test-secret");
    const sign = (claims: Record<string, unknown>) =>
      new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).setSubject("s").sign(key);
    expect(tokenClaim(`Bearer ${await sign({ rate_limits: { rpm: 3, tpm: 99 } })}`)).toEqual({
      rpm: 3,
      tpm: 99,
    });
    expect(tokenClaim(`Bearer ${await sign({})}`)).toBeNull();
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    try {
      expect(tokenClaim(`Bearer ${await sign({ rate_limits: { rpm: -1 } })}`)).toBeNull();
      expect(tokenClaim(`Bearer ${await sign({ rate_limits: "lots" })}`)).toBeNull();
    } finally {
      warn.mockRestore();
    }
    expect(tokenClaim(undefined)).toBeNull();
    expect(tokenClaim("Bearer not-a-jwt")).toBeNull();
  });

  it("isRateLimitAsk agrees with RateLimitAsk on generated asks, valid and mutated", () => {
    const limit = fc.oneof(
      fc.integer({ min: -1, max: 10_000 }),
      fc.constant(MAX_RATE_LIMIT),
      fc.constant(MAX_RATE_LIMIT + 1),
      fc.double(),
    );
    const partial = fc.record({ rpm: limit, tpm: limit, concurrency: limit }, { requiredKeys: [] });
    const text = (max: number) => fc.string({ minLength: 0, maxLength: max + 1 });
    const askArb = fc.record(
      {
        id: text(64),
        subject: text(128),
        role: text(32),
        limits: fc.record({ rpm: limit, tpm: limit, concurrency: limit }),
        claim: partial,
        model: fc.record({ key: text(128), limits: partial }),
        promptTokens: fc.oneof(fc.integer({ min: -1, max: 10_000 }), fc.double()),
        tokens: fc.oneof(fc.integer({ min: -1, max: 10_000 }), fc.double()),
        timeoutMs: fc.oneof(fc.integer({ min: -1, max: 10 ** 6 }), fc.double()),
        pool: text(64),
        route: text(32),
      },
      { requiredKeys: ["subject", "role", "limits", "promptTokens", "tokens", "pool", "route"] },
    );
    const keys = Object.keys(ask()).concat(["id", "claim", "model", "timeoutMs"]);
    const mutated = fc
      .tuple(askArb, fc.constantFrom(...keys), fc.anything())
      .map(([value, key, replacement]) => ({ ...value, [key]: replacement }));
    fc.assert(
      fc.property(fc.oneof(askArb, mutated, fc.constant(ask())), (value) => {
        expect(isRateLimitAsk(value)).toBe(RateLimitAsk.safeParse(value).success);
      }),
      { numRuns: 3_000, seed: 20261202 },
    );
  });
});
