// The gateway's check of a caller's JSON Schema before anything is dispatched: every keyword on the
// allow-list (schema/structured.ts) with a well-formed value, within the limits, $refs local and
// resolving; then compiled with @cfworker/json-schema (interpreted, no code generation: it runs in
// workerd) into the validator every output is checked with. Errors name the path to the fault.
import { Validator } from "@cfworker/json-schema";
import {
  ANNOTATION_KEYWORDS,
  SCHEMA_KEYWORDS,
  SCHEMA_LIST_KEYWORDS,
  SCHEMA_MAP_KEYWORDS,
  SchemaLimits,
  SUPPORTED_DIALECTS,
  SUPPORTED_FORMATS,
  SUPPORTED_SCHEMA_KEYWORDS,
} from "../../schema/structured.ts";
import { GatewayError } from "../errors.ts";

/** One way a value fails its schema: a JSON pointer into the value ("" = the root), and why. */
export interface SchemaIssue {
  path: string;
  message: string;
  keyword: string;
}

export interface CheckedSchema {
  /** The schema as the caller sent it (checked; the validator works on its own copy). */
  schema: Record<string, unknown>;
  /** Every issue of `value` against the schema; empty when it is valid. Never throws. */
  validate(value: unknown): SchemaIssue[];
}

const TYPES = new Set(["string", "number", "integer", "boolean", "object", "array", "null"]);
const SUPPORTED = new Set(SUPPORTED_SCHEMA_KEYWORDS);
const SCHEMA_VALUED = new Set<string>(SCHEMA_KEYWORDS);
const SCHEMA_LISTS = new Set<string>(SCHEMA_LIST_KEYWORDS);
const SCHEMA_MAPS = new Set<string>(SCHEMA_MAP_KEYWORDS);
const ANNOTATIONS = new Set<string>(ANNOTATION_KEYWORDS);
const FORMATS = new Set<string>(SUPPORTED_FORMATS);
const COUNTS = new Set(["minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties"]);
const NUMBERS = new Set(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]);
/** Issues fed back to a model or returned in a 422 at most (the first ones, leaves first). */
export const MAX_ISSUES = 20;

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

const invalid = (message: string, param: string) => new GatewayError("INVALID_SCHEMA", message, { param });

/** What the walk gathers: subschema count, and each $ref with where it is and the schema holding it. */
interface Walk {
  subschemas: number;
  refs: { ref: string; param: string; holder: Record<string, unknown> }[];
}

/**
 * Checks `schema` (the body field `param` names) and compiles it. Throws GatewayError:
 * INVALID_SCHEMA (not a schema, a malformed keyword value, a $ref resolving to nothing or a cycle
 * of $refs that reads no input), UNSUPPORTED_SCHEMA_KEYWORD (a keyword off the allow-list, an
 * unsupported format or dialect), SCHEMA_REMOTE_REF, SCHEMA_TOO_LARGE.
 */
export function checkSchema(schema: unknown, param: string): CheckedSchema {
  if (!isObject(schema)) throw invalid("a JSON Schema must be an object", param);
  const bytes = new TextEncoder().encode(JSON.stringify(schema)).byteLength;
  if (bytes > SchemaLimits.maxBytes) {
    throw new GatewayError(
      "SCHEMA_TOO_LARGE",
      `the schema is ${bytes} bytes; at most ${SchemaLimits.maxBytes} are accepted`,
      { param },
    );
  }
  let draft: "2020-12" | "7" = "2020-12";
  if (schema.$schema !== undefined) {
    const dialect = SUPPORTED_DIALECTS[schema.$schema as keyof typeof SUPPORTED_DIALECTS];
    if (typeof schema.$schema !== "string" || dialect === undefined) {
      throw new GatewayError(
        "UNSUPPORTED_SCHEMA_KEYWORD",
        `$schema must name draft 2020-12 or draft-07 (${Object.keys(SUPPORTED_DIALECTS)[0]})`,
        { param: `${param}.$schema` },
      );
    }
    draft = dialect;
  }
  const walk: Walk = { subschemas: 0, refs: [] };
  walkSchema(schema, param, 1, walk);
  checkRefs(schema, param, walk);
  const validator = new Validator(structuredClone(schema) as Record<string, unknown>, draft, false);
  return { schema, validate: (value) => issuesOf(validator, value) };
}

