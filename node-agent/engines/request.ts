// The checks every engine makes of a generation request before it starts, with the stable
// INVALID_REQUEST code, and of a runtime load (a registry version): the agent validates frames,
// but bench and tests call engines directly.
import { isModelId, type ModelId } from "../../schema/model-id.ts";
import { ChatMessage, SamplingParams } from "../../schema/protocol.ts";
import { EngineError, type GenerationRequest } from "./engine.ts";

/** The request's sampling parameters, once it has exactly one of prompt or messages. */
export function checkRequest(request: GenerationRequest): SamplingParams {
  if ((request.prompt === undefined) === (request.messages === undefined)) {
    throw new EngineError("INVALID_REQUEST", "give exactly one of prompt or messages");
  }
  if (request.messages && !ChatMessage.array().min(1).safeParse(request.messages).success) {
    throw new EngineError("INVALID_REQUEST", "messages must be a non-empty list of chat messages");
  }
  const params = SamplingParams.safeParse(request.params);
  if (!params.success) {
    const issue = params.error.issues[0];
    throw new EngineError("INVALID_REQUEST", `invalid params: ${issue?.path.join(".")}: ${issue?.message}`);
  }
  return params.data;
}

/**
 * A load with a spec (a registry version) needs a model id, and waits for no unload of the same
 * model: one in progress refuses it as retryable. The same rule for every engine.
 */
export function checkRuntimeLoad(model: string, unloading: ReadonlySet<string>): asserts model is ModelId {
  if (!isModelId(model)) throw new EngineError("MODEL_LOAD_FAILED", `"${model}" is not a model id`);
  if (unloading.has(model)) {
    throw new EngineError(
      "MODEL_LOAD_FAILED",
      `model "${model}" is being unloaded; load it again afterwards`,
      true,
    );
  }
}
