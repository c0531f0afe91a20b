// Checks a GGUF file's metadata before llama.cpp sees it: for some missing keys llama.cpp aborts
// the whole process instead of failing the load, so they are refused here with MODEL_LOAD_FAILED.
import { readGgufFileInfo } from "node-llama-cpp";
import { EngineError } from "../engine.ts";

/** Architectures without attention; for every other one llama.cpp aborts the process when these keys are missing. */
const RECURRENT_ARCHITECTURE = /^(mamba|rwkv|arwkv)/;

export async function checkGguf(path: string): Promise<void> {
  let architecture: string | undefined;
  let metadata: Record<string, unknown>;
  try {
    const info = await readGgufFileInfo(path, {
      sourceType: "filesystem",
      readTensorInfo: false,
      ignoreKeys: [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.scores",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
      ],
      logWarnings: false,
    });
    metadata = info.metadata as unknown as Record<string, unknown>;
    architecture = info.metadata.general?.architecture;
  } catch (err) {
    throw new EngineError("MODEL_LOAD_FAILED", `"${path}" is not a readable GGUF file`, false, {
      cause: err,
    });
  }
  if (!architecture) throw new EngineError("MODEL_LOAD_FAILED", `"${path}" names no architecture`);
  if (RECURRENT_ARCHITECTURE.test(architecture)) return;
  const hparams = metadata[architecture] as Record<string, unknown> | undefined;
  const attention = hparams?.attention as Record<string, unknown> | undefined;
  if (hparams?.feed_forward_length === undefined || attention?.head_count === undefined) {
    throw new EngineError(
      "MODEL_LOAD_FAILED",
      `"${path}" lacks ${architecture}.feed_forward_length or ${architecture}.attention.head_count`,
    );
  }
}