function walkSchema(node: unknown, param: string, depth: number, walk: Walk): void {
  if (typeof node === "boolean") return;
  if (!isObject(node)) throw invalid("a subschema must be an object or a boolean", param);
  if (depth > SchemaLimits.maxDepth) {
    throw new GatewayError(
      "SCHEMA_TOO_LARGE",
      `the schema nests deeper than ${SchemaLimits.maxDepth} subschemas`,
      { param },
    );
  }
  walk.subschemas += 1;
  if (walk.subschemas > SchemaLimits.maxSubschemas) {
    throw new GatewayError(
      "SCHEMA_TOO_LARGE",
      `the schema has more than ${SchemaLimits.maxSubschemas} subschemas`,
      { param },
    );
  }
  for (const [keyword, value] of Object.entries(node)) {
    const at = `${param}.${keyword}`;
    if (!SUPPORTED.has(keyword)) {
      throw new GatewayError(
        "UNSUPPORTED_SCHEMA_KEYWORD",
        `the schema keyword ${JSON.stringify(keyword)} is not supported (docs/structured-outputs.md lists those that are)`,
        { param: at },
      );
    }
    if (SCHEMA_VALUED.has(keyword)) walkSchema(value, at, depth + 1, walk);
    else if (keyword === "items") {
      // draft-07's tuple form (what zod emits for z.tuple) is a list; 2020-12's is one schema.
      if (Array.isArray(value)) walkList(value, at, depth, walk);
      else walkSchema(value, at, depth + 1, walk);
    } else if (SCHEMA_LISTS.has(keyword)) {
      if (!Array.isArray(value) || value.length === 0)
        throw invalid(`${keyword} must be a non-empty list of schemas`, at);
      walkList(value, at, depth, walk);
    } else if (SCHEMA_MAPS.has(keyword)) {
      if (!isObject(value)) throw invalid(`${keyword} must be an object of schemas`, at);
      for (const [name, sub] of Object.entries(value)) walkSchema(sub, `${at}.${name}`, depth + 1, walk);
    } else if (keyword === "$ref") {
      if (typeof value !== "string") throw invalid("$ref must be a string", at);
      walk.refs.push({ ref: value, param: at, holder: node });
    } else checkValue(keyword, value, at);
  }
}

function walkList(list: unknown[], param: string, depth: number, walk: Walk): void {
  for (const [i, sub] of list.entries()) walkSchema(sub, `${param}.${i}`, depth + 1, walk);
}

/** A keyword's value is what the keyword needs (one that would make the validator throw is refused). */
function checkValue(keyword: string, value: unknown, param: string): void {
  if (ANNOTATIONS.has(keyword)) {
    if (
      (keyword === "title" || keyword === "description" || keyword === "$comment") &&
      typeof value !== "string"
    )
      throw invalid(`${keyword} must be a string`, param);
    if (keyword === "examples" && !Array.isArray(value)) throw invalid("examples must be a list", param);
    return;
  }
  if (COUNTS.has(keyword)) {
    if (!Number.isSafeInteger(value) || (value as number) < 0)
      throw invalid(`${keyword} must be a non-negative integer`, param);
    return;
  }
  if (NUMBERS.has(keyword)) {
    // draft-04's boolean exclusiveMinimum/Maximum is refused with the rest of draft-04.
    if (typeof value !== "number" || !Number.isFinite(value))
      throw invalid(`${keyword} must be a number`, param);
    return;
  }
  switch (keyword) {
    case "type": {
      const types = Array.isArray(value) ? value : [value];
      if (types.length === 0 || types.some((t) => typeof t !== "string" || !TYPES.has(t)))
        throw invalid(`type must be one of ${[...TYPES].join(", ")}, or a list of them`, param);
      if (new Set(types).size !== types.length) throw invalid("type lists a type twice", param);
      return;
    }
    case "required":
      if (!Array.isArray(value) || value.some((k) => typeof k !== "string"))
        throw invalid("required must be a list of property names", param);
      return;
    case "enum":
      if (!Array.isArray(value) || value.length === 0) throw invalid("enum must be a non-empty list", param);
      return;
    case "multipleOf":
      if (typeof value !== "number" || !Number.isFinite(value) || value <= 0)
        throw invalid("multipleOf must be a number above 0", param);
      return;
    case "uniqueItems":
      if (typeof value !== "boolean") throw invalid("uniqueItems must be a boolean", param);
      return;
    case "pattern":
      if (typeof value !== "string") throw invalid("pattern must be a string", param);
      try {
        new RegExp(value, "u");
      } catch {
        throw invalid("pattern is not a valid regular expression (ECMA-262, unicode)", param);
      }
      return;
    case "format":
      if (typeof value !== "string" || !FORMATS.has(value)) {
        throw new GatewayError(
          "UNSUPPORTED_SCHEMA_KEYWORD",
          `format ${JSON.stringify(value)} is not supported; supported: ${SUPPORTED_FORMATS.join(", ")}`,
          { param },
        );
      }
      return;
    // const: any JSON value.
  }
}

