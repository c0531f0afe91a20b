// Pure fast-check arbitraries for fuzzing the agent socket (docs/fuzzing.md): a rogue agent's
// actions — valid frames of every type in any order, mutated and malformed frames, binary and
// oversized messages, frames for request ids it was or was never given, callers' requests for what
// it serves, and pauses. Each action is a small printable recipe; renderAction() makes the message.
import fc from "fast-check";
import { AgentErrorCode, HEARTBEAT_PING, MAX_FRAME_BYTES } from "../../schema/protocol.ts";

/** Which model a frame names: the ones the fuzz serves, another, or a name the schema refuses. */
export type ModelPick = "shared" | "rogue-only" | "other" | "invalid";
/** A request id: the n-th `generate` the rogue got (mod how many), one it never got, or a bad id. */
export type Target = { req: number } | { unknown: true } | { bad: "" | "long" | "number" };
export type Count = number | "max" | "max+1" | "huge";
export type Text = { n: number; ch: string };

export type FrameAction =
  | {
      k: "hello";
      agentId: "own" | "other";
      protocol: { min: number | null; max: number };
      models: readonly ModelPick[];
      capacity: number;
      capabilities: readonly string[] | null;
    }
  | { k: "health"; models: readonly ModelPick[] | null; cache: boolean; inFlight: number }
  | { k: "chunk"; target: Target; text: Text; tokens: Count }
  | { k: "done"; target: Target; finishReason: string; completion: Count }
  | { k: "error"; target: Target; code: AgentErrorCode | "BOGUS"; retryable: boolean }
  | { k: "loaded"; model: ModelPick }
  | { k: "unloaded"; model: ModelPick }
  | { k: "load_failed"; model: ModelPick; code: string }
  | { k: "draining"; deadlineMs: number }
  | { k: "mutate"; of: FrameAction; field: number; how: "wrong-type" | "delete" | "extra" | "null" }
  | { k: "raw"; text: string }
  | { k: "huge"; over: boolean }
  | { k: "binary"; bytes: readonly number[] | "a-valid-frame" }
  | { k: "request"; model: "shared" | "rogue-only"; stream: boolean }
  | { k: "pause"; ms: number };

const modelPick = fc.constantFrom<ModelPick>("shared", "shared", "rogue-only", "other", "invalid");

const count: fc.Arbitrary<Count> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom<Count>(0, 1, 1, 2, "max") },
  { weight: 1, arbitrary: fc.constantFrom<Count>("max+1", "huge", -1, 1.5) },
);

const text: fc.Arbitrary<Text> = fc.record({
  n: fc.constantFrom(0, 5, 5, 20, 256, 257, 1025, 100_000),
  ch: fc.constantFrom("a", "é", "😀", "\ud800", "\u0000", "\u001b[31m", "\n", "<|im_end|>"),
});

const target: fc.Arbitrary<Target> = fc.oneof(
  { weight: 6, arbitrary: fc.nat({ max: 3 }).map((req) => ({ req })) },
  { weight: 2, arbitrary: fc.constant({ unknown: true } as const) },
  { weight: 1, arbitrary: fc.constantFrom("", "long", "number").map((bad) => ({ bad }) as Target) },
);

/** Every code an agent may send (from the schema), and one it may not. */
const ERROR_CODES: (AgentErrorCode | "BOGUS")[] = [...AgentErrorCode.options, "BOGUS"];

const hello: fc.Arbitrary<FrameAction> = fc.record({
  k: fc.constant("hello" as const),
  agentId: fc.constantFrom<"own" | "other">("own", "own", "own", "other"),
  protocol: fc.constantFrom(
    { min: 1, max: 2 },
    { min: 1, max: 2 },
    { min: null, max: 2 },
    { min: null, max: 1 },
    { min: 2, max: 3 },
    { min: 3, max: 5 },
    { min: null, max: 0 },
    { min: null, max: 99 },
    { min: 2, max: 1 },
  ),
  models: fc.array(modelPick, { minLength: 0, maxLength: 3 }),
  capacity: fc.constantFrom(1, 2, 8, 1024, 0, 1025),
  capabilities: fc.constantFrom(
    null,
    [],
    ["load"],
    ["load", "artifacts", "structured_output"],
    ["teleport"],
    [""],
  ),
});

