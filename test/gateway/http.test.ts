// The HTTP surface: body validation, error shapes, 404/405, request ids, health.
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import worker from "../../gateway/index.ts";
import { Limits } from "../../schema/api.ts";
import { BASE, bearer, gatewayFetch, postJson, TestAgent, uniqueId } from "./helpers.ts";

describe("request bodies", () => {
  it("400 INVALID_JSON for malformed JSON", async () => {
    const own = await postJson("/generate", "{ nope");
    expect(own.status).toBe(400);
    expect(await own.json()).toMatchObject({
      error: { code: "INVALID_JSON", message: "request body is not valid JSON" },
    });
    const openai = await postJson("/v1/chat/completions", "[1,");
    expect(await openai.json()).toMatchObject({
      error: { code: "INVALID_JSON", type: "invalid_request_error" },
    });
  });

  it("400 INVALID_REQUEST naming the field", async () => {
    const wrongType = await postJson("/generate", { prompt: 5 });
    expect(wrongType.status).toBe(400);
    expect(((await wrongType.json()) as { error: { message: string } }).error.message).toMatch(/^prompt: /);

    const empty = await postJson("/v1/chat/completions", { model: "m", messages: [] });
    expect(empty.status).toBe(400);
    expect(await empty.json()).toMatchObject({
      error: { code: "INVALID_REQUEST", param: "messages", message: expect.stringMatching(/^messages: /) },
    });

    const nested = await postJson("/v1/chat/completions", {
      model: "m",
      messages: [{ role: "robot", content: "x" }],
    });
    expect(await nested.json()).toMatchObject({ error: { param: "messages.0.role" } });

    const unknownField = await postJson("/generate", { prompt: "x", frobnicate: true });
    expect(await unknownField.json()).toMatchObject({
      error: { message: expect.stringMatching(/^frobnicate: /) },
    });

    const tooMany = await postJson("/generate", { prompt: "x", max_tokens: Limits.maxTokens + 1 });
    expect(await tooMany.json()).toMatchObject({
      error: { code: "INVALID_REQUEST", message: expect.stringMatching(/^max_tokens: /) },
    });

    const tools = await postJson("/v1/chat/completions", {
      model: "m",
      messages: [{ role: "user", content: "x" }],
      tools: [{ type: "function" }],
    });
    expect(await tools.json()).toMatchObject({
      error: { code: "INVALID_REQUEST", param: "tools.0.function" },
    });
  });

  it("415 UNSUPPORTED_MEDIA_TYPE unless the body is declared JSON", async () => {
    for (const contentType of ["text/plain", ""]) {
      const response = await gatewayFetch("/generate", {
        method: "POST",
        headers: { ...(await bearer()), "Content-Type": contentType },
        body: JSON.stringify({ prompt: "x" }),
      });
      expect(response.status).toBe(415);
      expect(await response.json()).toMatchObject({ error: { code: "UNSUPPORTED_MEDIA_TYPE" } });
    }
    const charset = await postJson("/generate", "{", {
      headers: { "Content-Type": "application/json; charset=utf-8" },
    });
    expect(charset.status).toBe(400);
  });

  it("413 PAYLOAD_TOO_LARGE by Content-Length and by the bytes actually sent", async () => {
    const big = JSON.stringify({ prompt: "x".repeat(Limits.maxBodyBytes) });
    const declared = await postJson("/generate", big);
    expect(declared.status).toBe(413);
    expect(await declared.json()).toMatchObject({ error: { code: "PAYLOAD_TOO_LARGE" } });

    // A streamed body has no Content-Length: the limit is enforced while reading.
    const bytes = new TextEncoder().encode(big);
    const streamed = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < bytes.length; i += 64 * 1024) controller.enqueue(bytes.slice(i, i + 64 * 1024));
        controller.close();
      },
    });
    const response = await gatewayFetch("/generate", {
      method: "POST",
      headers: { ...(await bearer()), "Content-Type": "application/json" },
      body: streamed,
    });
    expect(response.status).toBe(413);
  });
});

describe("JSON bodies, read whole or streamed", () => {
  it("400 INVALID_JSON for bytes that are not UTF-8, with a Content-Length or streamed", async () => {
    const bad = new Uint8Array([0x7b, 0x22, 0x70, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]); // {"p":"\xff\xfe"}
    const sized = await gatewayFetch("/generate", {
      method: "POST",
      headers: { ...(await bearer()), "Content-Type": "application/json" },
      body: bad,
    });
    expect(sized.status).toBe(400);
    expect(await sized.json()).toMatchObject({ error: { code: "INVALID_JSON" } });
    const streamed = await gatewayFetch("/generate", {
      method: "POST",
      headers: { ...(await bearer()), "Content-Type": "application/json" },
      body: new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(bad.slice(0, 7));
          controller.enqueue(bad.slice(7));
          controller.close();
        },
      }),
    });
    expect(streamed.status).toBe(400);
    expect(await streamed.json()).toMatchObject({ error: { code: "INVALID_JSON" } });
  });

  it("a body at exactly the limit is read, one byte over is 413", async () => {
    const padded = (size: number) => {
      const head = '{"prompt":"';
      return `${head}${"x".repeat(size - head.length - 2)}"}`;
    };
    const atLimit = await postJson("/generate", padded(Limits.maxBodyBytes));
    // Read and parsed: it fails later, on the schema (the prompt is longer than allowed), not on size.
    expect(atLimit.status).toBe(400);
    expect(await atLimit.json()).toMatchObject({ error: { code: "INVALID_REQUEST" } });
    const over = await postJson("/generate", padded(Limits.maxBodyBytes + 1));
    expect(over.status).toBe(413);
  });
});

