// A TEST DOUBLE of the Ollama server's HTTP API, for the Ollama engine's tests: a real node:http
// server that answers as Ollama's documentation (docs.ollama.com/api) and its handlers describe
// them — /api/version, /api/tags, /api/ps, and /api/generate and /api/chat streaming NDJSON lines
// ending with `done`, `done_reason`, `eval_count` and `prompt_eval_count`; errors as
// `{"error": "..."}` with Ollama's status codes (404 for a model not pulled, 400 for a bad request,
// 500 for a model that does not fit), or as an NDJSON line once a stream has begun; stop sequences
// held back and cut as Ollama's runner does; keep_alive loading and unloading. It is not Ollama and
// runs no model: each model's reply is a fixed, deterministic sequence of words.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface DoubleModel {
  /** The tag, as /api/tags lists it (`llama3.2:latest`). */
  name: string;
  family?: string;
  parameterSize?: string;
  quantization?: string;
  /** Bytes on disk (and in memory once loaded). */
  size?: number;
  /** Tokens the reply has before the model ends it (done_reason "stop"). Default 40. */
  replyTokens?: number;
  /** A load fails with Ollama's out-of-memory error. */
  outOfMemory?: boolean;
}

export interface RecordedRequest {
  method: string;
  path: string;
  body: Record<string, unknown> | undefined;
  /** The client closed the connection before the answer was complete. */
  aborted: boolean;
  /** Lines of a streamed answer written so far. */
  linesSent: number;
  /** The client's port: requests with the same one came over the same connection. */
  clientPort: number | undefined;
  /** Settles once the answer is complete or the connection closed. */
  finished: Promise<void>;
}

export interface DoubleOptions {
  models?: DoubleModel[];
  /** Delay before each streamed line. Default 1. */
  tokenDelayMs?: number;
  port?: number;
}

type Break = { afterTokens: number; how: "error-line" | "drop"; error?: string };

const WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"];
const OOM_ERROR = "model requires more system memory (12.5 GiB) than is available (3.1 GiB)";
const DEFAULT_NUM_CTX = 4096;

export class OllamaDouble {
  readonly requests: RecordedRequest[] = [];
  private models = new Map<string, DoubleModel>();
  /** tag -> when its keep_alive ends (epoch ms; Infinity for keep_alive < 0). */
  private readonly loaded = new Map<string, { until: number; numCtx: number }>();
  private readonly failures: { status: number; error: string }[] = [];
  private readonly breaks: Break[] = [];
  private server: Server;
  private port = 0;

  private constructor(private readonly options: DoubleOptions) {
    this.setModels(options.models ?? []);
    this.server = this.newServer();
  }

