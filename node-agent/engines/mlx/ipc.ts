// The messages between the MLX engine (agent process) and the child process that runs one model in
// MLX, over Node's IPC channel. Both sides validate what they receive: a malformed message from the
// child is a broken child, and it is restarted like one that died.
//
//   parent -> child: load (once), generate, cancel, shutdown
//   child -> parent: ready | unavailable (once, at start), loaded | load-failed (answer to load),
//                    piece* then done | error (per generation id)
import { z } from "zod";
import { ChatMessage, FinishReason, SamplingParams, Usage } from "../../../schema/protocol.ts";
import type { EngineErrorCode } from "../engine.ts";

const id = z.string().min(1).max(128);

export const EngineErrorCodeSchema = z.enum([
  "MODEL_NOT_FOUND",
  "MODEL_LOAD_FAILED",
  "CONTEXT_OVERFLOW",
  "ENGINE_ERROR",
  "INVALID_REQUEST",
  "ENGINE_UNAVAILABLE",
  "OUT_OF_MEMORY",
]) satisfies z.ZodType<EngineErrorCode>;

export const ParentMessage = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("load"),
    path: z.string().min(1),
    computeDtype: z.enum(["float32", "native"]),
    contextSize: z.number().int().positive().optional(),
  }),
  z.object({
    type: z.literal("generate"),
    id,
    prompt: z.string().optional(),
    messages: z.array(ChatMessage).optional(),
    params: SamplingParams,
  }),
  z.object({ type: z.literal("cancel"), id }),
  z.object({ type: z.literal("shutdown") }),
]);
export type ParentMessage = z.infer<typeof ParentMessage>;

/** MLX's allocator (Metal's unified memory on a Mac; zeros on the CPU, where it does not count). */
export const DeviceMemory = z.object({
  activeBytes: z.number().nonnegative(),
  peakBytes: z.number().nonnegative(),
  cacheBytes: z.number().nonnegative(),
});
export type DeviceMemory = z.infer<typeof DeviceMemory>;

export const ChildMessage = z.discriminatedUnion("type", [
  z.object({ type: z.literal("ready"), device: z.enum(["cpu", "gpu"]), metal: z.boolean() }),
  z.object({ type: z.literal("unavailable"), message: z.string() }),
  z.object({
    type: z.literal("loaded"),
    modelType: z.string(),
    contextLength: z.number().int().positive(),
    weightBytes: z.number().int().nonnegative(),
    kvBytesPerToken: z.number().int().nonnegative(),
    computeDtype: z.enum(["float32", "native"]),
    quantization: z.object({ bits: z.number().int(), groupSize: z.number().int() }).optional(),
    memory: DeviceMemory,
    loadMs: z.number().nonnegative(),
  }),
  z.object({ type: z.literal("load-failed"), message: z.string() }),
  z.object({ type: z.literal("piece"), id, text: z.string(), tokens: z.number().int().nonnegative() }),
  z.object({ type: z.literal("done"), id, finishReason: FinishReason, usage: Usage }),
  z.object({
    type: z.literal("error"),
    id,
    code: EngineErrorCodeSchema,
    message: z.string(),
    retryable: z.boolean(),
  }),
]);
export type ChildMessage = z.infer<typeof ChildMessage>;
