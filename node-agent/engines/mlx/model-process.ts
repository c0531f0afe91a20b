// One MLX model in a child process of the agent (child.ts), supervised: it is started on first use,
// its generations are streamed over IPC, and when it dies (a native abort in MLX, the OOM killer, a
// kill) its generations fail with MLX_PROCESS_EXITED and it is started again after a backoff that
// doubles with every crash in a row. The agent and every other model keep serving meanwhile.
import { type ChildProcess, fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import type { ModelId } from "../../../schema/model-id.ts";
import type { SamplingParams } from "../../../schema/protocol.ts";
import type { Logger } from "../../log.ts";
import type { GenerationPiece, GenerationRequest, GenerationResult } from "../engine.ts";
import { MlxEngineError } from "./errors.ts";
import { ChildMessage, type DeviceMemory, type ParentMessage } from "./ipc.ts";
import type { ComputeDtype } from "./model-loader.ts";

export interface MlxProcessOptions {
  name: ModelId;
  path: string;
  /** "auto": float32 on the CPU (the only dtype its matmul supports), as stored on Metal. */
  computeDtype: ComputeDtype | "auto";
  contextSize?: number;
  /** Concurrent generations; more wait in line. */
  capacity: number;
  restartBaseMs: number;
  restartMaxMs: number;
  /** How long starting the child and loading the model may take. */
  startTimeoutMs: number;
  /** Where the MLX runtime is installed (default: runtime/ beside this file). */
  runtimeDir?: string;
  log: Logger;
}

/** What a loaded model's child reported. */
export interface MlxModelStatus {
  pid: number;
  device: "cpu" | "gpu";
  metal: boolean;
  modelType: string;
  contextLength: number;
  weightBytes: number;
  kvBytesPerToken: number;
  computeDtype: ComputeDtype;
  quantization?: { bits: number; groupSize: number };
  memory: DeviceMemory;
  loadMs: number;
}

interface Running {
  emit: (piece: GenerationPiece) => void;
  resolve: (result: GenerationResult) => void;
  reject: (error: unknown) => void;
  /** Tokens streamed so far, for the usage of a generation cancelled when its child died. */
  streamed: number;
  cancelled: boolean;
}

const SHUTDOWN_GRACE_MS = 2_000;
const STDERR_TAIL = 2_000;

/** The child as a .ts file runs under tsx's loader; built to .js it runs as it is. */
function childCommand(): { entry: string; execArgv: string[] } {
  const self = import.meta.url;
  const ts = self.endsWith(".ts");
  const entry = new URL(`./child.${ts ? "ts" : "js"}`, self);
  const loader = ts ? ["--import", pathToFileURL(createRequire(self).resolve("tsx")).href] : [];
  return { entry: entry.pathname, execArgv: ["--expose-gc", ...loader] };
}

export class MlxModelProcess {
  private child?: ChildProcess;
  private status?: MlxModelStatus;
  /** The start in progress (or the restart waiting out its backoff). */
  private starting?: Promise<MlxModelStatus>;
  private readonly running = new Map<string, Running>();
  private readonly waiting: Array<() => void> = [];
  private readonly idleWaiters: Array<() => void> = [];
  private active = 0;
  /** Crashes since the last generation that finished: the backoff's exponent. */
  private crashes = 0;
  private restartTimer?: NodeJS.Timeout;
  private endBackoff?: () => void;
  private closed = false;
  private stderrTail = "";
  /** Times the child was started again after dying. */
  restarts = 0;

  constructor(private readonly options: MlxProcessOptions) {}

  get pid(): number | undefined {
    return this.status?.pid;
  }

  get loaded(): MlxModelStatus | undefined {
    return this.status;
  }

  /** Generations running or waiting. */
  get busy(): number {
    return this.active + this.waiting.length;
  }

  /** Starts the child and loads the model, unless that is done or under way. */
  start(): Promise<MlxModelStatus> {
    if (this.closed) return Promise.reject(this.closedError());
    if (this.status) return Promise.resolve(this.status);
    if (!this.starting) {
      const attempt = this.spawn();
      const forget = () => {
        if (this.starting === attempt) this.starting = undefined;
      };
      attempt.then(forget, forget);
      this.starting = attempt;
    }
    return this.starting;
  }

  async generate(
    request: GenerationRequest,
    params: SamplingParams,
    signal: AbortSignal,
    emit: (piece: GenerationPiece) => void,
  ): Promise<GenerationResult> {
    const cancelled: GenerationResult = {
      finishReason: "cancelled",
      usage: { promptTokens: 0, completionTokens: 0 },
    };
    if (signal.aborted) return cancelled;
    if (!(await this.acquire(signal))) return cancelled;
    try {
      await abortable(this.start(), signal);
      if (signal.aborted) return cancelled;
      return await this.run(request, params, signal, emit);
    } finally {
      this.release();
    }
  }

  /** Stops the child; running generations fail with `reason`. The process object is done afterwards. */
  async close(reason: MlxEngineError = this.closedError()): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.restartTimer);
    // Whoever waits for the restart hears that it will not come.
    this.endBackoff?.();
    for (const wake of this.waiting.splice(0)) wake();
    const child = this.child;
    this.failRunning(reason);
    this.status = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    this.sendTo(child, { type: "shutdown" });
    const timer = setTimeout(() => child.kill("SIGKILL"), SHUTDOWN_GRACE_MS);
    await exited;
    clearTimeout(timer);
  }

  private run(
    request: GenerationRequest,
    params: SamplingParams,
    signal: AbortSignal,
    emit: (piece: GenerationPiece) => void,
  ): Promise<GenerationResult> {
    const child = this.child;
    if (!child || !this.status) return Promise.reject(this.exitedError(null, null));
    const id = randomUUID();
    return new Promise<GenerationResult>((resolve, reject) => {
      const entry: Running = { emit, resolve, reject, streamed: 0, cancelled: false };
      const onAbort = () => {
        entry.cancelled = true;
        this.sendTo(child, { type: "cancel", id });
      };
      const settle =
        <T>(fn: (value: T) => void) =>
        (value: T) => {
          signal.removeEventListener("abort", onAbort);
          this.running.delete(id);
          fn(value);
        };
      entry.resolve = settle(resolve);
      entry.reject = settle(reject);
      this.running.set(id, entry);
      signal.addEventListener("abort", onAbort, { once: true });
      this.sendTo(child, {
        type: "generate",
        id,
        ...(request.prompt === undefined ? {} : { prompt: request.prompt }),
        ...(request.messages === undefined ? {} : { messages: request.messages }),
        params,
      });
    });
  }

  private async spawn(): Promise<MlxModelStatus> {
    const { entry, execArgv } = childCommand();
    const { log, name } = this.options;
    const child = fork(entry, [], {
      execArgv,
      env: {
        ...process.env,
        ...(this.options.runtimeDir ? { ORCHARD_MLX_RUNTIME_DIR: this.options.runtimeDir } : {}),
      },
      stdio: ["ignore", "ignore", "pipe", "ipc"],
    });
    this.child = child;
    this.stderrTail = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (text: string) => {
      this.stderrTail = (this.stderrTail + text).slice(-STDERR_TAIL);
    });
    const handshake = new Handshake(child, this.options.startTimeoutMs);
    child.on("message", (raw: unknown) => this.onMessage(child, raw, handshake));
    child.once("exit", (code, signal) => this.onExit(child, code, signal, handshake));
    try {
      const ready = await handshake.next("ready");
      this.sendTo(child, {
        type: "load",
        path: this.options.path,
        computeDtype:
          this.options.computeDtype === "auto"
            ? ready.device === "cpu"
              ? "float32"
              : "native"
            : this.options.computeDtype,
        ...(this.options.contextSize === undefined ? {} : { contextSize: this.options.contextSize }),
      });
      const loaded = await handshake.next("loaded");
      const { type: _, ...facts } = loaded;
      const status: MlxModelStatus = {
        pid: child.pid ?? 0,
        device: ready.device,
        metal: ready.metal,
        ...facts,
      };
      if (this.child !== child || this.closed) throw this.closedError();
      this.status = status;
      log.info("mlx model loaded", {
        model: name,
        pid: status.pid,
        device: status.device,
        loadMs: Math.round(status.loadMs),
      });
      return status;
    } catch (err) {
      if (this.child === child) child.kill("SIGKILL");
      throw err;
    } finally {
      handshake.done();
    }
  }

  private onMessage(child: ChildProcess, raw: unknown, handshake: Handshake): void {
    if (this.child !== child) return;
    const parsed = ChildMessage.safeParse(raw);
    if (!parsed.success) {
      this.options.log.error("mlx child sent an invalid message; killing it", {
        model: this.options.name,
        issue: parsed.error.issues[0]?.message,
      });
      child.kill("SIGKILL");
      return;
    }
    const message = parsed.data;
    switch (message.type) {
      case "ready":
      case "loaded":
        handshake.deliver(message);
        return;
      case "unavailable":
        handshake.fail(new MlxEngineError("MLX_UNAVAILABLE", message.message, true));
        return;
      case "load-failed":
        handshake.fail(
          new MlxEngineError(
            "MLX_LOAD_FAILED",
            `"${this.options.name}" did not load from ${this.options.path}: ${message.message}`,
          ),
        );
        return;
      case "piece": {
        const entry = this.running.get(message.id);
        if (!entry) return;
        entry.streamed += message.tokens;
        entry.emit({ text: message.text, tokens: message.tokens });
        return;
      }
      case "done":
        if (message.finishReason !== "cancelled") this.crashes = 0;
        this.running.get(message.id)?.resolve({ finishReason: message.finishReason, usage: message.usage });
        return;
      case "error":
        this.running
          .get(message.id)
          ?.reject(new MlxEngineError(message.code, message.message, message.retryable));
    }
  }

  private onExit(
    child: ChildProcess,
    code: number | null,
    signal: NodeJS.Signals | null,
    handshake: Handshake,
  ): void {
    if (this.child !== child) return;
    this.child = undefined;
    const wasLoaded = this.status !== undefined;
    this.status = undefined;
    const error = this.exitedError(code, signal);
    handshake.fail(
      wasLoaded ? error : new MlxEngineError("MLX_LOAD_FAILED", `${error.message} while loading`, true),
    );
    if (this.closed) return;
    const inFlight = this.running.size;
    this.failRunning(error);
    // A child that never loaded is not restarted: the next request starts one (and reports why).
    if (!wasLoaded) {
      this.options.log.warn("mlx child exited before its model loaded", {
        model: this.options.name,
        code,
        signal,
        stderr: this.stderrTail.trim().slice(-500),
      });
      return;
    }
    this.crashes++;
    const delay = Math.min(this.options.restartMaxMs, this.options.restartBaseMs * 2 ** (this.crashes - 1));
    this.options.log.warn("mlx child exited; restarting it", {
      model: this.options.name,
      pid: child.pid,
      code,
      signal,
      inFlight,
      restartInMs: delay,
      crashesInARow: this.crashes,
      stderr: this.stderrTail.trim().slice(-500),
    });
    this.starting = new Promise<void>((resolve) => {
      this.restartTimer = setTimeout(resolve, delay);
      this.endBackoff = resolve;
    }).then(() => {
      if (this.closed) throw this.closedError();
      this.starting = undefined;
      this.restarts++;
      return this.start().then(
        (status) => {
          this.options.log.info("mlx child restarted", {
            model: this.options.name,
            pid: status.pid,
            restarts: this.restarts,
          });
          return status;
        },
        (err: unknown) => {
          this.options.log.error("mlx child did not restart", { model: this.options.name, error: err });
          throw err;
        },
      );
    });
    this.starting.catch(() => {});
  }

  private failRunning(error: MlxEngineError): void {
    for (const entry of [...this.running.values()]) {
      // A generation its caller already gave up on ends as it would have: cancelled.
      if (entry.cancelled) {
        entry.resolve({
          finishReason: "cancelled",
          usage: { promptTokens: 0, completionTokens: entry.streamed },
        });
      } else {
        entry.reject(error);
      }
    }
  }

  private sendTo(child: ChildProcess, message: ParentMessage): void {
    if (child.connected) child.send(message, (err) => err && child.kill("SIGKILL"));
  }

  private async acquire(signal: AbortSignal): Promise<boolean> {
    while (this.active >= this.options.capacity) {
      if (this.closed) throw this.closedError();
      await new Promise<void>((resolve) => {
        const wake = () => {
          signal.removeEventListener("abort", wake);
          const at = this.waiting.indexOf(wake);
          if (at >= 0) this.waiting.splice(at, 1);
          resolve();
        };
        this.waiting.push(wake);
        signal.addEventListener("abort", wake, { once: true });
      });
      if (signal.aborted) return false;
    }
    if (this.closed) throw this.closedError();
    this.active++;
    return true;
  }

  private release(): void {
    this.active--;
    this.waiting.shift()?.();
    if (this.busy === 0) for (const idle of this.idleWaiters.splice(0)) idle();
  }

  /** Resolves once no generation runs or waits. */
  idle(): Promise<void> {
    if (this.busy === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private exitedError(code: number | null, signal: NodeJS.Signals | null): MlxEngineError {
    const how = signal ? `signal ${signal}` : `exit code ${code}`;
    return new MlxEngineError(
      "MLX_PROCESS_EXITED",
      `the MLX process for "${this.options.name}" died (${how})`,
      true,
    );
  }

  private closedError(): MlxEngineError {
    return new MlxEngineError("MLX_MODEL_UNLOADED", `model "${this.options.name}" was unloaded`, true);
  }
}

type HandshakeMessage = Extract<ChildMessage, { type: "ready" | "loaded" }>;

/** The child's start-up answers, in order, or the first failure (an exit, a timeout, a refusal). */
class Handshake {
  private readonly received: HandshakeMessage[] = [];
  private failure?: unknown;
  private waiter?: {
    type: HandshakeMessage["type"];
    resolve: (m: HandshakeMessage) => void;
    reject: (e: unknown) => void;
  };
  private readonly timer: NodeJS.Timeout;

  constructor(child: ChildProcess, timeoutMs: number) {
    this.timer = setTimeout(() => {
      this.fail(
        new MlxEngineError(
          "MLX_LOAD_FAILED",
          `the MLX process did not load its model within ${timeoutMs} ms`,
          true,
        ),
      );
      child.kill("SIGKILL");
    }, timeoutMs);
  }

  next<T extends HandshakeMessage["type"]>(type: T): Promise<Extract<HandshakeMessage, { type: T }>> {
    return new Promise((resolve, reject) => {
      const ready = this.received.findIndex((m) => m.type === type);
      if (ready >= 0)
        return resolve(this.received.splice(ready, 1)[0] as Extract<HandshakeMessage, { type: T }>);
      if (this.failure) return reject(this.failure);
      this.waiter = { type, resolve: resolve as (m: HandshakeMessage) => void, reject };
    });
  }

  deliver(message: HandshakeMessage): void {
    if (this.waiter?.type === message.type) {
      const { resolve } = this.waiter;
      this.waiter = undefined;
      resolve(message);
    } else {
      this.received.push(message);
    }
  }

  fail(error: unknown): void {
    this.failure ??= error;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(this.failure);
  }

  done(): void {
    clearTimeout(this.timer);
    this.failure ??= new Error("handshake over");
  }
}

/** Resolves as `promise` does, or as soon as `signal` fires (then with undefined). */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise<T | undefined>((resolve, reject) => {
    const onAbort = () => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}