  static async start(options: DoubleOptions = {}): Promise<OllamaDouble> {
    const double = new OllamaDouble(options);
    await double.listen(options.port ?? 0);
    return double;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** What `ollama pull` / `ollama rm` would leave: exactly these tags. */
  setModels(models: DoubleModel[]): void {
    this.models = new Map(models.map((m) => [canonical(m.name), { ...m, name: canonical(m.name) }]));
  }

  /** The next generate or chat request fails before it streams, with this status and error. */
  failNext(status: number, error: string): void {
    this.failures.push({ status, error });
  }

  /** The next streamed generation breaks after `afterTokens` lines: an error line, or a dropped connection. */
  breakNext(brk: Break): void {
    this.breaks.push(brk);
  }

  isLoaded(tag: string): boolean {
    const entry = this.loaded.get(canonical(tag));
    return entry !== undefined && entry.until > Date.now();
  }

  /** The server goes away: it stops listening and every open connection is cut. */
  async stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  /** The server comes back on the same port (with what it had loaded forgotten, as after a restart). */
  async restart(): Promise<void> {
    this.loaded.clear();
    this.server = this.newServer();
    await this.listen(this.port);
  }

  close(): Promise<void> {
    return this.stop();
  }

  private newServer(): Server {
    return createServer((req, res) => void this.handle(req, res));
  }

  private listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, "127.0.0.1", () => {
        this.port = (this.server.address() as AddressInfo).port;
        resolve();
      });
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const raw = await readBody(req);
    let body: Record<string, unknown> | undefined;
    let done!: () => void;
    const record: RecordedRequest = {
      method: req.method ?? "GET",
      path: new URL(req.url ?? "/", "http://double").pathname,
      body: undefined,
      aborted: false,
      linesSent: 0,
      clientPort: req.socket.remotePort,
      finished: new Promise((resolve) => (done = resolve)),
    };
    this.requests.push(record);
    res.on("close", () => {
      if (!res.writableFinished) record.aborted = true;
      done();
    });
    try {
      body = raw === "" ? undefined : (JSON.parse(raw) as Record<string, unknown>);
    } catch (err) {
      return json(res, 400, { error: (err as Error).message });
    }
    record.body = body;
    switch (`${record.method} ${record.path}`) {
      case "GET /api/version":
        return json(res, 200, { version: "0.12.0" });
      case "GET /api/tags":
        return json(res, 200, { models: [...this.models.values()].map((m) => describeModel(m)) });
      case "GET /api/ps":
        return json(res, 200, { models: this.running() });
      case "POST /api/generate":
      case "POST /api/chat":
        return this.generate(record, body ?? {}, res);
      default:
        return json(res, 404, { error: "404 page not found" });
    }
  }

  private running() {
    const now = Date.now();
    return [...this.loaded]
      .filter(([, entry]) => entry.until > now)
      .flatMap(([tag, entry]) => {
        const m = this.models.get(tag);
        if (!m) return [];
        const until = entry.until === Number.POSITIVE_INFINITY ? now + 1e12 : entry.until;
        return [
          {
            ...describeModel(m),
            expires_at: new Date(until).toISOString(),
            size_vram: 0,
            context_length: entry.numCtx,
          },
        ];
      });
  }

  private async generate(record: RecordedRequest, body: Record<string, unknown>, res: ServerResponse) {
    const chat = record.path === "/api/chat";
    const tag = typeof body.model === "string" ? body.model : "";
    if (tag === "") return json(res, 400, { error: "model is required" });
    const model = this.models.get(canonical(tag));
    if (!model) {
      // GenerateHandler and ChatHandler word it differently; both are 404.
      return json(res, 404, {
        error: chat ? `model "${tag}" not found, try pulling it first` : `model '${tag}' not found`,
      });
    }
    const failure = this.failures.shift();
    if (failure) return json(res, failure.status, { error: failure.error });
    const options = (body.options ?? {}) as Record<string, unknown>;
    const keepAlive = parseKeepAlive(body.keep_alive);
    const messages = Array.isArray(body.messages) ? (body.messages as { content?: unknown }[]) : undefined;
    const prompt = chat
      ? (messages ?? []).map((m) => String(m.content ?? "")).join("\n")
      : typeof body.prompt === "string"
        ? body.prompt
        : "";
    const base = { model: tag, created_at: new Date().toISOString() };
    const empty = chat ? (messages ?? []).length === 0 : prompt === "";
    if (empty) {
      // A request without a prompt loads the model, or unloads it with keep_alive 0.
      if (keepAlive === 0) {
        this.loaded.delete(model.name);
        return json(res, 200, { ...base, ...reply(chat, ""), done: true, done_reason: "unload" });
      }
      if (model.outOfMemory) return json(res, 500, { error: OOM_ERROR });
      this.load(model, keepAlive, options);
      return json(res, 200, { ...base, ...reply(chat, ""), done: true, done_reason: "load" });
    }
    if (model.outOfMemory) return json(res, 500, { error: OOM_ERROR });
    this.load(model, keepAlive, options);

    const numPredict =
      typeof options.num_predict === "number" && options.num_predict >= 0 ? options.num_predict : -1;
    const stops = Array.isArray(options.stop) ? options.stop.map(String) : [];
    const promptTokens = countTokens(prompt) + (chat ? 3 * (messages ?? []).length : 0);
    const words = replyWords(prompt, model.replyTokens ?? 40);
    const brk = this.breaks.shift();
    const stream = body.stream !== false;
    if (stream) res.writeHead(200, { "Content-Type": "application/x-ndjson" });
    const write = (line: object) => {
      res.write(`${JSON.stringify(line)}\n`);
      record.linesSent += 1;
    };
    let pending = "";
    let text = "";
    let evalCount = 0;
    let doneReason = "stop";
    for (const word of words) {
      if (numPredict >= 0 && evalCount >= numPredict) {
        doneReason = "length";
        break;
      }
      await sleep(this.options.tokenDelayMs ?? 1);
      if (res.destroyed) return; // the client went away: Ollama stops generating
      if (brk && evalCount === brk.afterTokens) {
        if (brk.how === "drop") return void res.socket?.destroy();
        write({ error: brk.error ?? "an error was encountered while running the model" });
        return void res.end();
      }
      evalCount += 1;
      pending += word;
      // As Ollama's runner: text that completes a stop sequence ends the reply before it; text that
      // could still become one is held back; the rest goes out.
      const cut = firstStop(pending, stops);
      if (cut >= 0) {
        pending = pending.slice(0, cut);
        if (pending !== "" && stream) write({ ...base, ...reply(chat, pending), done: false });
        text += pending;
        pending = "";
        doneReason = "stop";
        break;
      }
      if (stops.some((s) => hasPrefixTail(pending, s))) continue;
      if (stream) write({ ...base, ...reply(chat, pending), done: false });
      text += pending;
      pending = "";
    }
    if (pending !== "") {
      if (stream) write({ ...base, ...reply(chat, pending), done: false });
      text += pending;
    }
    const final = {
      ...base,
      ...reply(chat, stream ? "" : text),
      done: true,
      done_reason: doneReason,
      total_duration: 1_000_000 * (evalCount + 1),
      load_duration: 1_000,
      prompt_eval_count: promptTokens,
      prompt_eval_duration: 1_000,
      eval_count: evalCount,
      eval_duration: 1_000_000 * evalCount,
    };
    if (stream) {
      write(final);
      res.end();
    } else json(res, 200, final);
  }

  private load(model: DoubleModel, keepAlive: number | undefined, options: Record<string, unknown>): void {
    const ms =
      keepAlive === undefined ? 5 * 60_000 : keepAlive < 0 ? Number.POSITIVE_INFINITY : keepAlive * 1000;
    const numCtx = typeof options.num_ctx === "number" ? options.num_ctx : DEFAULT_NUM_CTX;
    this.loaded.set(model.name, { until: Date.now() + ms, numCtx });
  }
}

