// Stop sequences on streamed text, for every engine: a tail that could still become a stop
// sequence is held back, and once one completes the text is cut before it (and nothing after it
// is sent). Tokens travel with the text they produced; those of a cut stop sequence go with the
// last piece before it.
import type { GenerationPiece } from "./engine.ts";

export interface StopCheckedPiece extends GenerationPiece {
  /** A stop sequence completed: this is the last piece, and generation should end. */
  stopped: boolean;
}

export class StopSequences {
  private held = "";
  private heldTokens = 0;

  constructor(private readonly stops: readonly string[]) {}

  /** Adds generated text and the tokens it took; returns what may be sent now. */
  push(text: string, tokens: number): StopCheckedPiece {
    this.held += text;
    this.heldTokens += tokens;
    let cut = -1;
    for (const stop of this.stops) {
      const at = this.held.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) return { ...this.take(cut), stopped: true };
    return { ...this.take(this.held.length - this.stopPrefixLength()), stopped: false };
  }

  /** Generation ended without a stop: everything held, plus a last `tail` not checked for stops. */
  end(tail: GenerationPiece = { text: "", tokens: 0 }): GenerationPiece {
    this.held += tail.text;
    this.heldTokens += tail.tokens;
    return this.take(this.held.length);
  }

  private take(length: number): GenerationPiece {
    if (length <= 0) return { text: "", tokens: 0 };
    const piece = { text: this.held.slice(0, length), tokens: this.heldTokens };
    this.held = this.held.slice(length);
    this.heldTokens = 0;
    return piece;
  }

  /** Length of the longest tail of the held text that is the start of some stop sequence. */
  private stopPrefixLength(): number {
    let longest = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, this.held.length); n > longest; n--) {
        if (this.held.endsWith(stop.slice(0, n))) {
          longest = n;
          break;
        }
      }
    }
    return longest;
  }
}
