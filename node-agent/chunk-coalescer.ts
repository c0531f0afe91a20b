// Turns the engine's token stream into few `chunk` frames: the first visible text at once (time to
// first token), the rest batched by time and size, so fast generations do not cost a frame per token.
import type { GenerationPiece } from "./engines/engine.ts";

/**
 * Batches generation pieces into chunk frames: the first visible text goes out at once (time to
 * first token), later pieces wait at most `flushMs` from the first unflushed one, or until
 * `maxBytes` are buffered. flush() before `done`; discard() after an abort.
 */
export class ChunkCoalescer {
  private text = "";
  private tokens = 0;
  private bytes = 0;
  private firstAt: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private sentText = false;
  private readonly flushMs: number;
  private readonly maxBytes: number;
  private readonly now: () => number;

  constructor(
    private readonly emit: (text: string, tokens: number) => void,
    {
      flushMs = 16,
      maxBytes = 4096,
      now = () => performance.now(),
    }: { flushMs?: number; maxBytes?: number; now?: () => number } = {},
  ) {
    this.flushMs = flushMs;
    this.maxBytes = maxBytes;
    this.now = now;
  }

  push(piece: GenerationPiece): void {
    this.text += piece.text;
    this.tokens += piece.tokens;
    this.bytes += Buffer.byteLength(piece.text);
    const now = this.now();
    this.firstAt ??= now;
    const firstText = !this.sentText && this.text.length > 0;
    // The elapsed-time check covers engines that yield many pieces without letting timers run.
    if (firstText || this.bytes >= this.maxBytes || now - this.firstAt >= this.flushMs) {
      this.flush();
      return;
    }
    this.timer ??= setTimeout(() => this.flush(), this.flushMs);
  }

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.text.length === 0 && this.tokens === 0) return;
    const { text, tokens } = this;
    this.text = "";
    this.tokens = 0;
    this.bytes = 0;
    this.firstAt = undefined;
    if (text.length > 0) this.sentText = true;
    this.emit(text, tokens);
  }

  discard(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.text = "";
    this.tokens = 0;
    this.bytes = 0;
    this.firstAt = undefined;
  }
}
