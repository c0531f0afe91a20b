// Requests to /models for the registry suites: JSON in, status and JSON out, as one role or another.
import { expect } from "vitest";
import { bearer, gatewayFetch, uniqueId } from "./helpers.ts";

export interface Answer {
  status: number;
  code: string | undefined;
  // biome-ignore lint/suspicious/noExplicitAny: test bodies are read field by field
  body: any;
  headers: Headers;
}

export async function call(
  method: string,
  path: string,
  body?: unknown,
  { role = "admin", sub = "ops-alice" }: { role?: string; sub?: string } = {},
): Promise<Answer> {
  const headers: Record<string, string> = await bearer({ role, sub });
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await gatewayFetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let json: unknown = text;
  try {
    json = JSON.parse(text);
  } catch {}
  const code = (json as { error?: { code?: string } } | null)?.error?.code;
  return { status: response.status, code, body: json, headers: response.headers };
}

/** A fresh registry name (lower-case, pattern-safe). */
export const modelName = (prefix = "m") => uniqueId(prefix).toLowerCase();

/** Registers `name:version` with a path source (or the fields given) and expects 201. */
export async function register(
  name: string,
  version: string,
  fields: Record<string, unknown> = {},
): Promise<Answer> {
  const answer = await call("POST", "/models/register", {
    name,
    version,
    model_path: `/models/${name}`,
    ...fields,
  });
  expect(answer.status, JSON.stringify(answer.body)).toBe(201);
  return answer;
}

/** Registers a version that needs no agent to activate (placement replicas 0). */
export const registerInstant = (name: string, version: string, fields: Record<string, unknown> = {}) =>
  register(name, version, { placement: { replicas: 0 }, ...fields });

export async function expectError(
  answer: Promise<Answer> | Answer,
  status: number,
  code: string,
): Promise<Answer> {
  const a = await answer;
  expect({ status: a.status, code: a.code }, JSON.stringify(a.body)).toEqual({ status, code });
  return a;
}
