// CONTENT_FILTERS: what is refused at start-up (and logged, never a crash), the guards against
// catastrophic backtracking, windowed matching, and the input side end to end (block: 400
// CONTENT_FILTERED naming the filter; redact: the agent gets the prompt with the match replaced).
import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  blockingFilter,
  compileFilter,
  FILTER_OVERLAP_CHARS,
  FILTER_WINDOW_CHARS,
  filterMatches,
  parseContentFilters,
  redactFiltered,
} from "../../gateway/security/content-filters.ts";
import {
  type OutputPolicy,
  OutputSanitizer,
  sanitizeOutput,
} from "../../gateway/security/output-sanitizer.ts";
import { ErrorBody, OpenAIErrorBody } from "../../schema/api.ts";
import { trackedAgents, uniqueId } from "./helpers.ts";
import { answer, chatBody, sendJson } from "./security-helpers.ts";

afterEach(() => vi.restoreAllMocks());

describe("parseContentFilters", () => {
  it("compiles filters per route, with '*' added to every route after its own", () => {
    const filters = parseContentFilters(
      JSON.stringify({
        chat: [{ pattern: "foo", action: "block", name: "foo" }],
        "*": [{ pattern: "bar", flags: "i", action: "redact" }],
      }),
    );
    expect(filters.error).toBeNull();
    expect(filters.refused).toEqual([]);
    expect(filters.byRoute.get("chat")?.map((f) => f.name)).toEqual(["foo", "#0"]);
    expect(filters.byRoute.get("generate")?.map((f) => [f.name, f.action, f.regex.flags])).toEqual([
      ["#0", "redact", "gi"],
    ]);
  });

  it("refuses each bad filter on its own, saying why, and keeps the rest", () => {
    const filters = parseContentFilters(
      JSON.stringify({
        chat: [
          { pattern: "(unclosed", action: "block" },
          { pattern: "x".repeat(257), action: "block" },
          { pattern: "(a+)+$", action: "block" },
          { pattern: "(\\w*)*y", action: "redact" },
          { pattern: "(a|aa)*b", action: "redact" },
          { pattern: "(x)\\1", action: "redact" },
          { pattern: "a?", action: "redact" },
          { pattern: "ok", flags: "g", action: "block" },
          { pattern: "ok", action: "delete" },
          { pattern: "fine", action: "block", name: "kept" },
        ],
        embeddings: [{ pattern: "x", action: "block" }],
      }),
    );
    expect(filters.byRoute.get("chat")?.map((f) => f.name)).toEqual(["kept"]);
    expect(filters.refused.map((r) => r.reason)).toEqual([
      expect.stringMatching(/^not a valid regular expression/),
      "pattern longer than 256 characters",
      "nested quantifier (catastrophic backtracking)",
      "nested quantifier (catastrophic backtracking)",
      "nested quantifier (catastrophic backtracking)",
      "back-reference (catastrophic backtracking)",
      "matches the empty string",
      'flags "g" are not from "imsu"',
      expect.stringMatching(/^action/),
      expect.stringMatching(/^not a route/),
    ]);
  });

  it("an unusable var is an error, not an exception", () => {
    for (const bad of ["{nope", "[]", '{"chat": "x"}']) {
      const filters = parseContentFilters(bad);
      expect(filters.error, bad).not.toBeNull();
      expect(filters.byRoute.size).toBe(0);
    }
  });

  it("the Worker logs refused filters and still serves (never a crash)", async () => {
    const errors = vi.spyOn(console, "error");
    const response = await sendJson(
      "/generate",
      { prompt: "hello", model: "sec-filters-none" },
      { vars: { CONTENT_FILTERS: JSON.stringify({ generate: [{ pattern: "([", action: "block" }] }) } },
    );
    expect(response.status).not.toBe(500);
    expect(errors.mock.calls.some(([l]) => String(l).includes("a filter was refused and is ignored"))).toBe(
      true,
    );
  });
});

