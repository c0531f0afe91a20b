// What the local Ollama server has, seen every few seconds: whether it answers, its tags
// (/api/tags) and what it holds in memory (/api/ps). The engine offers models from the latest look,
// so a server that goes away takes its models out of what the agent announces, and one that comes
// back brings them back; each change is logged once.
import { type ModelResponse, Ollama } from "ollama";
import type { Logger } from "../../log.ts";
import { errorMessage } from "../../log.ts";

/** A tag as /api/tags and /api/ps describe it (ps adds context_length in Ollama 0.9 and later). */
export interface OllamaTag {
  name: string;
  size: number;
  quantization?: string;
  /** From /api/ps: in memory now. */
  loaded: boolean;
  contextLength?: number;
  /** From /api/ps: bytes the loaded model takes (RAM and VRAM). */
  loadedBytes?: number;
}

export interface ServerWatchOptions {
  baseUrl: string;
  refreshMs: number;
  /** How long one look may take before the server counts as gone. */
  timeoutMs: number;
  log: Logger;
}

/** `llama3.2` and `llama3.2:latest` are the same tag to Ollama. */
export function canonicalTag(tag: string): string {
  const lastSegment = tag.slice(tag.lastIndexOf("/") + 1);
  return lastSegment.includes(":") ? tag : `${tag}:latest`;
}

export class OllamaServerWatch {
  /** undefined until the first look has finished. */
  private reachable: boolean | undefined;
  private version: string | undefined;
  private tagsByName = new Map<string, OllamaTag>();
  private timer: NodeJS.Timeout | undefined;
  private looking: Promise<void> | undefined;
  private readonly client: Ollama;

  constructor(private readonly options: ServerWatchOptions) {
    const { timeoutMs } = options;
    this.client = new Ollama({
      host: options.baseUrl,
      fetch: (input, init) => fetch(input, { ...init, signal: AbortSignal.timeout(timeoutMs) }),
    });
  }

  get up(): boolean {
    return this.reachable === true;
  }

  /** The server's tags as of the latest look (none while it does not answer). */
  get tags(): ReadonlyMap<string, OllamaTag> {
    return this.tagsByName;
  }

  tag(tag: string): OllamaTag | undefined {
    return this.tagsByName.get(canonicalTag(tag));
  }

  /** Looks now, then every refreshMs until stop(). */
  async start(): Promise<void> {
    await this.refresh();
    this.timer ??= setInterval(() => void this.refresh(), this.options.refreshMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One look; concurrent callers share it. */
  refresh(): Promise<void> {
    this.looking ??= this.look().finally(() => {
      this.looking = undefined;
    });
    return this.looking;
  }

  private async look(): Promise<void> {
    const { baseUrl, log } = this.options;
    let tags: ModelResponse[];
    let running: ModelResponse[];
    try {
      [{ models: tags }, { models: running }] = await Promise.all([this.client.list(), this.client.ps()]);
    } catch (err) {
      const was = this.reachable;
      this.reachable = false;
      this.version = undefined;
      if (was !== false) {
        const withdrawn = [...this.tagsByName.keys()];
        this.tagsByName = new Map();
        log.warn(
          was === undefined
            ? "no Ollama server answers; its models are offered once it does"
            : "the Ollama server went away; its models are withdrawn until it comes back",
          { url: baseUrl, error: errorMessage(err), withdrawn },
        );
      }
      return;
    }
    const next = new Map<string, OllamaTag>();
    const inMemory = new Map(running.map((m) => [canonicalTag(m.name), m]));
    for (const m of tags) {
      const name = canonicalTag(m.name);
      const ps = inMemory.get(name) as (ModelResponse & { context_length?: number }) | undefined;
      next.set(name, {
        name,
        size: m.size,
        ...(m.details?.quantization_level ? { quantization: m.details.quantization_level } : {}),
        loaded: ps !== undefined,
        ...(typeof ps?.context_length === "number" ? { contextLength: ps.context_length } : {}),
        ...(typeof ps?.size === "number" ? { loadedBytes: ps.size } : {}),
      });
    }
    const previous = this.tagsByName;
    if (this.reachable !== true) {
      this.version = await this.client.version().then(
        (v) => v.version,
        () => undefined,
      );
      this.tagsByName = next;
      this.reachable = true;
      log.info("the Ollama server answers; offering its models", {
        url: baseUrl,
        version: this.version,
        models: [...next.keys()],
      });
      return;
    }
    this.tagsByName = next;
    const added = [...next.keys()].filter((t) => !previous.has(t));
    const removed = [...previous.keys()].filter((t) => !next.has(t));
    if (added.length > 0 || removed.length > 0) {
      log.info("the Ollama server's models changed", { url: baseUrl, added, removed });
    }
  }
}
