// The synthetic token source over HTTP (child process), for the peer rows: every gateway compared
// there — a plain reverse proxy, the Portkey AI gateway and Orchard (through an agent's Ollama
// engine) — gets its tokens from this one server, so model speed cancels out. Tokens come from the
// bench's SyntheticTokenSource (bench/synthetic-engine.ts): the same "tok~" token and the same
// timing (as fast as possible, yielding to the event loop every 64 tokens) as the engine inside
// the bench agents. What one turn of the event loop produced goes out in one write.
//
// It speaks two APIs:
// - OpenAI's: POST /v1/chat/completions, JSON or SSE (`stream: true`), as OpenAI answers them.
// - Ollama's, as much as the agent's Ollama engine uses (node-agent/engines/ollama): GET
//   /api/version, /api/tags, /api/ps and POST /api/chat, /api/generate streaming NDJSON (or one
//   JSON object with `stream: false`), ending with `done`, `done_reason` and `eval_count`.
//
// With argv[2] "proxy" and argv[3] an origin, the same file is the peer rows' floor instead: a
// plain Node reverse proxy in front of that origin (plainProxy below), "one more HTTP hop".
//
// IPC out: {type:"ready", port}. IPC in: {type:"stop"}; {type:"stats"} -> {requests} (answered by id).
import { Agent, createServer, type IncomingMessage, request, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { SyntheticTokenSource } from "../synthetic-engine.ts";

/** The model the token server serves under both APIs (Ollama's tag adds ":latest"). */
export const HTTP_SOURCE_MODEL = "synthetic-http";

const source = new SyntheticTokenSource({ models: [{ name: HTTP_SOURCE_MODEL }] });
let requests = 0;

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    req.on("data", (d: Buffer) => parts.push(d));
    req.on("end", () => resolve(Buffer.concat(parts).toString()));
    req.on("error", reject);
  });
}

function json(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

/** "synthetic-http", "synthetic-http:latest" -> the engine's model name; anything else unknown. */
function modelOf(name: unknown): string | undefined {
  if (typeof name !== "string") return undefined;
  const bare = name.endsWith(":latest") ? name.slice(0, -":latest".length) : name;
  return bare === HTTP_SOURCE_MODEL ? bare : undefined;
}

/**
 * Runs one generation; `piece` is called per token, `flush` once per event-loop turn that produced
 * tokens (and at the end), so a stream is written as the engine produces it, one write per turn.
 */
async function generate(
  model: string,
  maxTokens: number,
  signal: AbortSignal,
  piece: (text: string) => void,
  flush: () => void,
): Promise<number> {
  const generation = source.generate({ model, prompt: "bench", params: { maxTokens } }, signal);
  let scheduled = false;
  for await (const p of generation) {
    piece(p.text);
    if (!scheduled) {
      scheduled = true;
      setImmediate(() => {
        scheduled = false;
        flush();
      });
    }
  }
  const result = await generation.result;
  flush();
  return result.usage.completionTokens;
}

/** A whole generation's text and token count. */
async function generateAll(model: string, maxTokens: number, signal: AbortSignal) {
  let text = "";
  const n = await generate(
    model,
    maxTokens,
    signal,
    (t) => (text += t),
    () => {},
  );
  return { text, n };
}

/** Streams a generation into `res`, `first` then one rendered piece per token, one write per turn. */
async function streamTo(
  res: ServerResponse,
  first: string,
  model: string,
  maxTokens: number,
  signal: AbortSignal,
  render: (token: string) => string,
): Promise<number> {
  let out = first;
  return generate(
    model,
    maxTokens,
    signal,
    (t) => (out += render(t)),
    () => {
      if (out !== "") res.write(out);
      out = "";
    },
  );
}

async function openAiChat(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = JSON.parse(await readBody(req)) as Record<string, unknown>;
  const model = modelOf(body.model);
  if (!model) return json(res, 404, { error: { message: `model ${String(body.model)} not found` } });
  const maxTokens = Number(body.max_completion_tokens ?? body.max_tokens ?? 16);
  const id = `chatcmpl-${++requests}`;
  const created = Math.floor(Date.now() / 1000);
  const aborted = new AbortController();
  res.on("close", () => aborted.abort());
  if (body.stream !== true) {
    const { text, n } = await generateAll(model, maxTokens, aborted.signal);
    return json(res, 200, {
      id,
      object: "chat.completion",
      created,
      model: HTTP_SOURCE_MODEL,
      choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "length" }],
      usage: { prompt_tokens: 1, completion_tokens: n, total_tokens: n + 1 },
    });
  }
  res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
  const head = `{"id":"${id}","object":"chat.completion.chunk","created":${created},"model":"${HTTP_SOURCE_MODEL}","choices":[{"index":0,`;
  const n = await streamTo(
    res,
    `data: ${head}"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n`,
    model,
    maxTokens,
    aborted.signal,
    (t) => `data: ${head}"delta":{"content":${JSON.stringify(t)}},"finish_reason":null}]}\n\n`,
  );
  res.end(
    `data: ${head}"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":${n},"total_tokens":${n + 1}}}\n\ndata: [DONE]\n\n`,
  );
}

