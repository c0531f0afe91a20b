// OpenAI tools as structured output: the function definitions and tool_choice become one JSON
// Schema the model must answer with (and the engine enforces where it can), the conversation's
// tool calls and results become text in the roles the wire protocol has (system/user/assistant),
// and the validated answer becomes OpenAI's `tool_calls`. The model answers
//   {"tool_calls":[{"name":"get_weather","arguments":{...}}]}   (a call: required, named, auto)
//   {"content":"..."}  or a value of the response_format schema   (no call: auto only)
import type { ChatCompletionMessage, ChatTool, ChatToolCall, ChatToolChoice } from "../../schema/api.ts";
import { SchemaLimits } from "../../schema/structured.ts";
import { GatewayError } from "../errors.ts";
import { type CheckedSchema, checkSchema, MAX_ISSUES, type SchemaIssue } from "./schema-check.ts";

/** Keywords whose value is data, not schemas: copied as they are when a schema is embedded. */
const DATA_KEYWORDS = new Set([
  "const",
  "enum",
  "default",
  "examples",
  "required",
  "type",
  "pattern",
  "format",
]);

/** Arguments of a function defined without `parameters`: an empty object (OpenAI's reading). */
const NO_PARAMETERS = { type: "object", properties: {}, additionalProperties: false };

/** The answer when the model does not call a tool (auto) and no response_format asks for JSON. */
export const CONTENT_SCHEMA = {
  type: "object",
  properties: { content: { type: "string" } },
  required: ["content"],
  additionalProperties: false,
} as const;

/** The tools a request lets the model call now, and how. */
export interface ToolPlan {
  /** The functions it may call (only the named one for a named tool_choice), with their checked parameters. */
  functions: {
    name: string;
    description: string | null;
    parameters: Record<string, unknown>;
    checked: CheckedSchema;
  }[];
  /** required or a named function: it must call; auto: it may answer without a call. */
  mustCall: boolean;
  parallel: boolean;
}

/**
 * The request's tool plan, its schemas checked (each at its own param, e.g.
 * tools.0.function.parameters.properties.x); null when no tool may be called (no tools, or
 * tool_choice "none"). Names were checked by the request's schema (unique, tool_choice defined).
 */
export function toolPlan(
  tools: readonly ChatTool[] | null | undefined,
  choice: ChatToolChoice | null | undefined,
  parallel: boolean | null | undefined,
): ToolPlan | null {
  if (tools == null || tools.length === 0 || choice === "none") return null;
  if (tools.length > SchemaLimits.maxTools) {
    throw new GatewayError("SCHEMA_TOO_LARGE", `at most ${SchemaLimits.maxTools} tools are accepted`, {
      param: "tools",
    });
  }
  const functions = tools.map((tool, i) => {
    const parameters = tool.function.parameters ?? NO_PARAMETERS;
    return {
      name: tool.function.name,
      description: tool.function.description ?? null,
      parameters,
      checked: checkSchema(parameters, `tools.${i}.function.parameters`),
    };
  });
  const named = typeof choice === "object" && choice !== null ? choice.function.name : null;
  return {
    functions: named === null ? functions : functions.filter((f) => f.name === named),
    mustCall: named !== null || choice === "required",
    // OpenAI's default is true; the model may still make one call.
    parallel: parallel !== false,
  };
}

/** A tool call as the model answers it, its arguments parsed. */
export interface ModelCall {
  name: string;
  arguments: unknown;
}

/**
 * The schema the model must answer with: the calls it may make, and for auto also a plain
 * answer (`{"content": string}`, or `answer` — the response_format's schema — when given).
 * Each function's $defs are hoisted into the root's $defs (prefixed), so their $refs still resolve.
 */
export function toolAnswerSchema(
  plan: ToolPlan,
  answer: Record<string, unknown> | null,
): Record<string, unknown> {
  const defs: Record<string, unknown> = {};
  const items = plan.functions.map((f) => ({
    type: "object",
    properties: { name: { const: f.name }, arguments: embed(f.parameters, `fn_${f.name}`, defs) },
    required: ["name", "arguments"],
    additionalProperties: false,
  }));
  const calls: Record<string, unknown> = {
    type: "object",
    properties: {
      tool_calls: {
        type: "array",
        items: items.length === 1 ? items[0] : { anyOf: items },
        minItems: 1,
        ...(plan.parallel ? {} : { maxItems: 1 }),
      },
    },
    required: ["tool_calls"],
    additionalProperties: false,
  };
  const schema = plan.mustCall
    ? calls
    : { anyOf: [calls, answer === null ? CONTENT_SCHEMA : embed(answer, "response_format", defs)] };
  return Object.keys(defs).length === 0 ? schema : { ...schema, $defs: defs };
}

