// Strips control characters and terminal escape sequences from generated text, so a caller that
// prints an answer to a terminal cannot be made to move its cursor, retitle its window, write a
// hyperlink (OSC 8) or its clipboard (OSC 52). Kept: "\n" and "\t". Removed: every other C0
// control (CR too: "\r" overwrites a terminal line), DEL, C1 controls, and whole sequences —
// CSI (ESC [ ... final, or 0x9B), OSC/DCS/SOS/PM/APC strings (to BEL or ST), two-character escapes
// and nF escapes (ESC ( B). Stateful, for streams: a sequence split across chunks is still removed.

enum State {
  Text,
  /** After ESC. */
  Escape,
  /** ESC followed by intermediates (0x20-0x2F): an nF escape, ended by one final byte. */
  EscapeIntermediate,
  /** CSI: parameters and intermediates until a final byte 0x40-0x7E. */
  Csi,
  /** OSC, DCS, SOS, PM, APC: a string until BEL (OSC) or ST (ESC \ or 0x9C). */
  Str,
  /** ESC inside a string: "\" ends it. */
  StrEscape,
}

/** A CSI or string longer than this is not a sequence a terminal would wait for: it ends there. */
const MAX_CSI_CHARS = 64;
const MAX_STRING_CHARS = 4096;

/** Anything the stripper would change; text without it passes untouched (the common case). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is this module's job.
const NEEDS_WORK = /[\x00-\x08\x0B-\x1F\x7F-\x9F]/;

export class ControlStripper {
  #state = State.Text;
  #length = 0;

  /** The chunk without controls and sequences (parts of a sequence left open wait in the state). */
  push(chunk: string): string {
    if (this.#state === State.Text && !NEEDS_WORK.test(chunk)) return chunk;
    let out = "";
    let kept = 0;
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i);
      if (this.#state === State.Text) {
        if (!isControl(c)) continue;
        out += chunk.slice(kept, i);
        kept = i + 1;
        this.#enter(c);
        continue;
      }
      // Inside a sequence: nothing of it is kept.
      kept = i + 1;
      if (!this.#step(c)) {
        // The character ended the sequence without being part of it: it is text again.
        kept = i;
        this.#state = State.Text;
        i -= 1;
      }
    }
    if (this.#state === State.Text) out += chunk.slice(kept);
    return out;
  }

  /** The stream ended: a sequence still open is dropped. */
  end(): void {
    this.#state = State.Text;
    this.#length = 0;
  }

  /** A control character in text: starts a sequence, or is dropped alone. */
  #enter(c: number): void {
    this.#length = 0;
    if (c === 0x1b) this.#state = State.Escape;
    else if (c === 0x9b) this.#state = State.Csi;
    else if (c === 0x9d || c === 0x90 || c === 0x98 || c === 0x9e || c === 0x9f) this.#state = State.Str;
    else this.#state = State.Text;
  }

  /** One character inside a sequence; false when it does not belong to it (it is then text). */
  #step(c: number): boolean {
    this.#length += 1;
    switch (this.#state) {
      case State.Escape:
        if (c === 0x5b) this.#state = State.Csi;
        else if (c === 0x5d || c === 0x50 || c === 0x58 || c === 0x5e || c === 0x5f) this.#state = State.Str;
        else if (c >= 0x20 && c <= 0x2f) this.#state = State.EscapeIntermediate;
        else if (c >= 0x30 && c <= 0x7e) this.#state = State.Text;
        else if (c === 0x1b) this.#state = State.Escape;
        else return false;
        return true;
      case State.EscapeIntermediate:
        if (c >= 0x20 && c <= 0x2f) return true;
        if (c >= 0x30 && c <= 0x7e) {
          this.#state = State.Text;
          return true;
        }
        return false;
      case State.Csi:
        if (c >= 0x40 && c <= 0x7e) {
          this.#state = State.Text;
          return true;
        }
        if (c >= 0x20 && c <= 0x3f && this.#length <= MAX_CSI_CHARS) return true;
        return false;
      case State.Str:
        if (c === 0x07 || c === 0x9c) {
          this.#state = State.Text;
          return true;
        }
        if (c === 0x1b) {
          this.#state = State.StrEscape;
          return true;
        }
        if (this.#length > MAX_STRING_CHARS) return false;
        return true;
      case State.StrEscape:
        // ESC \ is ST; any other ESC ends the string and starts a new escape.
        if (c === 0x5c) this.#state = State.Text;
        else {
          this.#state = State.Escape;
          return this.#step(c);
        }
        return true;
      case State.Text:
        return false;
    }
  }
}

function isControl(c: number): boolean {
  return (c < 0x20 && c !== 0x0a && c !== 0x09) || (c >= 0x7f && c <= 0x9f);
}

/** The whole of `text` stripped (a stripper of its own, ended). */
export function stripControls(text: string): string {
  const stripper = new ControlStripper();
  const out = stripper.push(text);
  stripper.end();
  return out;
}