/** Frames the schema accepts (mostly): each agent frame type with plausible and odd values. */
const validish: fc.Arbitrary<FrameAction> = fc.oneof(
  { weight: 3, arbitrary: hello },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant("health" as const),
      models: fc.option(fc.array(modelPick, { maxLength: 3 }), { nil: null }),
      cache: fc.boolean(),
      inFlight: fc.constantFrom(0, 1, 5, -1),
    }),
  },
  { weight: 6, arbitrary: fc.record({ k: fc.constant("chunk" as const), target, text, tokens: count }) },
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant("done" as const),
      target,
      finishReason: fc.constantFrom("stop", "length", "cancelled", "exploded"),
      completion: count,
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant("error" as const),
      target,
      code: fc.constantFrom(...ERROR_CODES),
      retryable: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("loaded" as const), model: modelPick }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("unloaded" as const), model: modelPick }) },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant("load_failed" as const),
      model: modelPick,
      code: fc.constantFrom("ARTIFACT_HASH_MISMATCH", "INSUFFICIENT_MEMORY", "NOPE"),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ k: fc.constant("draining" as const), deadlineMs: fc.constantFrom(0, 1000, -5) }),
  },
);

const RAW_TEXTS = [
  "",
  " ",
  HEARTBEAT_PING,
  "ping ",
  "pong",
  "null",
  "[]",
  "42",
  '"hello"',
  "{",
  "{}",
  '{"type":"nope"}',
  '{"type":"chunk"}',
  '{"type":"welcome","protocol":2}',
  '{"type":"generate","id":"x"}',
  '{"type":"hello"}',
  '{"type":null}',
  '{"type":["chunk"]}',
  '{"__proto__":{"type":"chunk"}}',
  '{"type":"chunk","type":"done"}',
  "not json at all",
];

export const actionArb: fc.Arbitrary<FrameAction> = fc.oneof(
  { weight: 12, arbitrary: validish },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant("mutate" as const),
      of: validish,
      field: fc.nat({ max: 7 }),
      how: fc.constantFrom("wrong-type", "delete", "extra", "null"),
    }),
  },
  { weight: 2, arbitrary: fc.constantFrom(...RAW_TEXTS).map((t) => ({ k: "raw", text: t }) as const) },
  { weight: 1, arbitrary: fc.boolean().map((over) => ({ k: "huge", over }) as const) },
  {
    weight: 1,
    arbitrary: fc
      .oneof(
        fc.constant("a-valid-frame" as const),
        fc.constantFrom([0xff, 0xfe], [0xc0, 0xaf], [0x7b, 0x7d], [0xed, 0xa0, 0x80], []),
      )
      .map((bytes) => ({ k: "binary", bytes }) as const),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant("request" as const),
      model: fc.constantFrom<"shared" | "rogue-only">("shared", "rogue-only"),
      stream: fc.boolean(),
    }),
  },
  { weight: 2, arbitrary: fc.constantFrom(0, 50, 300, 1200).map((ms) => ({ k: "pause", ms }) as const) },
);

const request: fc.Arbitrary<FrameAction> = fc.record({
  k: fc.constant("request" as const),
  model: fc.constantFrom<"shared" | "rogue-only">("shared", "rogue-only", "rogue-only"),
  stream: fc.boolean(),
});

/**
 * Frames the schema accepts, with values an agent that keeps to the protocol might send (and some
 * that break a request's limits): what a session is made of, so it gets past its first frames.
 */
const wellFormed: fc.Arbitrary<FrameAction> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      k: fc.constant("chunk" as const),
      target: fc.nat({ max: 3 }).map((req) => ({ req })),
      text: fc.record({
        n: fc.constantFrom(0, 3, 20, 300),
        ch: fc.constantFrom("a", "é", "😀", "\u001b[31m"),
      }),
      tokens: fc.constantFrom<Count>(0, 1, 1, 2, "max", "max+1"),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant("done" as const),
      target: fc.nat({ max: 3 }).map((req) => ({ req })),
      finishReason: fc.constantFrom("stop", "length", "cancelled"),
      completion: fc.constantFrom<Count>(0, 1, "max", "max+1"),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant("error" as const),
      target: fc.nat({ max: 3 }).map((req) => ({ req })),
      code: fc.constantFrom(...ERROR_CODES.filter((c) => c !== "BOGUS")),
      retryable: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant("health" as const),
      models: fc.option(fc.constantFrom<ModelPick[]>(["shared"], ["rogue-only", "other"]), { nil: null }),
      cache: fc.boolean(),
      inFlight: fc.constantFrom(0, 1),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant("loaded" as const),
      model: fc.constantFrom<ModelPick>("rogue-only", "other"),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant("unloaded" as const),
      model: fc.constantFrom<ModelPick>("rogue-only", "other"),
    }),
  },
  { weight: 4, arbitrary: request },
  { weight: 2, arbitrary: fc.constantFrom(0, 50, 300, 1200).map((ms) => ({ k: "pause", ms }) as const) },
);

