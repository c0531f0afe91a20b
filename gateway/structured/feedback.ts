// What the model is told: on the first attempt, a short instruction with the schema (compact: the
// demo model's context is 1024 tokens); after a failed one, instructor-style feedback — its own
// output as the assistant's turn, then the issues and a request for JSON only.
import type { ChatMessage } from "../../schema/protocol.ts";
import type { SchemaIssue } from "./schema-check.ts";

/** How a request carries its conversation, and so how feedback is added to it. */
export type FeedbackShape = "prompt" | "messages";

/** Keywords that tell a model nothing about the shape to write. */
const DROPPED = new Set(["$schema", "$comment", "examples"]);
const MAPS = new Set(["properties", "$defs", "definitions"]);

/** The schema as one line, without annotations a model does not need. */
export function compactSchema(schema: Record<string, unknown>): string {
  return JSON.stringify(strip(schema));
}

/** Drops DROPPED keywords from every subschema (a property that happens to be named so stays). */
function strip(node: unknown): unknown {
  if (typeof node !== "object" || node === null) return node;
  if (Array.isArray(node)) return node.map(strip);
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    if (DROPPED.has(key)) continue;
    if (key === "enum" || key === "const" || key === "default" || key === "required") out[key] = value;
    else if (MAPS.has(key) && typeof value === "object" && value !== null && !Array.isArray(value)) {
      out[key] = Object.fromEntries(Object.entries(value).map(([name, sub]) => [name, strip(sub)]));
    } else out[key] = strip(value);
  }
  return out;
}

export function schemaInstruction(schema: Record<string, unknown>): string {
  return `Answer with a JSON value only, matching this JSON Schema: ${compactSchema(schema)}`;
}

export function feedbackText(issues: readonly SchemaIssue[]): string {
  const lines = issues.map((i) => `- ${i.path === "" ? "(root)" : i.path}: ${i.message}`);
  return `That answer is invalid:\n${lines.join("\n")}\nAnswer again with only the corrected JSON value.`;
}

/** A conversation with the instruction first (merged into a leading system message). */
export function instructMessages(messages: readonly ChatMessage[], instruction: string): ChatMessage[] {
  const [first, ...rest] = messages;
  if (first?.role === "system")
    return [{ role: "system", content: `${instruction}\n\n${first.content}` }, ...rest];
  return [{ role: "system", content: instruction }, ...messages];
}

export function instructPrompt(prompt: string, instruction: string): string {
  return `${instruction}\n\n${prompt}\n`;
}

/** The conversation after a failed attempt: the output, then the feedback. */
export function retryMessages(
  messages: readonly ChatMessage[],
  raw: string,
  issues: readonly SchemaIssue[],
): ChatMessage[] {
  return [...messages, { role: "assistant", content: raw }, { role: "user", content: feedbackText(issues) }];
}

/** A raw-completion prompt after a failed attempt: the transcript goes on as text. */
export function retryPrompt(prompt: string, raw: string, issues: readonly SchemaIssue[]): string {
  return `${prompt}${raw}\n\n${feedbackText(issues)}\n`;
}
