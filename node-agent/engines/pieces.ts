// What every engine's generate() shares: a single-consumer stream of pieces, and the Generation
// built around an engine's run function, whose failure the iterator and `result` report alike.
import type { EngineError, Generation, GenerationPiece, GenerationResult } from "./engine.ts";

/** Produces one generation's pieces through `emit`; `halt` fires when the consumer stops early. */
export type GenerationRun = (
  emit: (piece: GenerationPiece) => void,
  halt: AbortController,
) => Promise<GenerationResult>;

/**
 * A Generation whose pieces come from `run`. An error from `run` ends the stream after the pieces
 * already queued and rejects `result`, both with the same EngineError (`asEngineError` of it).
 */
export function streamGeneration(
  run: GenerationRun,
  asEngineError: (err: unknown) => EngineError,
): Generation {
  const stream = new PieceStream();
  const halt = new AbortController();
  // A consumer that stops iterating early no longer wants the rest.
  stream.onReturn = () => halt.abort();
  const result = run((piece) => stream.push(piece), halt).then(
    (res) => {
      stream.end();
      return res;
    },
    (err: unknown) => {
      const error = asEngineError(err);
      stream.end(error);
      throw error;
    },
  );
  // The iterator reports the same failure; without this a caller that only iterates would crash
  // the process with an unhandled rejection.
  result.catch(() => {});
  return { result, [Symbol.asyncIterator]: () => stream };
}

/** A single-consumer queue of pieces that ends normally or with an error, after the queued pieces. */
class PieceStream implements AsyncIterableIterator<GenerationPiece> {
  onReturn?: () => void;
  private readonly queue: GenerationPiece[] = [];
  private ended = false;
  private error?: EngineError;
  private wake?: () => void;

  push(piece: GenerationPiece) {
    this.queue.push(piece);
    this.wake?.();
  }

  end(error?: EngineError) {
    this.ended = true;
    this.error = error;
    this.wake?.();
  }

  async next(): Promise<IteratorResult<GenerationPiece>> {
    for (;;) {
      const piece = this.queue.shift();
      if (piece) return { value: piece, done: false };
      if (this.error) {
        const error = this.error;
        this.error = undefined;
        throw error;
      }
      if (this.ended) return { value: undefined, done: true };
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  async return(): Promise<IteratorResult<GenerationPiece>> {
    if (!this.ended) this.onReturn?.();
    this.queue.length = 0;
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator]() {
    return this;
  }
}
