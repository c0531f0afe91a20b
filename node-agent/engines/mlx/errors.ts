// The MLX engine's errors: an EngineError (whose code the agent maps to the wire) that also carries
// a stable `mlxCode` saying which MLX failure it was, for logs, tests and callers that branch on it.
import { EngineError, type EngineErrorCode } from "../engine.ts";

/** Failures only the MLX engine has, each with the engine code it travels as. */
const MLX_FAILURES = {
  /** The model's child process died (a native abort in MLX, out of memory, killed): it restarts. */
  MLX_PROCESS_EXITED: "ENGINE_ERROR",
  /** node-mlx is not installed here or its binary does not load (missing BLAS on Linux). */
  MLX_UNAVAILABLE: "ENGINE_UNAVAILABLE",
  /** The folder is no model MLX can load, or its child could not load it. */
  MLX_LOAD_FAILED: "MODEL_LOAD_FAILED",
  /** The model was unloaded (or the engine closed) while the generation ran. */
  MLX_MODEL_UNLOADED: "ENGINE_ERROR",
} as const satisfies Record<string, EngineErrorCode>;

export type MlxFailure = keyof typeof MLX_FAILURES;

export class MlxEngineError extends EngineError {
  /** The MLX failure, or for an error the child reported about one request, the engine code itself. */
  readonly mlxCode: MlxFailure | EngineErrorCode;

  constructor(
    code: MlxFailure | EngineErrorCode,
    message: string,
    retryable = false,
    options?: { cause?: unknown },
  ) {
    super(
      code in MLX_FAILURES ? MLX_FAILURES[code as MlxFailure] : (code as EngineErrorCode),
      message,
      retryable,
      options,
    );
    this.name = "MlxEngineError";
    this.mlxCode = code;
  }
}