/**
 * A session: most start with a valid hello and a request for what the rogue serves, go on with
 * well-formed frames, and now and then anything at all (which may end it).
 */
export const sessionArb: fc.Arbitrary<FrameAction[]> = fc
  .tuple(
    fc.oneof(
      {
        weight: 5,
        arbitrary: fc.record({
          k: fc.constant("hello" as const),
          agentId: fc.constant("own" as const),
          protocol: fc.constantFrom({ min: 1, max: 2 }, { min: null, max: 1 }),
          models: fc.constantFrom<ModelPick[]>(["shared", "rogue-only"], ["rogue-only"]),
          capacity: fc.constantFrom(1, 4),
          capabilities: fc.constantFrom(null, ["load", "artifacts"]),
        }),
      },
      { weight: 1, arbitrary: actionArb },
    ),
    fc.option(request, { nil: undefined, freq: 2 }),
    fc.array(fc.oneof({ weight: 6, arbitrary: wellFormed }, { weight: 1, arbitrary: actionArb }), {
      maxLength: 10,
    }),
  )
  .map(([first, second, rest]) => (second === undefined ? [first, ...rest] : [first, second, ...rest]));

// ---- rendering ----

export interface RenderContext {
  agentId: string;
  models: Record<Exclude<ModelPick, "invalid">, string>;
  /** The `generate` frames the rogue received so far, in order. */
  requests: readonly { id: string; maxTokens: number }[];
  /** Text only the rogue knows: must never reach a caller. */
  secret: string;
}

export type Rendered =
  | { send: string | Uint8Array; counted: boolean; id?: string; tokens?: number; chars?: number }
  | { request: "shared" | "rogue-only"; stream: boolean }
  | { pause: number };

const encoder = new TextEncoder();

function modelName(pick: ModelPick, ctx: RenderContext): string {
  return pick === "invalid" ? " not a model " : ctx.models[pick];
}

function idOf(t: Target, ctx: RenderContext): { id: unknown; maxTokens: number } {
  if ("req" in t && ctx.requests.length > 0) {
    const request = ctx.requests[t.req % ctx.requests.length] as { id: string; maxTokens: number };
    return { id: request.id, maxTokens: request.maxTokens };
  }
  if ("bad" in t)
    return { id: t.bad === "long" ? "x".repeat(129) : t.bad === "number" ? 7 : "", maxTokens: 4 };
  return { id: `never-sent-${ctx.agentId}`, maxTokens: 4 };
}

function countOf(c: Count, maxTokens: number): number {
  if (c === "max") return maxTokens;
  if (c === "max+1") return maxTokens + 1;
  if (c === "huge") return 2 ** 40;
  return c;
}

const host = {
  platform: "darwin",
  arch: "arm64",
  cpus: 8,
  memoryTotalBytes: 16e9,
  memoryFreeBytes: 8e9,
};

const models = (picks: readonly ModelPick[], ctx: RenderContext) =>
  picks.map((p) => ({ name: modelName(p, ctx), engine: "synthetic", loaded: true }));

