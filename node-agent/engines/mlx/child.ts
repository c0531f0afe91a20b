// The MLX child process: one model in MLX, driven by the engine over IPC (ipc.ts). It exists so a
// native abort inside MLX (one is a float16 matmul on the CPU) ends this process, not the agent.
// Started by model-process.ts with --expose-gc; it exits when its parent goes away.
import { EngineError } from "../engine.ts";
import { checkRequest } from "../request.ts";
import { collectGarbage, decode } from "./decode.ts";
import { type ChildMessage, ParentMessage } from "./ipc.ts";
import { type LoadedMlxModel, loadMlxModel } from "./model-loader.ts";
import { renderPrompt } from "./prompt.ts";
import { firstLine, loadMlxRuntime, type MlxRuntime } from "./runtime.ts";

type Generate = Extract<ParentMessage, { type: "generate" }>;

function send(message: ChildMessage): void {
  process.send?.(message);
}

let runtime: MlxRuntime;
try {
  runtime = loadMlxRuntime(process.env.ORCHARD_MLX_RUNTIME_DIR || undefined);
  send({ type: "ready", device: runtime.device, metal: runtime.mx.metal.isAvailable() });
} catch (err) {
  send({ type: "unavailable", message: err instanceof Error ? err.message : String(err) });
  process.disconnect?.();
  process.exit(0);
}

let loaded: LoadedMlxModel | undefined;
/** Generations running, by id: set to true to cancel one. */
const cancelled = new Map<string, boolean>();

process.on("disconnect", () => process.exit(0));
process.on("message", (raw: unknown) => {
  const parsed = ParentMessage.safeParse(raw);
  if (!parsed.success) {
    // The parent is the only sender; a message it should never send is a bug there, not here.
    process.stderr.write(`mlx child: ignoring an invalid message: ${parsed.error.issues[0]?.message}\n`);
    return;
  }
  const message = parsed.data;
  switch (message.type) {
    case "load":
      void load(message);
      return;
    case "generate":
      void generate(message);
      return;
    case "cancel":
      if (cancelled.has(message.id)) cancelled.set(message.id, true);
      return;
    case "shutdown":
      process.exit(0);
  }
});

async function load(message: Extract<ParentMessage, { type: "load" }>): Promise<void> {
  const started = performance.now();
  try {
    loaded = await loadMlxModel(runtime, message.path, {
      computeDtype: message.computeDtype,
      ...(message.contextSize === undefined ? {} : { contextSize: message.contextSize }),
    });
  } catch (err) {
    send({ type: "load-failed", message: err instanceof Error ? err.message : String(err) });
    return;
  }
  collectGarbage("major");
  const { metal } = runtime.mx;
  send({
    type: "loaded",
    modelType: loaded.modelType,
    contextLength: loaded.contextLength,
    weightBytes: loaded.weightBytes,
    kvBytesPerToken: loaded.kvBytesPerToken,
    computeDtype: loaded.computeDtype,
    ...(loaded.quantization ? { quantization: loaded.quantization } : {}),
    memory: {
      activeBytes: metal.getActiveMemory(),
      peakBytes: metal.getPeakMemory(),
      cacheBytes: metal.getCacheMemory(),
    },
    loadMs: performance.now() - started,
  });
}

async function generate(message: Generate): Promise<void> {
  const { id } = message;
  cancelled.set(id, false);
  try {
    if (!loaded) throw new EngineError("ENGINE_ERROR", "the MLX process has no model loaded", true);
    const params = checkRequest({ model: "", ...message });
    const prompt = renderPrompt(loaded, message);
    if (prompt.length >= loaded.contextLength) {
      throw new EngineError(
        "CONTEXT_OVERFLOW",
        `the prompt is ${prompt.length} tokens; the model fits ${loaded.contextLength - 1} plus at least one generated token`,
      );
    }
    const result = await decode(
      runtime,
      loaded,
      prompt,
      params,
      () => cancelled.get(id) === true,
      (piece) => send({ type: "piece", id, ...piece }),
    );
    send({ type: "done", id, ...result });
  } catch (err) {
    const error =
      err instanceof EngineError
        ? err
        : new EngineError("ENGINE_ERROR", `MLX failed during generation: ${firstLine(err)}`, true);
    send({ type: "error", id, code: error.code, message: error.message, retryable: error.retryable });
  } finally {
    cancelled.delete(id);
    if (cancelled.size === 0) collectGarbage("major");
  }
}