describe("matching", () => {
  const filter = (pattern: string, flags = "") => {
    const compiled = compileFilter({ pattern, flags, action: "redact" }, "t");
    if (typeof compiled === "string") throw new Error(compiled);
    return compiled;
  };

  it("finds a match wherever it falls, window boundaries included", () => {
    const needle = "secret-word";
    for (const at of [0, FILTER_WINDOW_CHARS - FILTER_OVERLAP_CHARS - 5, FILTER_WINDOW_CHARS - 3, 9_999]) {
      const text = `${"x ".repeat(at / 2)}${at % 2 ? " " : ""}${needle}${" y".repeat(3_000)}`;
      const matches = filterMatches(text, filter(needle));
      expect(
        matches.map((m) => text.slice(m.start, m.end)),
        String(at),
      ).toEqual([needle]);
    }
  });

  it("redacts every match once, and blocks on any", () => {
    const text = `a SECRET b secret c ${"z".repeat(10_000)} Secret`;
    expect(redactFiltered(text, [filter("secret", "i")])).toBe(
      `a [redacted] b [redacted] c ${"z".repeat(10_000)} [redacted]`,
    );
    const blocking = { ...filter("c z"), action: "block" as const };
    expect(blockingFilter(text, [blocking])?.name).toBe("t");
  });

  it("keeps the cost of a slow pattern bounded by the window on long input", () => {
    // Quadratic in the length it scans (every start position runs to the end): on 60,000
    // characters unwindowed that is 3.6e9 steps; in 4,096-character windows, 2.5e8.
    const slow = filter("\\s*x\\s*$");
    const text = " ".repeat(60_000);
    const t0 = performance.now();
    expect(filterMatches(text, slow)).toEqual([]);
    expect(performance.now() - t0).toBeLessThan(3_000);
  });
});

describe("streamed output equals the whole answer, however the chunks split it", () => {
  const filters = parseContentFilters(
    JSON.stringify({ chat: [{ pattern: "project\\s+nightingale", flags: "i", action: "redact" }] }),
  );
  const policy: OutputPolicy = { redactSecrets: true, filters: filters.byRoute.get("chat") ?? [] };
  const pieces = [
    "plain words ",
    "\x1b[31m",
    "AKIAIOSFODNN7EXAMPLE",
    " project nightingale ",
    "sk-proj-abcdefghijklmnopqrstuvwxyz",
    "\x1b]8;;http://x\x1b\\",
    "\n-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----\n",
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    " é 🍎 ",
    "\r\x00",
  ];

  it("(property, 300 runs)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(...pieces), { minLength: 1, maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        (parts, cuts) => {
          const text = parts.join("");
          const points = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
          const bounds = [0, ...points, text.length];
          const chunks = bounds.slice(1).map((end, i) => text.slice(bounds[i], end));
          const sanitizer = new OutputSanitizer(policy);
          const streamed = chunks.map((c) => sanitizer.push(c).text).join("") + sanitizer.end().text;
          expect(streamed).toBe(sanitizeOutput(text, policy).text);
        },
      ),
      { numRuns: 300, seed: 12 },
    );
  });
});

describe("input filters end to end", () => {
  const agents = trackedAgents();
  const vars = {
    CONTENT_FILTERS: JSON.stringify({
      generate: [{ pattern: "project\\s+nightingale", flags: "i", action: "block", name: "codename" }],
      "*": [{ pattern: "\\b\\d{3}-\\d{2}-\\d{4}\\b", action: "redact", name: "ssn" }],
    }),
  };

  it("block: 400 CONTENT_FILTERED naming the filter, in each route's shape", async () => {
    const response = await sendJson(
      "/generate",
      { prompt: "Tell me about Project Nightingale", model: "x" },
      { vars },
    );
    expect(response.status).toBe(400);
    const body = ErrorBody.parse(await response.json());
    expect(body.error).toMatchObject({ code: "CONTENT_FILTERED" });
    expect(body.error.message).toBe("the prompt matches the content filter codename");
    // The chat route has no block filter for it.
    const chat = await sendJson(
      "/v1/chat/completions",
      chatBody("sec-filter-none", "my ssn is 123-45-6789"),
      {
        vars: {
          CONTENT_FILTERS: JSON.stringify({ chat: [{ pattern: "ssn", action: "block", name: "ssn" }] }),
        },
      },
    );
    expect(chat.status).toBe(400);
    expect(OpenAIErrorBody.parse(await chat.json()).error).toMatchObject({
      code: "CONTENT_FILTERED",
      param: "messages.1.content",
    });
  });

  it("redact: the agent receives the prompt with the match replaced", async () => {
    const model = uniqueId("sec-filter");
    const agent = await agents.serving(model);
    const pending = sendJson("/generate", { prompt: "my number is 123-45-6789, ok?", model }, { vars });
    const frame = await answer(agent, ["noted"]);
    expect((await pending).status).toBe(200);
    expect(frame.prompt).toBe("my number is [redacted], ok?");

    const chat = sendJson(
      "/v1/chat/completions",
      {
        model,
        messages: [
          { role: "system", content: "ssn 111-22-3333" },
          { role: "user", content: "and 444-55-6666" },
        ],
      },
      { vars },
    );
    const chatFrame = await answer(agent, ["ok"]);
    expect((await chat).status).toBe(200);
    expect(chatFrame.messages?.map((m) => m.content)).toEqual(["ssn [redacted]", "and [redacted]"]);
  });
});