describe("routing and error shapes", () => {
  it("404 NOT_FOUND in both shapes", async () => {
    const own = await gatewayFetch("/nope");
    expect(own.status).toBe(404);
    expect(await own.json()).toEqual({
      error: {
        code: "NOT_FOUND",
        message: "no route for GET /nope",
        requestId: own.headers.get("X-Request-Id"),
      },
    });
    const openai = await gatewayFetch("/v1/embeddings", { method: "POST" });
    expect(openai.status).toBe(404);
    expect(await openai.json()).toMatchObject({
      error: { code: "NOT_FOUND", type: "not_found_error", param: null },
    });
  });

  it("405 METHOD_NOT_ALLOWED with Allow for a known path", async () => {
    const response = await gatewayFetch("/generate");
    expect(response.status).toBe(405);
    expect(response.headers.get("Allow")).toBe("POST");
    expect(await response.json()).toMatchObject({ error: { code: "METHOD_NOT_ALLOWED" } });
    const chat = await gatewayFetch("/v1/chat/completions");
    expect(chat.status).toBe(405);
    expect(await chat.json()).toMatchObject({
      error: { code: "METHOD_NOT_ALLOWED", type: "invalid_request_error" },
    });
    expect((await gatewayFetch("/health", { method: "DELETE" })).status).toBe(405);
    const agents = await gatewayFetch("/agents", { method: "POST" });
    expect(agents.status).toBe(405);
    expect(agents.headers.get("Allow")).toBe("GET, HEAD");
  });

  it("an unknown error is a plain 500 INTERNAL with no internal detail", async () => {
    // Broken for the route's own queries; auth's token deny-list still reads (else it answers 503 first).
    const brokenDb = {
      prepare(sql: string) {
        if (sql.includes("token_revocation")) return env.DB.prepare(sql);
        throw new Error("SQLITE_CORRUPT secret internal detail");
      },
      batch: (statements: D1PreparedStatement[]) => env.DB.batch(statements),
    } as unknown as D1Database;
    const ctx = createExecutionContext();
    const response = await worker.fetch(
      new Request(`${BASE}/agents/connect`, {
        headers: { Upgrade: "websocket", ...(await bearer({ role: "agent" })) },
      }),
      { ...env, DB: brokenDb },
      ctx,
    );
    await waitOnExecutionContext(ctx);
    expect(response.status).toBe(500);
    const text = await response.text();
    expect(text).not.toMatch(/SQLITE|secret|stack/i);
    expect(JSON.parse(text)).toMatchObject({ error: { code: "INTERNAL", message: "internal error" } });
  });
});

describe("request ids", () => {
  it("echoes a sane incoming X-Request-Id and replaces an unsafe one", async () => {
    const kept = await gatewayFetch("/health", { headers: { "X-Request-Id": "trace-abc_123" } });
    expect(kept.headers.get("X-Request-Id")).toBe("trace-abc_123");
    const replaced = await gatewayFetch("/health", { headers: { "X-Request-Id": "bad id\twith spaces" } });
    expect(replaced.headers.get("X-Request-Id")).toMatch(/^[0-9a-f-]{36}$/);
    const tooLong = await gatewayFetch("/health", { headers: { "X-Request-Id": "a".repeat(65) } });
    expect(tooLong.headers.get("X-Request-Id")).not.toBe("a".repeat(65));
  });

  it("is on errors and on WebSocket upgrades", async () => {
    expect((await gatewayFetch("/nope")).headers.get("X-Request-Id")).toBeTruthy();
    const upgrade = await TestAgent.upgrade(uniqueId("rid"));
    expect(upgrade.status).toBe(101);
    expect(upgrade.headers.get("X-Request-Id")).toBeTruthy();
    upgrade.webSocket?.accept();
    upgrade.webSocket?.close(1000);
  });
});

describe("health", () => {
  it("/health reports version, D1 and connected agents without auth", async () => {
    const response = await gatewayFetch("/health");
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({
      status: "ok",
      version: "0.1.0",
      d1: "ok",
      agentsConnected: 0,
    });
  });

  it("/ready is 503 with a reason while no agent serves a model", async () => {
    const response = await gatewayFetch("/ready");
    expect(response.status).toBe(503);
    expect(await response.json()).toMatchObject({
      ready: false,
      reason: "no connected agent serves a model",
    });
  });
});
