// Model ids: `name` or `name:version`, the key an agent serves a model under and the registry
// names a model version by. Both sides of the wire import this module, as they do protocol.ts.
//
// The rule, on top of ModelName (protocol.ts: letters, digits and . _ : / @ + -, at most 128):
// - The version is what follows the LAST ':' when it looks like a version: digits separated by
//   dots, optionally a semver pre-release (`-rc.1`) and build (`+g1a2b3c`). `demo:1.2.0`,
//   `demo:2`, `demo:1.0.0-rc.1` are versioned; the name before the ':' is `demo`.
// - Anything else after a ':' is part of the name, so Ollama-style tags stay names:
//   `qwen2.5:0.5b`, `llama3:8b-instruct`, `demo:latest`, `demo:v2` are names without a version.
// - A name never ends in ':<version>' itself (`demo:1:2` is not a model id), so every id has one
//   reading: formatModelId(parseModelId(id)) is id, and parseModelId(formatModelId(n, v)) is {n, v}.
//   A model whose tag looks like a version (`qwen:7`) is read as versioned; name it otherwise.
import type { z } from "zod";
import { ModelName } from "./protocol.ts";

const MAX_LENGTH = 128;
const NAME_CHARS = /^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$/;
const IDENTIFIERS = "[0-9A-Za-z-]+(?:\\.[0-9A-Za-z-]+)*";
const VERSION = new RegExp(`^\\d+(?:\\.\\d+)*(?:-${IDENTIFIERS})?(?:\\+${IDENTIFIERS})?$`);

/** A model name with an optional version; made only by ModelId.parse, isModelId or formatModelId. */
export const ModelId = ModelName.refine(isModelIdText, {
  message: "a model id is a name or name:version, and the name does not itself end in :<version>",
}).brand<"ModelId">();
export type ModelId = z.infer<typeof ModelId>;

export interface ParsedModelId {
  name: string;
  version: string | null;
}

/** Thrown for text that is not a model id; callers branch on `code`, never on the message. */
export class ModelIdError extends Error {
  readonly code = "ERR_MODEL_ID";
  constructor(message: string) {
    super(message);
    this.name = "ModelIdError";
  }
}

/** Whether `version` is a version in the sense above (digits and dots, pre-release, build). */
export function isModelVersion(version: string): boolean {
  return VERSION.test(version);
}

export function isModelId(text: string): text is ModelId {
  return isModelIdText(text);
}

/** The name and version of a model id; throws ModelIdError for text that is not one. */
export function parseModelId(text: string): ParsedModelId {
  const parsed = split(text);
  if (!parsed) throw new ModelIdError(`"${text.slice(0, MAX_LENGTH)}" is not a model id`);
  return parsed;
}

/** `name`, or `name:version` when a version is given; throws ModelIdError when that is no model id. */
export function formatModelId(name: string, version?: string | null): ModelId {
  if (version !== undefined && version !== null && !isModelVersion(version)) {
    throw new ModelIdError(`"${version.slice(0, MAX_LENGTH)}" is not a model version`);
  }
  const text = version === undefined || version === null ? name : `${name}:${version}`;
  const parsed = split(text);
  // The check on the name catches `formatModelId("demo:1")`, which would read back as version 1.
  if (!parsed || parsed.name !== name) {
    throw new ModelIdError(`"${name.slice(0, MAX_LENGTH)}" cannot be a model name`);
  }
  return text as ModelId;
}

function isModelIdText(text: string): boolean {
  return split(text) !== undefined;
}

function split(text: string): ParsedModelId | undefined {
  if (text.length === 0 || text.length > MAX_LENGTH || !NAME_CHARS.test(text)) return undefined;
  const at = text.lastIndexOf(":");
  if (at < 0 || !isModelVersion(text.slice(at + 1))) return { name: text, version: null };
  const name = text.slice(0, at);
  // One version suffix at most: the name's own tail after a ':' must not read as a version.
  const inner = name.lastIndexOf(":");
  if (inner >= 0 && isModelVersion(name.slice(inner + 1))) return undefined;
  return { name, version: text.slice(at + 1) };
}
