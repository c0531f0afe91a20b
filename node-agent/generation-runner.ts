// Runs one admitted generation: hands the request to the engine, turns its pieces into coalesced
// `chunk` frames under backpressure, stops at the request's deadline, and ends the request with
// `done` or `error` — or, after an abort, with what the abort's cause calls for.
import type { DoneFrame, GenerateFrame, Usage } from "../schema/protocol.ts";
import { errorFrame, sendFrame, toErrorFrame } from "./agent-frames.ts";
import { ChunkCoalescer } from "./chunk-coalescer.ts";
import type { Engine, GenerationResult } from "./engines/engine.ts";
import type { InFlight } from "./in-flight.ts";
import { errorMessage, type Logger } from "./log.ts";

/** How long a cancelled generation's usage is awaited before the agent reports its own count. */
export const CANCEL_USAGE_GRACE_MS = 2_000;
/** setTimeout's largest delay; longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface GenerationRunnerOptions {
  engine: Engine;
  log: Logger;
  /** Coalescing window for chunk frames, from the first unflushed piece. */
  flushMs: number;
  /** Flush a chunk as soon as this many bytes are buffered. */
  flushBytes: number;
  /** Stop pulling from the engine while the socket buffers more than this. */
  maxBufferedBytes: number;
  /** Hand a frame's `format` to the engine (false: --structured-output off; the gateway validates alone). */
  passFormat: boolean;
  /** Told of each generation that ended with `done` unaborted, for the health reporter's tokens per second. */
  onFinished: (generation: Pick<DoneFrame, "finishReason" | "usage" | "timings">) => void;
}

type Timings = () => { firstTokenMs: number | null; totalMs: number };

export class GenerationRunner {
  constructor(private readonly options: GenerationRunnerOptions) {}

  /** Resolves once the request has ended and its last frame, if any, was sent. */
  async run(frame: GenerateFrame, entry: InFlight): Promise<void> {
    const { engine, log, maxBufferedBytes, onFinished } = this.options;
    const { id, link, signal } = entry;
    const startedAt = performance.now();
    let firstTokenMs: number | null = null;
    let completionTokens = 0;
    const coalescer = new ChunkCoalescer(
      (text, tokens) => sendFrame(link, { type: "chunk", id, text, tokens }),
      { flushMs: this.options.flushMs, maxBytes: this.options.flushBytes },
    );
    // timeoutMs is relative, so a Mac whose clock is off does not stop work early or late; the
    // absolute deadline is the fallback for hubs that do not send it.
    const timeLeftMs =
      frame.timeoutMs ?? (frame.deadline === undefined ? undefined : frame.deadline - Date.now());
    const deadlineTimer =
      timeLeftMs === undefined
        ? undefined
        : setTimeout(() => entry.abort("deadline"), clampDelay(timeLeftMs));
    const timings: Timings = () => ({ firstTokenMs, totalMs: round1(performance.now() - startedAt) });

    let result: Promise<GenerationResult> | undefined;
    try {
      const generation = engine.generate(
        {
          model: frame.model,
          ...(frame.prompt === undefined ? {} : { prompt: frame.prompt }),
          ...(frame.messages === undefined ? {} : { messages: frame.messages }),
          ...(frame.format === undefined || !this.options.passFormat ? {} : { format: frame.format }),
          params: frame.params,
        },
        signal,
      );
      result = generation.result;
      result.catch(() => {}); // awaited below; never an unhandled rejection if iteration throws first
      for await (const piece of generation) {
        if (signal.aborted) break;
        firstTokenMs ??= round1(performance.now() - startedAt);
        completionTokens += piece.tokens;
        coalescer.push(piece);
        if (link.bufferedAmount > maxBufferedBytes) {
          // Backpressure: a slow hub must not make the agent buffer without bound.
          await Promise.race([link.whenWritable(maxBufferedBytes), entry.aborted]);
          if (signal.aborted) break;
        }
      }
      if (!signal.aborted) {
        coalescer.flush();
        const { finishReason, usage } = await result;
        const done = { finishReason, usage, timings: timings() };
        sendFrame(link, { type: "done", id, ...done });
        onFinished(done);
        log.info("generation done", { id, finishReason, completionTokens: usage.completionTokens });
        return;
      }
    } catch (err) {
      if (!signal.aborted) {
        coalescer.flush();
        sendFrame(link, toErrorFrame(id, err));
        log.warn("generation failed", {
          id,
          error: errorMessage(err),
          code: (err as { code?: unknown }).code,
        });
        return;
      }
    } finally {
      clearTimeout(deadlineTimer);
      coalescer.discard();
    }
    await this.reportAborted(entry, result, completionTokens, timings);
  }

  /** After an abort: `done` cancelled for cancel/deadline, a retryable error for drain, else nothing. */
  private async reportAborted(
    entry: InFlight,
    result: Promise<GenerationResult> | undefined,
    completionTokens: number,
    timings: Timings,
  ): Promise<void> {
    const { id, link, cause } = entry;
    this.options.log.info("generation aborted", { id, cause });
    switch (cause) {
      case "cancel":
      case "deadline": {
        const usage = await usageAfterAbort(result, completionTokens);
        sendFrame(link, { type: "done", id, finishReason: "cancelled", usage, timings: timings() });
        return;
      }
      case "drain":
        sendFrame(link, errorFrame(id, "AGENT_DRAINING", "agent drain deadline reached", true));
        return;
      default: // disconnect / stop: the socket is gone or going; nobody is listening for this id
        return;
    }
  }
}

/** The engine's own usage if it settles within the grace period, else the tokens counted here. */
async function usageAfterAbort(
  result: Promise<GenerationResult> | undefined,
  completionTokens: number,
): Promise<Usage> {
  const counted: Usage = { promptTokens: 0, completionTokens };
  if (!result) return counted;
  let timer: NodeJS.Timeout | undefined;
  const grace = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), CANCEL_USAGE_GRACE_MS);
  });
  try {
    const settled = await Promise.race([result, grace]);
    return settled?.usage ?? counted;
  } catch {
    return counted;
  } finally {
    clearTimeout(timer);
  }
}

function clampDelay(ms: number): number {
  return Math.min(MAX_TIMER_MS, Math.max(0, ms));
}

function round1(ms: number): number {
  return Math.round(ms * 10) / 10;
}
