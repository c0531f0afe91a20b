// The agent's in-flight table: one entry per running generation, keyed by request id, holding the
// link the request came in on and why it was aborted. The agent refuses work beyond its capacity
// instead of queueing it (the hub queues); drain and stop wait here for the table to empty.
import type { Link } from "./connection.ts";

/** Why a generation was aborted; decides what, if anything, the agent still sends for it. */
export type AbortCause = "cancel" | "deadline" | "disconnect" | "drain" | "stop";

export interface InFlight {
  readonly id: string;
  /** Everything for this request goes back on the link it came in on, or nowhere. */
  readonly link: Link;
  readonly signal: AbortSignal;
  /** Resolves once the generation is aborted. */
  readonly aborted: Promise<void>;
  /** The first abort's cause; later aborts change nothing. */
  readonly cause: AbortCause | undefined;
  abort(cause: AbortCause): void;
}

/** A generation may start, or why not: its id is still in flight, or every slot is taken. */
export type Admission = { entry: InFlight } | { refused: "duplicate" | "busy" };

class Entry implements InFlight {
  cause: AbortCause | undefined;
  readonly aborted: Promise<void>;
  private readonly controller = new AbortController();

  constructor(
    readonly id: string,
    readonly link: Link,
  ) {
    this.aborted = new Promise((resolve) =>
      this.controller.signal.addEventListener("abort", () => resolve(), { once: true }),
    );
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  abort(cause: AbortCause): void {
    if (this.controller.signal.aborted) return;
    this.cause = cause;
    this.controller.abort(new Error(`generation ${cause}`));
  }
}

export class InFlightTable {
  private readonly entries = new Map<string, InFlight>();
  private readonly waiters = new Set<() => void>();

  constructor(readonly capacity: number) {}

  get size(): number {
    return this.entries.size;
  }

  /**
   * An entry for a new generation. An id already here is refused even when it came on another link:
   * after a reconnect the old link's generation may still be winding down under that id.
   */
  admit(id: string, link: Link): Admission {
    if (this.entries.has(id)) return { refused: "duplicate" };
    if (this.entries.size >= this.capacity) return { refused: "busy" };
    const entry = new Entry(id, link);
    this.entries.set(id, entry);
    return { entry };
  }

  /** The entry for `id` if it came in on `link`: another session's cancel must not stop it. */
  onLink(id: string, link: Link): InFlight | undefined {
    const entry = this.entries.get(id);
    return entry?.link === link ? entry : undefined;
  }

  /** Aborts every generation, or only those that came in on `link`. */
  abortAll(cause: AbortCause, link?: Link): void {
    for (const entry of this.entries.values()) {
      if (link === undefined || entry.link === link) entry.abort(cause);
    }
  }

  /** Removes a generation that has ended and wakes whoever waits for the table to empty. */
  finish(entry: InFlight): void {
    if (this.entries.get(entry.id) === entry) this.entries.delete(entry.id);
    for (const wake of [...this.waiters]) wake();
  }

  /** Waits until nothing is in flight or `timeoutMs` passed; true if nothing is in flight. */
  async settled(timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    while (this.entries.size > 0) {
      const left = deadline - performance.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        this.waiters.add(wake);
      });
    }
    return true;
  }
}