/** `llama3.2` is `llama3.2:latest` to Ollama. */
function canonical(tag: string): string {
  return tag.slice(tag.lastIndexOf("/") + 1).includes(":") ? tag : `${tag}:latest`;
}

function describeModel(m: DoubleModel) {
  return {
    name: m.name,
    model: m.name,
    modified_at: "2026-11-30T12:00:00.000Z",
    size: m.size ?? 1_000_000,
    digest: "0".repeat(64),
    details: {
      parent_model: "",
      format: "gguf",
      family: m.family ?? "llama",
      families: [m.family ?? "llama"],
      parameter_size: m.parameterSize ?? "1B",
      quantization_level: m.quantization ?? "Q4_K_M",
    },
  };
}

function reply(chat: boolean, text: string) {
  return chat ? { message: { role: "assistant", content: text } } : { response: text };
}

/** keep_alive as seconds: a number is seconds, a string a Go duration ("5m", "30s", "-1"). */
function parseKeepAlive(value: unknown): number | undefined {
  if (typeof value === "number") return value;
  if (typeof value !== "string") return undefined;
  const match = /^(-?\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  if (!match) return undefined;
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600 }[match[2] ?? "s"] ?? 1;
  return Number(match[1]) * unit;
}

/** The reply: `tokens` words chosen by the prompt's hash, each one token with a leading space. */
function replyWords(prompt: string, tokens: number): string[] {
  let h = 2166136261;
  for (let i = 0; i < prompt.length; i++) h = Math.imul(h ^ prompt.charCodeAt(i), 16777619) >>> 0;
  return Array.from({ length: tokens }, (_, i) => ` ${WORDS[(h + i * 7) % WORDS.length]}`);
}

function countTokens(text: string): number {
  return Math.max(1, text.split(/\s+/).filter(Boolean).length);
}

function firstStop(text: string, stops: string[]): number {
  let cut = -1;
  for (const stop of stops) {
    const at = text.indexOf(stop);
    if (at >= 0 && (cut < 0 || at < cut)) cut = at;
  }
  return cut;
}

function hasPrefixTail(text: string, stop: string): boolean {
  for (let n = Math.min(stop.length - 1, text.length); n > 0; n--) {
    if (text.endsWith(stop.slice(0, n))) return true;
  }
  return false;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "Content-Type": "application/json; charset=utf-8" });
  res.end(JSON.stringify(body));
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    let data = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => (data += chunk));
    req.on("end", () => resolve(data));
    req.on("error", () => resolve(data));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