/**
 * `schema` for use inside another one: without $schema and its own $defs/definitions, which go
 * into `defs` as `<prefix>__<name>`; a $ref to its root (or into it, outside its definitions)
 * points at a copy of it in `defs` under `prefix`.
 */
function embed(schema: Record<string, unknown>, prefix: string, defs: Record<string, unknown>): unknown {
  let needsRoot = false;
  // `node` is a schema (or a list of them); values that are data (const, enum, ...) stay as they are.
  const rewrite = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(rewrite);
    if (typeof node !== "object" || node === null) return node;
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(node)) {
      if (key === "$ref" && typeof value === "string" && value.startsWith("#")) {
        const local = /^#\/(?:\$defs|definitions)\/(.*)$/.exec(value);
        if (local !== null) out.$ref = `#/$defs/${prefix}__${local[1]}`;
        else {
          needsRoot = true;
          out.$ref = `#/$defs/${prefix}${value.slice(1)}`;
        }
      } else if (
        key === "properties" &&
        typeof value === "object" &&
        value !== null &&
        !Array.isArray(value)
      ) {
        out[key] = Object.fromEntries(Object.entries(value).map(([name, sub]) => [name, rewrite(sub)]));
      } else if (DATA_KEYWORDS.has(key)) out[key] = value;
      else out[key] = rewrite(value);
    }
    return out;
  };
  const { $schema: _dialect, $defs, definitions, ...rest } = schema;
  for (const group of [definitions, $defs]) {
    if (typeof group !== "object" || group === null) continue;
    for (const [name, sub] of Object.entries(group)) defs[`${prefix}__${name}`] = rewrite(sub);
  }
  const body = rewrite(rest);
  if (needsRoot) defs[prefix] = body;
  return body;
}

/**
 * The checked schema for a tool request: `schema` (toolAnswerSchema) goes to the engine, and
 * validation names what is wrong where the model can fix it — an unknown function by its name,
 * arguments against that function's own parameters (/tool_calls/0/arguments/city) — rather than
 * the anyOf's every branch. `answer` validates the no-call answer (auto), null for CONTENT_SCHEMA.
 */
export function toolChecked(plan: ToolPlan, answer: CheckedSchema | null): CheckedSchema {
  const schema = toolAnswerSchema(plan, answer?.schema ?? null);
  const combined = checkSchema(schema, "tools");
  const content = answer ?? checkSchema(CONTENT_SCHEMA, "tools");
  const byName = new Map(plan.functions.map((f) => [f.name, f]));
  const validate = (value: unknown): SchemaIssue[] => {
    const isCall = isObject(value) && "tool_calls" in value;
    if (!isCall) {
      if (plan.mustCall) {
        return [
          {
            path: "",
            message: 'expected {"tool_calls": [{"name": ..., "arguments": {...}}]}',
            keyword: "required",
          },
        ];
      }
      return content.validate(value);
    }
    const calls = value.tool_calls;
    const issues: SchemaIssue[] = [];
    for (const key of Object.keys(value)) {
      if (key !== "tool_calls")
        issues.push({ path: `/${key}`, message: "unexpected property", keyword: "additionalProperties" });
    }
    if (!Array.isArray(calls) || calls.length === 0) {
      issues.push({
        path: "/tool_calls",
        message: "expected a non-empty list of calls",
        keyword: "minItems",
      });
      return issues;
    }
    if (!plan.parallel && calls.length > 1) {
      issues.push({ path: "/tool_calls", message: "expected exactly one call", keyword: "maxItems" });
    }
    for (const [i, call] of calls.entries()) {
      const at = `/tool_calls/${i}`;
      if (!isObject(call)) {
        issues.push({ path: at, message: "expected an object with name and arguments", keyword: "type" });
        continue;
      }
      const fn = typeof call.name === "string" ? byName.get(call.name) : undefined;
      if (fn === undefined) {
        issues.push({
          path: `${at}/name`,
          message: `expected one of ${[...byName.keys()].map((n) => JSON.stringify(n)).join(", ")}`,
          keyword: "enum",
        });
      }
      for (const key of Object.keys(call)) {
        if (key !== "name" && key !== "arguments") {
          issues.push({
            path: `${at}/${key}`,
            message: "unexpected property",
            keyword: "additionalProperties",
          });
        }
      }
      if (!("arguments" in call))
        issues.push({ path: `${at}/arguments`, message: "missing arguments", keyword: "required" });
      else if (fn !== undefined) {
        for (const issue of fn.checked.validate(call.arguments)) {
          issues.push({ ...issue, path: `${at}/arguments${issue.path}` });
        }
      }
    }
    return issues.slice(0, MAX_ISSUES);
  };
  return { schema: combined.schema, validate };
}