/** The frame object an action stands for (before any mutation). */
export function frameOf(action: FrameAction, ctx: RenderContext): Record<string, unknown> | null {
  switch (action.k) {
    case "hello":
      return {
        type: "hello",
        protocol: action.protocol.max,
        ...(action.protocol.min === null ? {} : { minProtocol: action.protocol.min }),
        ...(action.capabilities === null ? {} : { capabilities: action.capabilities }),
        agentId: action.agentId === "own" ? ctx.agentId : `${ctx.agentId}-other`,
        agentVersion: "0.0.0-rogue",
        engines: ["synthetic"],
        models: models(action.models, ctx),
        capacity: action.capacity,
        host,
      };
    case "health":
      return {
        type: "health",
        inFlight: action.inFlight,
        queued: 0,
        tokensPerSecond: 12.5,
        host,
        ...(action.models === null ? {} : { models: models(action.models, ctx) }),
        ...(action.cache
          ? {
              cache: {
                budgetBytes: 1e9,
                usedBytes: 10,
                artifacts: [{ model: ctx.models.shared, sha256: "a".repeat(64), size: 10 }],
              },
            }
          : {}),
      };
    case "chunk": {
      const { id, maxTokens } = idOf(action.target, ctx);
      return {
        type: "chunk",
        id,
        text: action.text.ch.repeat(action.text.n),
        tokens: countOf(action.tokens, maxTokens),
      };
    }
    case "done": {
      const { id, maxTokens } = idOf(action.target, ctx);
      return {
        type: "done",
        id,
        finishReason: action.finishReason,
        usage: { promptTokens: 3, completionTokens: countOf(action.completion, maxTokens) },
        timings: { firstTokenMs: 1, totalMs: 2 },
      };
    }
    case "error":
      return {
        type: "error",
        id: idOf(action.target, ctx).id,
        code: action.code,
        message: `${ctx.secret} at /Users/lab/models/x.gguf`,
        retryable: action.retryable,
      };
    case "loaded":
      return {
        type: "loaded",
        model: { name: modelName(action.model, ctx), engine: "synthetic", loaded: true },
      };
    case "unloaded":
      return { type: "unloaded", model: modelName(action.model, ctx) };
    case "load_failed":
      return {
        type: "load_failed",
        model: modelName(action.model, ctx),
        code: action.code,
        message: ctx.secret,
      };
    case "draining":
      return { type: "draining", deadlineMs: action.deadlineMs };
    default:
      return null;
  }
}

const WRONG_TYPES: unknown[] = [true, "7", 7, [], {}, -1];

function mutated(frame: Record<string, unknown>, field: number, how: string): Record<string, unknown> {
  const keys = Object.keys(frame);
  const key = keys[field % keys.length] as string;
  const copy = { ...frame };
  if (how === "delete") delete copy[key];
  else if (how === "null") copy[key] = null;
  else if (how === "extra") copy[`extra${field}`] = { nested: [1, 2, 3] };
  else copy[key] = WRONG_TYPES[field % WRONG_TYPES.length];
  return copy;
}

/** What the rogue does for an action, given what it has seen so far. */
export function renderAction(action: FrameAction, ctx: RenderContext): Rendered {
  switch (action.k) {
    case "request":
      return { request: action.model, stream: action.stream };
    case "pause":
      return { pause: action.ms };
    case "raw":
      return { send: action.text, counted: action.text !== HEARTBEAT_PING };
    case "huge": {
      // Just under or just over MAX_FRAME_BYTES, as the text of a chunk for an id never sent.
      const head = `{"type":"chunk","id":"never-sent","tokens":1,"text":"`;
      const fill = MAX_FRAME_BYTES - head.length - 2 + (action.over ? 1 : 0);
      return { send: `${head}${"a".repeat(fill)}"}`, counted: true };
    }
    case "binary": {
      const bytes =
        action.bytes === "a-valid-frame"
          ? encoder.encode(JSON.stringify(frameOf({ k: "draining", deadlineMs: 0 }, ctx)))
          : Uint8Array.from(action.bytes);
      return { send: bytes, counted: true };
    }
    case "mutate": {
      const base = frameOf(action.of, ctx);
      return {
        send: JSON.stringify(base === null ? null : mutated(base, action.field, action.how)),
        counted: true,
      };
    }
    default: {
      const frame = frameOf(action, ctx) as Record<string, unknown>;
      const id = typeof frame.id === "string" ? frame.id : undefined;
      const tokens = frame.type === "chunk" ? (frame.tokens as number) : undefined;
      const chars = frame.type === "chunk" ? (frame.text as string).length : undefined;
      return {
        send: JSON.stringify(frame),
        counted: true,
        ...(id === undefined ? {} : { id }),
        ...(tokens === undefined ? {} : { tokens }),
        ...(chars === undefined ? {} : { chars }),
      };
    }
  }
}