async function ollamaGenerate(req: IncomingMessage, res: ServerResponse, chat: boolean): Promise<void> {
  const body = JSON.parse(await readBody(req)) as Record<string, unknown>;
  const model = modelOf(body.model);
  if (!model) return json(res, 404, { error: `model '${String(body.model)}' not found` });
  const options = (body.options ?? {}) as { num_predict?: number };
  const maxTokens = Number(options.num_predict ?? 128);
  const tag = `${HTTP_SOURCE_MODEL}:latest`;
  requests++;
  // A request without a prompt (generate) loads or unloads the model: no tokens.
  if (!chat && (body.prompt === undefined || body.prompt === "")) {
    return json(res, 200, {
      model: tag,
      created_at: new Date().toISOString(),
      response: "",
      done: true,
      done_reason: "load",
    });
  }
  const aborted = new AbortController();
  res.on("close", () => aborted.abort());
  const created = new Date().toISOString();
  const line = (text: string, done: boolean) =>
    chat
      ? `{"model":"${tag}","created_at":"${created}","message":{"role":"assistant","content":${JSON.stringify(text)}},"done":${done}`
      : `{"model":"${tag}","created_at":"${created}","response":${JSON.stringify(text)},"done":${done}`;
  const last = (n: number) => `,"done_reason":"length","prompt_eval_count":1,"eval_count":${n}}\n`;
  if (body.stream === false) {
    const { text, n } = await generateAll(model, maxTokens, aborted.signal);
    const out = `${line(text, true)}${last(n)}`;
    res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(out) });
    return void res.end(out);
  }
  res.writeHead(200, { "Content-Type": "application/x-ndjson" });
  const n = await streamTo(res, "", model, maxTokens, aborted.signal, (t) => `${line(t, false)}}\n`);
  res.end(`${line("", true)}${last(n)}`);
}

function ollamaTags(res: ServerResponse, running: boolean): void {
  const model = {
    name: `${HTTP_SOURCE_MODEL}:latest`,
    model: `${HTTP_SOURCE_MODEL}:latest`,
    modified_at: "2026-01-01T00:00:00Z",
    size: 1,
    digest: "0".repeat(64),
    details: { format: "gguf", family: "synthetic", parameter_size: "0B", quantization_level: "F32" },
    ...(running ? { expires_at: "2999-01-01T00:00:00Z", size_vram: 0, context_length: 1 << 20 } : {}),
  };
  json(res, 200, { models: [model] });
}

function tokenSource(req: IncomingMessage, res: ServerResponse): void {
  const route = `${req.method} ${(req.url ?? "/").split("?")[0]}`;
  const failed = (err: unknown) => {
    if (!res.headersSent) json(res, 400, { error: { message: String(err) } });
    else res.destroy();
  };
  switch (route) {
    case "POST /v1/chat/completions":
      return void openAiChat(req, res).catch(failed);
    case "POST /api/chat":
      return void ollamaGenerate(req, res, true).catch(failed);
    case "POST /api/generate":
      return void ollamaGenerate(req, res, false).catch(failed);
    case "GET /api/tags":
      return void ollamaTags(res, false);
    case "GET /api/ps":
      return void ollamaTags(res, true);
    case "GET /api/version":
      return void json(res, 200, { version: "0.9.0" });
    default:
      req.resume();
      return void json(res, 404, { error: `no route ${route}` });
  }
}

/**
 * The plain reverse proxy: method, path, headers and body forwarded to `upstream` over a keep-alive
 * agent, the answer piped back as it arrives (a stream stays a stream). No parsing, auth or routing.
 */
function plainProxy(upstream: URL): (req: IncomingMessage, res: ServerResponse) => void {
  // At most one upstream connection per concurrent request, kept alive like the load generator's.
  const agent = new Agent({ keepAlive: true, maxSockets: 1024, keepAliveMsecs: 60_000 });
  return (req, res) => {
    const out = request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: upstream.host },
        agent,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    out.on("error", (err) => {
      if (res.headersSent) return void res.destroy();
      res.writeHead(502, { "Content-Type": "text/plain" });
      res.end(`upstream failed: ${err.message}`);
    });
    res.on("close", () => {
      if (!res.writableFinished) out.destroy();
    });
    req.pipe(out);
  };
}

const role = process.argv[2] === "proxy" ? "proxy" : "source";
const server = createServer(role === "proxy" ? plainProxy(new URL(process.argv[3] as string)) : tokenSource);
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => {
  process.send?.({ type: "ready", port: (server.address() as AddressInfo).port });
});
process.on("disconnect", () => process.exit(0));
process.on("message", (m: { type?: string; id?: number }) => {
  if (m?.type === "stop") process.exit(0);
  if (m?.type === "stats") process.send?.({ id: m.id, requests });
});
