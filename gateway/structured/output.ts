// A model's output against its schema: parsed as JSON (a Markdown code fence around it is taken
// off: real models add one), then validated. Either the value or the issues to feed back.
import type { FinishReason } from "../../schema/protocol.ts";
import type { CheckedSchema, SchemaIssue } from "./schema-check.ts";

export type OutputVerdict = { valid: true; data: unknown } | { valid: false; issues: SchemaIssue[] };

const FENCED = /^```[A-Za-z]*[ \t]*\r?\n([\s\S]*?)\r?\n?```$/;

/** The JSON text inside `raw`: trimmed, and out of a ```json fence if it is wrapped in one. */
export function jsonText(raw: string): string {
  const trimmed = raw.trim();
  const fenced = FENCED.exec(trimmed);
  return fenced === null ? trimmed : (fenced[1] ?? "").trim();
}

export function judgeOutput(raw: string, finishReason: FinishReason, checked: CheckedSchema): OutputVerdict {
  const text = jsonText(raw);
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    const cut = finishReason === "length" ? " (the output was cut off at max_tokens)" : "";
    const message = text === "" ? `the output is empty${cut}` : `the output is not valid JSON${cut}`;
    return { valid: false, issues: [{ path: "", message, keyword: "json" }] };
  }
  const issues = checked.validate(data);
  return issues.length === 0 ? { valid: true, data } : { valid: false, issues };
}
