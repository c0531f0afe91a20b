// Output sanitization: control characters and terminal escapes stripped (streamed too, a sequence
// split across chunks included), credentials redacted (OUTPUT_REDACTION), output content filters,
// JSON answers staying valid JSON, and the hub's hook end to end with a scripted agent.
import { describe, expect, it } from "vitest";
import { InferenceJob } from "../../gateway/hub/inference-job.ts";
import { parseContentFilters } from "../../gateway/security/content-filters.ts";
import { ControlStripper, stripControls } from "../../gateway/security/control-chars.ts";
import {
  type OutputPolicy,
  OutputSanitizer,
  STRIP_ONLY,
  sanitizeOutput,
} from "../../gateway/security/output-sanitizer.ts";
import type { DispatchRequest } from "../../schema/hub.ts";
import type { ModelId } from "../../schema/model-id.ts";
import { parseSse, postJson, readSse, trackedAgents, uniqueId } from "./helpers.ts";
import { answer, chatBody } from "./security-helpers.ts";

const ESC = "\x1b";
const REDACT: OutputPolicy = { redactSecrets: true, filters: [] };

/** Pushes the chunks one by one and ends: the texts that went out, in order. */
function stream(policy: OutputPolicy, chunks: readonly string[]): string[] {
  const sanitizer = new OutputSanitizer(policy);
  const out = chunks.map((c) => sanitizer.push(c).text);
  out.push(sanitizer.end().text);
  return out;
}

/** Every way to cut `text` in two: the stream must say what the whole text says. */
function everySplit(policy: OutputPolicy, text: string): void {
  const whole = sanitizeOutput(text, policy).text;
  for (let i = 0; i <= text.length; i++) {
    expect(stream(policy, [text.slice(0, i), text.slice(i)]).join(""), `split at ${i}`).toBe(whole);
  }
}

describe("ControlStripper", () => {
  it.each([
    ["SGR colour", `${ESC}[31mred${ESC}[0m`, "red"],
    ["cursor movement", `a${ESC}[2J${ESC}[10;20Hb`, "ab"],
    ["private CSI", `${ESC}[?25lhidden cursor${ESC}[?25h`, "hidden cursor"],
    ["OSC title ended by BEL", `${ESC}]0;pwned\x07text`, "text"],
    ["OSC 8 hyperlink ended by ST", `${ESC}]8;;https://evil.example${ESC}\\click${ESC}]8;;${ESC}\\`, "click"],
    ["OSC 52 clipboard", `${ESC}]52;c;ZXZpbA==\x07ok`, "ok"],
    ["DCS string", `${ESC}Pq#0;2;0;0;0${ESC}\\after`, "after"],
    ["two-character escapes", `${ESC}cre${ESC}7set`, "reset"],
    ["charset (nF) escape", `${ESC}(Bplain`, "plain"],
    ["8-bit CSI", "\x9b31mred\x9b0m", "red"],
    ["8-bit OSC with 8-bit ST", "\x9d0;title\x9ctext", "text"],
    ["lone C1", "a\x85b\x90", "ab"],
    ["C0 controls, DEL and CR", "a\x00b\x07c\x08d\x7fe\r\nf", "abcde\nf"],
    ["newlines and tabs kept", "line\n\tindented\n", "line\n\tindented\n"],
    ["ESC before non-ASCII", `${ESC}é`, "é"],
  ])("%s", (_name, input, expected) => {
    expect(stripControls(input)).toBe(expected);
  });

  it("removes a sequence split across chunks: ESC | [ 3 | 1 m", () => {
    const stripper = new ControlStripper();
    expect([
      stripper.push(`red: ${ESC}`),
      stripper.push("[3"),
      stripper.push("1mRED"),
      stripper.push(`${ESC}[0m.`),
    ]).toEqual(["red: ", "", "RED", "."]);
  });

  it("ends an unterminated string after a bound instead of swallowing the rest of the answer", () => {
    const out = stripControls(`${ESC}]0;${"x".repeat(5_000)}visible`);
    expect(out.endsWith("visible")).toBe(true);
    expect(out.length).toBeLessThan(1_000);
    // A sequence still open when the stream ends is dropped.
    const stripper = new ControlStripper();
    expect(stripper.push(`ok${ESC}[3`)).toBe("ok");
    stripper.end();
    expect(stripper.push("1m")).toBe("1m");
  });

  it("passes text without controls through untouched (the same string)", () => {
    const text = "plain text, émoji 🍎 and 漢字";
    expect(new ControlStripper().push(text)).toBe(text);
  });
});

