// Micro-benchmarks of the per-request and per-frame work on Orchard's relay path, in Node's V8
// (the JavaScript engine workerd also runs; WebCrypto differs: BoringSSL there, OpenSSL here), each
// next to the cheaper alternative the hot-spot list proposes. Runs as its own process (IPC result)
// or directly: `npx tsx bench/micro/run.ts`.
import { jwtVerify, SignJWT } from "jose";
import { median } from "../lib/stats.ts";

export interface MicroCase {
  name: string;
  /** Where the work happens and how often, e.g. "hub, per agent frame". */
  where: string;
  nsPerOp: number;
  /** Set when the case could not run against the current code (it is changing under us). */
  skipped?: string;
}

let sink: unknown;

/** Iterations that take ~10 ms, so one sample is long enough to time and short enough to interleave. */
async function calibrate(fn: () => unknown, isAsync: boolean): Promise<number> {
  let n = 16;
  for (;;) {
    const t0 = performance.now();
    await sample(fn, isAsync, n);
    if (performance.now() - t0 > 10 || n > 1 << 24) return n;
    n *= 2;
  }
}

async function sample(fn: () => unknown, isAsync: boolean, n: number): Promise<number> {
  const t0 = performance.now();
  if (isAsync) for (let i = 0; i < n; i++) sink = await fn();
  else for (let i = 0; i < n; i++) sink = fn();
  return ((performance.now() - t0) * 1e6) / n;
}

