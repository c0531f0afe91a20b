// The gateway's OpenAPI document against the OpenAPI 3.1 schema, in Node: the validator
// (@seriousme/openapi-schema-validator, Ajv underneath) compiles its schemas with `new Function`,
// which workerd forbids, so this builds the document the way GET /openapi.json does and checks it
// here; test/gateway/openapi.test.ts checks what the Worker serves.
import { Validator } from "@seriousme/openapi-schema-validator";
import { describe, expect, it } from "vitest";
import { buildDocument } from "../../gateway/openapi/document.ts";

const document = buildDocument({ version: "0.0.0-test" });
/** The document as GET /openapi.json sends it: JSON text, parsed. */
const asServed = (): Record<string, unknown> & { paths: Record<string, unknown> } =>
  JSON.parse(JSON.stringify(document));

/** Every `$ref` in the document, with where it is. */
function refsOf(value: unknown, at = "#"): { at: string; ref: string }[] {
  if (Array.isArray(value)) return value.flatMap((v, i) => refsOf(v, `${at}/${i}`));
  if (typeof value !== "object" || value === null) return [];
  return Object.entries(value).flatMap(([key, v]) =>
    key === "$ref" && typeof v === "string" ? [{ at, ref: v }] : refsOf(v, `${at}/${key}`),
  );
}

function resolve(pointer: string): unknown {
  return pointer
    .replace(/^#\//, "")
    .split("/")
    .map((part) => part.replaceAll("~1", "/").replaceAll("~0", "~"))
    .reduce<unknown>((node, key) => (node as Record<string, unknown> | undefined)?.[key], document);
}

describe("the OpenAPI document", () => {
  it("is a valid OpenAPI 3.1 document", async () => {
    const validator = new Validator();
    const result = await validator.validate(asServed());
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(validator.version).toBe("3.1");
  });

  it("would fail validation with a broken operation (the check is not vacuous)", async () => {
    const broken = asServed();
    broken.paths["/generate"] = { post: { responses: { "200": { content: {} } } } };
    const result = await new Validator().validate(broken);
    expect(result.valid).toBe(false);
  });

  it("refers only to components it has", () => {
    const refs = refsOf(document);
    expect(refs.length).toBeGreaterThan(100);
    const dangling = refs.filter(({ ref }) => !ref.startsWith("#/") || resolve(ref) === undefined);
    expect(dangling).toEqual([]);
  });

  it("keeps a schema's two forms apart only where requests and responses both use it", () => {
    const names = Object.keys(document.components?.schemas ?? {});
    const pairs = names.filter((n) => names.includes(`${n}Output`));
    expect(pairs.sort()).toEqual(["ModelSource", "Placement"]);
    expect(names.filter((n) => /^__schema\d+$/.test(n))).toEqual([]);
  });
});