/**
 * Each $ref is "#" (the root) or a pointer into $defs/definitions, and resolves; anything else
 * that is not a fragment is remote (never fetched). A cycle of $refs through allOf/anyOf/oneOf
 * that reads no input would recurse forever in the validator, so it is refused.
 */
function checkRefs(root: Record<string, unknown>, param: string, walk: Walk): void {
  const targets = new Map<Record<string, unknown>, Record<string, unknown> | boolean>();
  for (const { ref, param: at, holder } of walk.refs) {
    if (!ref.startsWith("#")) {
      throw new GatewayError(
        "SCHEMA_REMOTE_REF",
        `$ref ${JSON.stringify(ref.slice(0, 200))} is not local: only "#", "#/$defs/..." and "#/definitions/..." are resolved, nothing is fetched`,
        { param: at },
      );
    }
    if (ref !== "#" && !ref.startsWith("#/$defs/") && !ref.startsWith("#/definitions/")) {
      throw invalid(
        `$ref ${JSON.stringify(ref.slice(0, 200))}: only "#", "#/$defs/..." and "#/definitions/..." are supported`,
        at,
      );
    }
    const target = resolvePointer(root, ref);
    if (target === undefined)
      throw invalid(`$ref ${JSON.stringify(ref.slice(0, 200))} resolves to nothing in ${param}`, at);
    targets.set(holder, target);
  }
  // A schema's non-consuming successors: its $ref's target and its allOf/anyOf/oneOf branches.
  const next = (node: Record<string, unknown>): Record<string, unknown>[] => {
    const out: Record<string, unknown>[] = [];
    const target = targets.get(node);
    if (isObject(target)) out.push(target);
    for (const keyword of ["allOf", "anyOf", "oneOf"]) {
      const list = node[keyword];
      if (Array.isArray(list)) for (const sub of list) if (isObject(sub)) out.push(sub);
    }
    return out;
  };
  const done = new Set<Record<string, unknown>>();
  const onPath = new Set<Record<string, unknown>>();
  const visit = (node: Record<string, unknown>, at: string): void => {
    if (done.has(node)) return;
    if (onPath.has(node))
      throw invalid("a $ref cycle that reads no input (through $ref/allOf/anyOf/oneOf)", at);
    onPath.add(node);
    for (const sub of next(node)) visit(sub, at);
    onPath.delete(node);
    done.add(node);
  };
  for (const { param: at, holder } of walk.refs) visit(holder, at);
}

function resolvePointer(
  root: Record<string, unknown>,
  ref: string,
): Record<string, unknown> | boolean | undefined {
  if (ref === "#") return root;
  let node: unknown = root;
  for (const raw of ref.slice(2).split("/")) {
    let token: string;
    try {
      token = decodeURIComponent(raw).replaceAll("~1", "/").replaceAll("~0", "~");
    } catch {
      return undefined;
    }
    if (Array.isArray(node) && /^(0|[1-9][0-9]*)$/.test(token)) node = node[Number(token)];
    else if (isObject(node) && Object.hasOwn(node, token)) node = node[token];
    else return undefined;
  }
  return isObject(node) || typeof node === "boolean" ? node : undefined;
}

/** @cfworker/json-schema's errors as issues: the leaves (a wrapper's own error only repeats them). */
function issuesOf(validator: Validator, value: unknown): SchemaIssue[] {
  let errors: { keyword: string; keywordLocation: string; instanceLocation: string; error: string }[];
  try {
    errors = validator.validate(value).errors;
  } catch {
    // Only a value that is not JSON (undefined, a function) gets here: outputs come from JSON.parse.
    return [{ path: "", message: "the value is not JSON", keyword: "type" }];
  }
  const issues: SchemaIssue[] = [];
  for (const [i, e] of errors.entries()) {
    // "false" is the boolean schema under additionalProperties/items: its parent says more.
    if (e.keyword === "false") continue;
    const wraps = errors.some((o, j) => j > i && o.keywordLocation.startsWith(`${e.keywordLocation}/`));
    if (wraps) continue;
    issues.push({ path: pointerOf(e.instanceLocation), message: e.error, keyword: e.keyword });
    if (issues.length === MAX_ISSUES) break;
  }
  return issues.length > 0 || errors.length === 0
    ? issues
    : [{ path: "", message: errors[0]?.error ?? "invalid", keyword: errors[0]?.keyword ?? "" }];
}

/** "#/a/0" (URI-encoded) -> "/a/0". */
function pointerOf(location: string): string {
  const fragment = location.startsWith("#") ? location.slice(1) : location;
  try {
    return decodeURIComponent(fragment);
  } catch {
    return fragment;
  }
}