export async function runMicro(rounds = 9): Promise<MicroCase[]> {
  const cases: MicroCase[] = [];
  const runnable: { index: number; fn: () => unknown; isAsync: boolean; n: number; samples: number[] }[] = [];
  const add = async (
    name: string,
    where: string,
    make: () => Promise<() => unknown> | (() => unknown),
    isAsync = false,
  ) => {
    try {
      const fn = await make();
      await fn(); // fails fast if the code under test changed shape
      runnable.push({ index: cases.length, fn, isAsync, n: await calibrate(fn, isAsync), samples: [] });
      cases.push({ name, where, nsPerOp: Number.NaN });
    } catch (err) {
      cases.push({
        name,
        where,
        nsPerOp: Number.NaN,
        skipped: err instanceof Error ? err.message.slice(0, 120) : String(err),
      });
    }
  };

  const protocol = await import("../../schema/protocol.ts");
  const chunk = JSON.stringify({
    type: "chunk",
    id: "3f1c9a4e-6b1d-4a55-9a53-0d6f4b8e2a11",
    text: "tok~tok~tok~tok~tok~tok~tok~",
    tokens: 7,
  });
  const done = JSON.stringify({
    type: "done",
    id: "3f1c9a4e-6b1d-4a55-9a53-0d6f4b8e2a11",
    finishReason: "length",
    usage: { promptTokens: 1, completionTokens: 8 },
    timings: { firstTokenMs: 0.1, totalMs: 0.4 },
  });
  await add("JSON.parse(chunk frame)", "hub, per agent frame (floor)", () => () => JSON.parse(chunk));
  await add("parseAgentFrame(chunk frame)", "hub, per agent frame (today: hand-checked fast path)", () => {
    const r = protocol.parseAgentFrame(chunk);
    if (!r.ok) throw new Error(r.reason);
    return () => protocol.parseAgentFrame(chunk);
  });
  await add(
    "AgentFrame.safeParse(JSON.parse(chunk frame))",
    "hub, per agent frame (the schema alone, before the fast path)",
    () => () => protocol.AgentFrame.safeParse(JSON.parse(chunk)),
  );
  await add(
    "AgentFrame.safeParse(JSON.parse(done frame))",
    "hub, once per request (the schema alone, before the fast path)",
    () => () => protocol.AgentFrame.safeParse(JSON.parse(done)),
  );
  await add(
    "parseAgentFrame(done frame)",
    "hub, once per request (today: hand-checked fast path)",
    () => () => protocol.parseAgentFrame(done),
  );

  const render = await import("../../gateway/render/render.ts");
  const openai = await import("../../gateway/render/openai-shapes.ts");
  const { sseMessage } = await import("../../gateway/render/sse.ts");
  const text = "tok~tok~tok~tok~tok~tok~tok~";
  const encoder = new TextEncoder();
  const shape = {
    api: "chat" as const,
    stream: true,
    includeUsage: false,
    requestId: "0b7e6a52-7a2f-4f43-9c55-5d1f4c8e2a10",
    receivedAt: Date.now(),
  };
  await add("chat chunk: prefix + JSON.stringify(text) + suffix, encode", "hub, per chunk (today)", () => {
    const renderer = render.streamRenderer(shape, "synthetic-a1");
    return () => encoder.encode(renderer.chunk(text));
  });
  await add("chat chunk: chatChunk() object + sseMessage, encode", "hub, per chunk (the obvious way)", () => {
    const identity = openai.chatIdentity(shape.requestId, "synthetic-a1", shape.receivedAt);
    return () => encoder.encode(sseMessage(openai.chatChunk(identity, { content: text }, null, false)));
  });
  await add("generate chunk event, encode", "hub, per chunk (today)", () => {
    const renderer = render.streamRenderer({ ...shape, api: "generate" }, "synthetic-a1");
    return () => encoder.encode(renderer.chunk(text));
  });

  const api = await import("../../schema/api.ts");
  const body = { model: "synthetic-a1", prompt: "bench", max_tokens: 8, stream: false };
  await add("GenerateRequest.safeParse(body)", "Worker, once per request", () => {
    if (!api.GenerateRequest.safeParse(body).success) throw new Error("GenerateRequest rejects the body");
    return () => api.GenerateRequest.safeParse(body);
  });
  const dispatchBody = {
    requestId: "3f1c9a4e-6b1d-4a55-9a53-0d6f4b8e2a11",
    model: "synthetic-a1",
    prompt: "bench",
    params: { maxTokens: 8 },
    response: { ...shape, api: "generate" as const, stream: false },
    subject: "bench-user-17",
    caller: "bench",
  };
  const dispatch = await import("../../schema/hub.ts");
  // Both must accept the body: timing a rejection would measure the wrong path.
  await add("DispatchRequest.safeParse(JSON.parse(body))", "hub, once per request", () => {
    const raw = JSON.stringify(dispatchBody);
    const parsed = dispatch.DispatchRequest.safeParse(JSON.parse(raw));
    if (!parsed.success) throw new Error(`DispatchRequest rejects the body: ${parsed.error.message}`);
    return () => dispatch.DispatchRequest.safeParse(JSON.parse(raw));
  });
  await add("isDispatchRequest(JSON.parse(body))", "hub, once per request (today)", () => {
    const raw = JSON.stringify(dispatchBody);
    if (!dispatch.isDispatchRequest(JSON.parse(raw))) throw new Error("isDispatchRequest rejects the body");
    return () => dispatch.isDispatchRequest(JSON.parse(raw));
  });
  await add("readConfig(env)", "Worker, per request (auth) and hub", async () => {
    const { readConfig } = await import("../../gateway/config.ts");
    const env = {
      ORCHARD_VERSION: "0.1.0",
      QUEUE_MAX: "64",
      QUEUE_TIMEOUT_MS: "30000",
      HEARTBEAT_INTERVAL_MS: "15000",
      HEALTH_INTERVAL_MS: "30000",
    };
    return () => readConfig(env);
  });

  const secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  const token = await new SignJWT({ role: "user" })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject("bench")
    .setIssuedAt()
    .setExpirationTime("1h")
    .sign(new TextEncoder().encode(secret));
  const options = { algorithms: ["HS256"], requiredClaims: ["exp", "sub"] };
  await add(
    "jwtVerify, key = fresh Uint8Array per request",
    "Worker, per request (before the key cache: the secret encoded each time)",
    () => () => jwtVerify(token, () => encoder.encode(secret), options),
    true,
  );
  const keyBytes = encoder.encode(secret);
  await add(
    "jwtVerify, key = the same Uint8Array every time",
    "Worker, per request (jose caches the imported key per key object)",
    () => () => jwtVerify(token, () => keyBytes, options),
    true,
  );
  const cryptoKey = await crypto.subtle.importKey("raw", keyBytes, { name: "HMAC", hash: "SHA-256" }, false, [
    "verify",
  ]);
  await add(
    "jwtVerify, key = CryptoKey imported once",
    "Worker, a token's first request (today: CryptoKey cached per secret)",
    () => () => jwtVerify(token, () => cryptoKey, options),
    true,
  );
  await add(
    "verified-token cache hit",
    "Worker, every later request with the same token (today)",
    async () => {
      const { VerifiedTokens } = await import("../../gateway/middleware/auth/verified-tokens.ts");
      const cache = new VerifiedTokens(4096);
      const settings = { secret, secrets: undefined, issuer: undefined, audience: undefined };
      cache.set(token, settings, {
        sub: "bench",
        role: "user",
        exp: Math.floor(Date.now() / 1000) + 3600,
        jti: undefined,
        reuseUntilMs: Number.POSITIVE_INFINITY,
      });
      return () => {
        if (cache.get(token, settings, Date.now()) === undefined) throw new Error("cache miss");
      };
    },
  );
  await add(
    "crypto.subtle.importKey(HMAC)",
    "what the fresh-key path pays each request",
    () => () =>
      crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
        "verify",
      ]),
    true,
  );

  await add(
    "one JSON log line (stringify + ISO date)",
    "Worker, per request (access log)",
    () => () =>
      JSON.stringify({
        level: "info",
        msg: "request",
        requestId: "3f1c9a4e",
        method: "POST",
        path: "/generate",
        status: 200,
        durationMs: 2,
        sub: "bench",
        ts: new Date().toISOString(),
      }),
  );
  await add("crypto.randomUUID()", "Worker, per request (request id)", () => () => crypto.randomUUID());

  const { PoolTelemetry } = await import("../../gateway/metrics/pool-telemetry.ts");
  const { TrafficWindows } = await import("../../gateway/metrics/traffic-windows.ts");
  const telemetry = new PoolTelemetry();
  const finished = {
    model: "synthetic-a1:0.0.0-local",
    route: "generate",
    outcome: "ok" as const,
    code: null,
    agent: "bench-synthetic-1",
    latencyMs: 1.7,
    ttftMs: 0.9,
    queueWaitMs: 0,
    promptTokens: 4,
    completionTokens: 16,
    rollout: { id: "dep-1", kind: "canary", arm: "b" },
  };
  await add(
    "PoolTelemetry.record(finished request)",
    "hub, once per request (Prometheus counters and histograms)",
    () => () => telemetry.record(finished),
  );
  const windows = new TrafficWindows(Date.now());
  const event = {
    model: finished.model,
    agent: finished.agent,
    ok: true,
    code: null,
    latencyMs: 1.7,
    ttftMs: 0.9,
    promptTokens: 4,
    completionTokens: 16,
    generationMs: 0.8,
  };
  await add(
    "TrafficWindows.record(finished request)",
    "hub, once per request (report and alert windows)",
    () => () => windows.record(event, Date.now()),
  );
  const { detectInjection } = await import("../../gateway/security/injection.ts");
  const prompt =
    "I'm planning a three-day trip to Lisbon in late May with my partner. We like food markets, " +
    "architecture and walking, but not museums all day. Could you suggest an itinerary with one " +
    "neighbourhood per morning, a lunch spot near each, and something to do in the evening? Our " +
    "budget is about 150 euros a day for the two of us, not counting the hotel, and we'd rather use " +
    "public transport than taxis. Also: is it worth taking the train to Sintra for half a day, or is " +
    "that too rushed? Please keep the answer short, as a list, with times.";
  await add(
    `detectInjection(a ${prompt.length}-character everyday prompt)`,
    "Worker, per request (the prompt screen: INJECTION_POLICY flag or block)",
    () => () => detectInjection(prompt),
  );
  const { OutputSanitizer } = await import("../../gateway/security/output-sanitizer.ts");
  const sanitizer = new OutputSanitizer({ redactSecrets: true, filters: [] });
  const piece = "tok~tok~tok~tok~tok~tok~tok~";
  await add(
    `OutputSanitizer.push(a ${piece.length}-character chunk), OUTPUT_REDACTION on`,
    "hub, per chunk (controls stripped, credentials looked for)",
    () => () => sanitizer.push(piece),
  );
  // Round-robin over the cases, so a busy moment on the machine hits every case alike.
  for (let round = 0; round < rounds; round++) {
    for (const r of runnable) r.samples.push(await sample(r.fn, r.isAsync, r.n));
  }
  for (const r of runnable) (cases[r.index] as MicroCase).nsPerOp = median(r.samples);
  void sink;
  return cases;
}

if (process.argv[1]?.endsWith("micro/run.ts")) {
  runMicro().then(
    (cases) => {
      if (process.send) process.send({ type: "result", cases });
      else
        for (const c of cases)
          console.log(
            `${c.nsPerOp.toFixed(0).padStart(8)} ns  ${c.name}  (${c.where})${c.skipped ? ` SKIPPED: ${c.skipped}` : ""}`,
          );
      process.exit(0);
    },
    (err: unknown) => {
      process.send?.({ type: "failed", error: String(err) });
      console.error(err);
      process.exit(1);
    },
  );
}
