// Context sequences for one llama.cpp model, handed to one generation at a time: one context per
// generation by default (deterministic, and faster on CPU), or sequences of one shared context.
import type { LlamaContext, LlamaContextSequence, LlamaModel } from "node-llama-cpp";
import type { EngineError } from "../engine.ts";

/**
 * Context sequences for one model, handed to one generation at a time. Contexts are created as
 * concurrent demand grows, up to capacity; beyond that generations wait in order.
 */
export class SequencePool {
  private readonly free: LlamaContextSequence[] = [];
  private readonly waiting: Array<{
    resolve: (s: LlamaContextSequence) => void;
    reject: (e: Error) => void;
  }> = [];
  private readonly inUse = new Set<LlamaContextSequence>();
  private creating = 0;
  private closedBy?: EngineError;
  /** Tokens each sequence holds. */
  contextSize = 0;
  private drained?: () => void;

  private constructor(
    private readonly capacity: number,
    private readonly createSequence: () => Promise<LlamaContextSequence>,
    /** Frees one sequence and whatever context only it uses. */
    private readonly disposeSequence: (sequence: LlamaContextSequence) => Promise<void>,
    /** Frees everything left. */
    private readonly disposeAll: () => Promise<void>,
  ) {}

  /** Creates the first context now, so load() fails if no context fits in memory. */
  static async create(
    model: LlamaModel,
    options: { contextSize: number; capacity: number; threads: number | undefined; shared: boolean },
  ): Promise<SequencePool> {
    const { contextSize, capacity, threads, shared } = options;
    let pool: SequencePool;
    if (shared) {
      const context = await model.createContext({ contextSize, sequences: capacity, threads });
      pool = new SequencePool(
        capacity,
        async () => context.getSequence(),
        async (sequence) => sequence.dispose(),
        () => context.dispose(),
      );
    } else {
      const contexts = new Set<LlamaContext>();
      pool = new SequencePool(
        capacity,
        async () => {
          const context = await model.createContext({ contextSize, sequences: 1, threads });
          contexts.add(context);
          return context.getSequence();
        },
        async (sequence) => {
          contexts.delete(sequence.context);
          await sequence.context.dispose();
        },
        async () => {
          await Promise.all([...contexts].map((context) => context.dispose()));
          contexts.clear();
        },
      );
    }
    const first = await pool.createSequence();
    pool.contextSize = first.contextSize;
    pool.free.push(first);
    return pool;
  }

  /** Resolves undefined if the signal fires first; rejects with the reason if the pool closes. */
  async acquire(signal: AbortSignal): Promise<LlamaContextSequence | undefined> {
    if (this.closedBy) throw this.closedBy;
    if (signal.aborted) return undefined;
    let sequence = this.free.pop();
    if (!sequence && this.free.length + this.inUse.size + this.creating < this.capacity) {
      this.creating++;
      try {
        sequence = await this.createSequence();
      } finally {
        this.creating--;
      }
      if (this.closedBy || signal.aborted) {
        await this.disposeSequence(sequence);
        if (this.closedBy) throw this.closedBy;
        return undefined;
      }
    }
    if (!sequence) {
      sequence = await new Promise<LlamaContextSequence | undefined>((resolve, reject) => {
        const waiter = {
          resolve: (s: LlamaContextSequence) => {
            signal.removeEventListener("abort", onAbort);
            resolve(s);
          },
          reject: (e: Error) => {
            signal.removeEventListener("abort", onAbort);
            reject(e);
          },
        };
        const onAbort = () => {
          const at = this.waiting.indexOf(waiter);
          if (at >= 0) this.waiting.splice(at, 1);
          resolve(undefined);
        };
        this.waiting.push(waiter);
        signal.addEventListener("abort", onAbort, { once: true });
      });
      // Handed over already marked in use.
      return sequence;
    }
    this.inUse.add(sequence);
    return sequence;
  }

  /** Wipes the sequence's state and gives it to the next waiting generation. */
  async release(sequence: LlamaContextSequence): Promise<void> {
    let reusable = !this.closedBy;
    if (reusable) {
      try {
        await sequence.clearHistory();
      } catch {
        reusable = false;
      }
    }
    if (reusable && !this.closedBy) {
      const next = this.waiting.shift();
      if (next) {
        next.resolve(sequence);
        return;
      }
      this.free.push(sequence);
    } else if (!this.closedBy) {
      await this.disposeSequence(sequence).catch(() => {});
    }
    this.inUse.delete(sequence);
    if (this.inUse.size === 0) this.drained?.();
  }

  /** Fails waiting generations, waits for the running ones (already told to stop), then frees everything. */
  async close(reason: EngineError): Promise<void> {
    this.closedBy = reason;
    for (const waiter of this.waiting.splice(0)) waiter.reject(reason);
    if (this.inUse.size > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    this.free.length = 0;
    await this.disposeAll();
  }
}