describe("credential redaction", () => {
  const secrets: [string, string][] = [
    [
      "private_key",
      "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx1\nq2w3e4r5t6\n-----END RSA PRIVATE KEY-----",
    ],
    [
      "private_key",
      "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n-----END OPENSSH PRIVATE KEY-----",
    ],
    ["private_key", "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----"],
    ["jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"],
    ["aws_access_key", "AKIAIOSFODNN7EXAMPLE"],
    ["aws_access_key", "ASIAY34FZKBOKMUTVV7A"],
    ["github_token", `ghp_${"a1B2".repeat(9)}`],
    ["github_token", `github_pat_11ABCDEFG0${"x".repeat(40)}`],
    ["slack_token", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"],
    ["slack_webhook", "https://hooks.slack.com/services/T0000000/B0000000/XXXXXXXXXXXXXXXXXXXXXXXX"],
    ["api_key", "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"],
    ["api_key", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789"],
    ["api_key", "sk_live_abcdefghijklmnop1234"],
    ["google_api_key", `AIza${"B".repeat(35)}`],
  ];
  it.each(secrets)("%s is redacted", (kind, secret) => {
    const out = sanitizeOutput(`here: ${secret} — done`, REDACT).text;
    expect(out).toBe(`here: [REDACTED:${kind}] — done`);
  });

  it("redacts an AWS secret key named as one", () => {
    const key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    expect(sanitizeOutput(`aws_secret_access_key = ${key}`, REDACT).text).toBe(
      "aws_secret_access_key = [REDACTED:aws_secret_key]",
    );
  });

  it("leaves look-alikes alone", () => {
    for (const text of [
      "ask-me-anything about skiing",
      "Asia and AKIA are letters",
      "a public cert: -----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
      "eyJ alone is not a token",
      "the task-list is long",
    ]) {
      expect(sanitizeOutput(text, REDACT).text, text).toBe(text);
    }
  });

  it("is off with OUTPUT_REDACTION off (control characters are still stripped)", () => {
    const text = `key AKIAIOSFODNN7EXAMPLE ${ESC}[1mbold`;
    expect(sanitizeOutput(text, STRIP_ONLY).text).toBe("key AKIAIOSFODNN7EXAMPLE bold");
  });

  it("redacts a credential however the stream splits it", () => {
    for (const [, secret] of secrets) everySplit(REDACT, `token: ${secret}, and ${ESC}[31mmore`);
  });

  it("reads a held word with the text before it: glued keys are one word, not a key (regression)", () => {
    // Found by the property test in security-filters.test.ts: with an output filter's 128-character
    // hold, the second of two glued keys started a scan and "\b" saw a boundary that is not there.
    const glued = `AKIAIOSFODNN7EXAMPLEAKIAIOSFODNN7EXAMPLE ${"y".repeat(107)} more`;
    expect(sanitizeOutput(glued, FILTERED).text).toBe(glued);
    everySplit(FILTERED, glued);
  });

  it("holds back only what could begin a credential", () => {
    expect(stream(REDACT, ["hello world ", "next"])).toEqual(["hello world ", "next", ""]);
    expect(stream(REDACT, ["my key is sk", "-proj-abcdefghijklmnopqrstuvwx1234 ok"])).toEqual([
      "my key is ",
      "[REDACTED:api_key] ok",
      "",
    ]);
    // A word that merely ends in a lead's letters ("safe" and "eyJ") is not held.
    expect(stream(REDACT, ["that is safe", " indeed"])).toEqual(["that is safe", " indeed", ""]);
  });

  it("holds a PEM block until its END line, then redacts it whole", () => {
    const out = stream(REDACT, [
      "key:\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE",
      "IIBase64Body\n-----END EC PRI",
      "VATE KEY-----\nbye",
    ]);
    expect(out).toEqual(["key:\n", "", "[REDACTED:private_key]\nbye", ""]);
  });
});

describe("structured output stays valid JSON", () => {
  it("a JSON answer with escapes and a credential parses after sanitization, streamed or not", () => {
    const answerJson = JSON.stringify({
      token: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlMTIz",
      aws: "AKIAIOSFODNN7EXAMPLE",
      note: "tab\there, newline\nthere",
    });
    const raw = answerJson.replace('"note"', `${ESC}[32m"note"${ESC}[0m`).replace('there"', `there\x07"`);
    const whole = sanitizeOutput(raw, REDACT).text;
    expect(JSON.parse(whole)).toEqual({
      token: "[REDACTED:jwt]",
      aws: "[REDACTED:aws_access_key]",
      note: "tab\there, newline\nthere",
    });
    for (let i = 0; i < raw.length; i += 7) {
      expect(JSON.parse(stream(REDACT, [raw.slice(0, i), raw.slice(i)]).join(""))).toEqual(JSON.parse(whole));
    }
  });
});

const FILTERS = parseContentFilters(
  JSON.stringify({
    chat: [
      { pattern: "project\\s+nightingale", flags: "i", action: "redact", name: "codename" },
      { pattern: "launch code \\d{4}", action: "block", name: "codes", on: "output" },
      { pattern: "input only", action: "block", on: "input" },
    ],
  }),
);
const FILTERED: OutputPolicy = {
  redactSecrets: true,
  filters: (FILTERS.byRoute.get("chat") ?? []).filter((f) => f.output),
};

describe("output content filters", () => {
  const policy = FILTERED;

  it("redact replaces the match, across a chunk boundary too", () => {
    expect(stream(policy, ["Status of Project Night", "ingale: on track."]).join("")).toBe(
      "Status of [redacted]: on track.",
    );
    everySplit(policy, "Status of project   nightingale and PROJECT NIGHTINGALE again.");
  });

  it("block stops the answer at the match: what came before goes out, nothing after", () => {
    const sanitizer = new OutputSanitizer(policy);
    const first = sanitizer.push("The launch c");
    const second = sanitizer.push("ode 1234 is secret");
    expect(first.blocked).toBeNull();
    expect(second.blocked?.name).toBe("codes");
    expect(first.text + second.text).toBe("The ");
    expect(sanitizer.push(" more").text).toBe("");
    expect(sanitizer.end().blocked?.name).toBe("codes");
  });

  it("an input-only filter does not apply to output", () => {
    expect(sanitizeOutput("input only text", policy)).toEqual({ text: "input only text", blocked: null });
  });
});

describe("InferenceJob: the hub's hook", () => {
  const request = (stream: boolean): DispatchRequest => ({
    requestId: "req-sanitize",
    model: "m" as ModelId,
    prompt: "p",
    params: { maxTokens: 100 },
    response: { api: "generate", stream, includeUsage: false, requestId: "req-sanitize", receivedAt: 0 },
    subject: "s",
    caller: "c",
  });
  const job = (stream: boolean, output: OutputPolicy, blocked: string[] = []) =>
    new InferenceJob(
      "req-sanitize",
      "m" as ModelId,
      "m" as ModelId,
      request(stream),
      { requestDeadline: 1e15, queueDeadline: 1e15, streamBufferMaxBytes: 1 << 20, output },
      { callerGone: () => {}, slowConsumer: () => {}, outputBlocked: (_job, filter) => blocked.push(filter) },
      0,
    );
  const done = {
    type: "done",
    id: "req-sanitize",
    finishReason: "stop",
    usage: { promptTokens: 1, completionTokens: 3 },
    timings: { firstTokenMs: 1, totalMs: 2 },
  } as const;
  const chunk = (text: string) => ({ type: "chunk", id: "req-sanitize", text, tokens: 1 }) as const;

  it("streams sanitized chunks: the split escape and the held credential", async () => {
    const j = job(true, REDACT);
    j.chunk(chunk(`hi ${ESC}`));
    j.chunk(chunk("[31mthere sk-"));
    j.chunk(chunk("abcdefghijklmnopqrstuvwxyz0123"));
    j.done(done);
    const events = parseSse(await (await j.response).text());
    const texts = events
      .filter((e) => e.event === "chunk")
      .map((e) => (JSON.parse(e.data) as { text: string }).text);
    expect(texts).toEqual(["hi ", "there ", "[REDACTED:api_key]"]);
    expect(events.at(-1)?.event).toBe("done");
  });

  it("sanitizes a whole (not streamed) answer the same way", async () => {
    const j = job(false, REDACT);
    j.chunk(chunk(`a ${ESC}]0;t`));
    j.chunk(chunk(`\x07b AKIAIOSFODNN7EX`));
    j.chunk(chunk("AMPLE"));
    j.done(done);
    expect(((await (await j.response).json()) as { text: string }).text).toBe(
      "a b [REDACTED:aws_access_key]",
    );
  });

  it("an output filter's block mid-stream asks the dispatcher to stop the generation", () => {
    const blocked: string[] = [];
    const j = job(true, FILTERED, blocked);
    j.chunk(chunk("The launch code 1234 "));
    expect(blocked).toEqual(["codes"]);
  });

  it("a block decided only at done fails the answer with CONTENT_FILTERED", async () => {
    const j = job(false, FILTERED);
    j.chunk(chunk("the launch code 9999"));
    j.done(done);
    const response = await j.response;
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ code: "CONTENT_FILTERED" });
    expect(j.errorCode).toBe("CONTENT_FILTERED");
  });
});

