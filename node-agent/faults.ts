// Fault injection for tests and diagnostics (`--fault MODEL:KIND[=VALUE]`): an Engine wrapper
// that makes one model slow or failing, so an end-to-end canary has a truly bad version to find.
// Deterministic: `fail=R` fails the k-th request exactly when floor(k·R) grows, so any n requests
// see floor(n·R) failures, evenly spread, with no random numbers.
import type { ModelId } from "../schema/model-id.ts";
import { isModelId } from "../schema/model-id.ts";
import type { ModelInfo } from "../schema/protocol.ts";
import {
  type Engine,
  EngineError,
  type Generation,
  type GenerationPiece,
  type GenerationRequest,
  type GenerationResult,
  type LoadSpec,
  type UnloadOptions,
} from "./engines/engine.ts";

export type Fault =
  /** Waits `ms` before the model's first piece and before each later one (TTFT + ms, each token + ms). */
  | { model: string; kind: "slow"; ms: number }
  /** That share of the model's requests ends with ENGINE_ERROR (not retryable) before any token. */
  | { model: string; kind: "fail"; rate: number };

export const MAX_SLOW_MS = 60_000;

/** `name:1.2.0:slow=250`, `name:fail=0.5`, `name:fail` (= every request). */
export function parseFault(text: string): Fault | string {
  const colon = text.lastIndexOf(":");
  const model = text.slice(0, colon).trim();
  const [kind = "", value, ...rest] = text
    .slice(colon + 1)
    .trim()
    .split("=");
  if (colon <= 0 || !isModelId(model)) {
    return `"${text}" must be MODEL:slow=MS or MODEL:fail=RATE, MODEL a served model id (name or name:version)`;
  }
  if (rest.length > 0) return `"${text}" has more than one "="`;
  if (kind === "slow") {
    const ms = Number(value);
    if (value === undefined || !/^\d+$/.test(value) || ms < 1 || ms > MAX_SLOW_MS) {
      return `"${text}": slow needs whole milliseconds from 1 to ${MAX_SLOW_MS} (slow=250)`;
    }
    return { model, kind, ms };
  }
  if (kind === "fail") {
    const rate = value === undefined ? 1 : Number(value);
    if (value?.trim() === "" || !Number.isFinite(rate) || rate < 0 || rate > 1) {
      return `"${text}": fail needs a rate from 0 to 1 (fail=0.25)`;
    }
    return { model, kind, rate };
  }
  return `"${text}": unknown fault "${kind}" (slow=MS or fail=RATE)`;
}

/** Every --fault value; an error message for the first bad one, or for a kind given twice per model. */
export function parseFaults(values: readonly string[]): Fault[] | string {
  const faults: Fault[] = [];
  for (const value of values) {
    const fault = parseFault(value);
    if (typeof fault === "string") return fault;
    if (faults.some((f) => f.model === fault.model && f.kind === fault.kind)) {
      return `${fault.kind} is given twice for "${fault.model}"`;
    }
    faults.push(fault);
  }
  return faults;
}

export function describeFault(fault: Fault): string {
  return fault.kind === "slow"
    ? `${fault.model}: +${fault.ms} ms before each piece`
    : `${fault.model}: ${fault.rate * 100}% of requests fail with ENGINE_ERROR`;
}

/** A bare name's fault covers every version of it; a versioned one only that version. */
function covers(fault: Fault, model: string): boolean {
  return fault.model === model || (!fault.model.includes(":") && model.startsWith(`${fault.model}:`));
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

function failedGeneration(model: string): Generation {
  const error = new EngineError("ENGINE_ERROR", `fault injection: ${model} failed this request on purpose`);
  const result = Promise.reject<GenerationResult>(error);
  result.catch(() => {}); // the runner awaits it only after a normal end
  return {
    result,
    [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(error) }),
  };
}

function slowedGeneration(inner: Generation, ms: number, signal: AbortSignal): Generation {
  return {
    result: inner.result,
    async *[Symbol.asyncIterator](): AsyncIterator<GenerationPiece> {
      const pieces = inner[Symbol.asyncIterator]();
      try {
        while (true) {
          await sleep(ms, signal);
          const next = await pieces.next();
          if (next.done) return;
          yield next.value;
        }
      } finally {
        await pieces.return?.();
      }
    },
  };
}

/** The engine with the faults applied to the models they name; other models pass through untouched. */
export class FaultInjectingEngine implements Engine {
  readonly #requests = new Map<Fault, number>();

  constructor(
    private readonly engine: Engine,
    readonly faults: readonly Fault[],
  ) {}

  get name() {
    return this.engine.name;
  }

  listModels(): Promise<ModelInfo[]> {
    return this.engine.listModels();
  }

  load(model: ModelId, spec?: LoadSpec): Promise<ModelInfo> {
    return this.engine.load(model, spec);
  }

  unload(model: ModelId, options?: UnloadOptions): Promise<void> {
    return this.engine.unload(model, options);
  }

  close(): Promise<void> {
    return this.engine.close();
  }

  generate(request: GenerationRequest, signal: AbortSignal): Generation {
    const faults = this.faults.filter((fault) => covers(fault, request.model));
    for (const fault of faults) {
      if (fault.kind !== "fail") continue;
      const k = (this.#requests.get(fault) ?? 0) + 1;
      this.#requests.set(fault, k);
      if (Math.floor(k * fault.rate) > Math.floor((k - 1) * fault.rate))
        return failedGeneration(request.model);
    }
    const generation = this.engine.generate(request, signal);
    const slow = faults.find((fault) => fault.kind === "slow");
    return slow?.kind === "slow" ? slowedGeneration(generation, slow.ms, signal) : generation;
  }
}