/** The validated answer: calls (arguments as JSON text, ids given here) or a plain answer. */
export type ToolAnswer =
  | { kind: "calls"; calls: ChatToolCall[] }
  /** `text`: the content string, or the JSON text of a response_format answer. */
  | { kind: "content"; text: string };

export function toolAnswer(data: unknown, jsonAnswer: boolean): ToolAnswer {
  if (isObject(data) && Array.isArray(data.tool_calls)) {
    return {
      kind: "calls",
      calls: (data.tool_calls as ModelCall[]).map((call) => ({
        id: toolCallId(),
        type: "function",
        function: { name: call.name, arguments: JSON.stringify(call.arguments) },
      })),
    };
  }
  if (jsonAnswer) return { kind: "content", text: JSON.stringify(data) };
  return { kind: "content", text: isObject(data) && typeof data.content === "string" ? data.content : "" };
}

const ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** "call_" and 24 random letters and digits, as OpenAI's ids look. */
export function toolCallId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  let id = "call_";
  for (const b of bytes) id += ID_ALPHABET[b % ID_ALPHABET.length];
  return id;
}

/**
 * The system instruction that tells the model which functions it may call and how to answer. It
 * names each function with its description; the arguments' schemas travel in the answer schema
 * (the engine's format, and the schema instruction of the structured attempt), not twice.
 */
export function toolInstruction(plan: ToolPlan): string {
  const list = plan.functions
    .map((f) => `- ${f.name}${f.description ? `: ${f.description}` : ""}`)
    .join("\n");
  const how = '{"tool_calls":[{"name":"<function>","arguments":{...}}]}';
  const lead = plan.mustCall
    ? plan.functions.length === 1
      ? `Call the function ${plan.functions[0]?.name}. Answer only with ${how}.`
      : `Call one or more of these functions. Answer only with ${how}.`
    : `To call functions, answer only with ${how}; otherwise answer {"content":"<your reply>"}.`;
  return `Functions you can call:\n${list}\n${lead}`;
}

/**
 * The conversation as the agent gets it: tool results (role tool) become user messages naming
 * the function and call they answer, and an assistant's tool calls become the JSON it would
 * answer with (the same shape the answer schema asks for), after its text if it had any.
 */
export function renderToolTurns(
  messages: readonly ChatCompletionMessage[],
): { role: "system" | "user" | "assistant"; content: string }[] {
  const names = new Map<string, string>();
  return messages.map((m) => {
    if (m.role === "tool") {
      const name = m.tool_call_id == null ? undefined : names.get(m.tool_call_id);
      return { role: "user", content: `Result of ${name ?? "a function"} (${m.tool_call_id}): ${m.content}` };
    }
    const role = m.role === "developer" ? "system" : m.role;
    if (m.role !== "assistant" || m.tool_calls == null || m.tool_calls.length === 0)
      return { role, content: m.content };
    for (const call of m.tool_calls) names.set(call.id, call.function.name);
    const calls = JSON.stringify({
      tool_calls: m.tool_calls.map((call) => ({
        name: call.function.name,
        arguments: parseOr(call.function.arguments),
      })),
    });
    return { role: "assistant", content: m.content === "" ? calls : `${m.content}\n${calls}` };
  });
}

function parseOr(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);