describe("end to end: a scripted agent's chunks", () => {
  const agents = trackedAgents();

  it("/generate stream: ESC [ 3 1 m split across two chunks never reaches the caller", async () => {
    const model = uniqueId("sec-out");
    const agent = await agents.serving(model);
    const pending = postJson("/generate", { prompt: "colour", model, stream: true });
    await answer(agent, [`red: ${ESC}[3`, `1mRED${ESC}[0m and ${ESC}]8;;http://x${ESC}\\link`]);
    const events = await readSse(await pending);
    const text = events
      .filter((e) => e.event === "chunk")
      .map((e) => (JSON.parse(e.data) as { text: string }).text)
      .join("");
    expect(text).toBe("red: RED and link");
  });

  it("/v1 chat stream and whole answers: credentials redacted, chunks valid JSON", async () => {
    const model = uniqueId("sec-out");
    const agent = await agents.serving(model);
    const streamed = postJson("/v1/chat/completions", chatBody(model, "key?", { stream: true }));
    await answer(agent, ["your key: ghp_", `${"Z9".repeat(18)} \x9b2Jbye`]);
    const deltas = (await readSse(await streamed))
      .filter((e) => e.data !== "[DONE]")
      .map((e) => JSON.parse(e.data) as { choices: { delta: { content?: string } }[] })
      .map((c) => c.choices[0]?.delta.content ?? "")
      .join("");
    expect(deltas).toBe("your key: [REDACTED:github_token] bye");

    const whole = postJson("/v1/chat/completions", chatBody(model, "key?"));
    await answer(agent, ["-----BEGIN PRIVATE KEY-----\nAAAA", "\n-----END PRIVATE KEY-----\n\x00done"]);
    const body = (await (await whole).json()) as { choices: { message: { content: string } }[] };
    expect(body.choices[0]?.message.content).toBe("[REDACTED:private_key]\ndone");
  });
});
