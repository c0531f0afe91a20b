// /schemas: registering JSON Schemas by name (admins), listing and reading them (users), deleting
// them, the schema check at registration, and /generate/structured naming one.
import { describe, expect, it } from "vitest";
import type { ErrorBody } from "../../schema/api.ts";
import type { GenerateStructuredResponse, RegisteredSchema } from "../../schema/structured.ts";
import { bearer, gatewayFetch, postJson, trackedAgents, uniqueId } from "./helpers.ts";
import { answer } from "./security-helpers.ts";

const agents = trackedAgents();

async function as(role: "admin" | "user", method: string, path: string, body?: unknown): Promise<Response> {
  return gatewayFetch(path, {
    method,
    headers: {
      ...(await bearer({ role, sub: `${role}-schemas` })),
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

const code = async (response: Response) => ((await response.json()) as ErrorBody).error.code;
const PERSON = { type: "object", properties: { name: { type: "string" } }, required: ["name"] };

describe("/schemas", () => {
  it("an admin registers a schema (201); users list it and read it by name", async () => {
    const name = uniqueId("person");
    const created = await as("admin", "POST", "/schemas", { name, schema: PERSON, description: "a person" });
    expect(created.status).toBe(201);
    const body = (await created.json()) as RegisteredSchema;
    expect(body).toMatchObject({
      name,
      schema: PERSON,
      description: "a person",
      created_by: "admin-schemas",
    });
    expect(Number.isNaN(Date.parse(body.created_at))).toBe(false);

    const read = await as("user", "GET", `/schemas/${name}`);
    expect(read.status).toBe(200);
    expect(await read.json()).toEqual(body);
    const list = (await (await as("user", "GET", "/schemas")).json()) as { schemas: RegisteredSchema[] };
    expect(list.schemas.find((s) => s.name === name)).toEqual(body);
  });

  it("the same schema again is 200 and changes nothing; another one under the name is 409 SCHEMA_EXISTS", async () => {
    const name = uniqueId("again");
    expect((await as("admin", "POST", "/schemas", { name, schema: PERSON })).status).toBe(201);
    const same = await as("admin", "POST", "/schemas", { name, schema: PERSON });
    expect(same.status).toBe(200);
    const other = await as("admin", "POST", "/schemas", { name, schema: { type: "integer" } });
    expect(other.status).toBe(409);
    expect(await code(other)).toBe("SCHEMA_EXISTS");
    expect(((await (await as("user", "GET", `/schemas/${name}`)).json()) as RegisteredSchema).schema).toEqual(
      PERSON,
    );
  });

  it("a schema is checked at registration, with its path", async () => {
    const refused = await as("admin", "POST", "/schemas", {
      name: uniqueId("bad"),
      schema: { type: "object", properties: { a: { $ref: "https://example.com/a.json" } } },
    });
    expect(refused.status).toBe(400);
    expect(await code(refused)).toBe("SCHEMA_REMOTE_REF");
    const unsupported = await as("admin", "POST", "/schemas", { name: uniqueId("bad"), schema: { if: {} } });
    expect(await code(unsupported)).toBe("UNSUPPORTED_SCHEMA_KEYWORD");
  });

  it.each([
    [{ name: "has space", schema: PERSON }],
    [{ name: "", schema: PERSON }],
    [{ name: "x".repeat(65), schema: PERSON }],
    [{ name: "ok", schema: "not an object" }],
    [{ name: "ok" }],
    [{ name: "ok", schema: PERSON, extra: 1 }],
  ])("%j is 400 INVALID_REQUEST", async (body) => {
    const response = await as("admin", "POST", "/schemas", body);
    expect(response.status).toBe(400);
    expect(await code(response)).toBe("INVALID_REQUEST");
  });

  it("users may not register or delete", async () => {
    const name = uniqueId("mine");
    expect((await as("user", "POST", "/schemas", { name, schema: PERSON })).status).toBe(403);
    expect((await as("admin", "POST", "/schemas", { name, schema: PERSON })).status).toBe(201);
    expect((await as("user", "DELETE", `/schemas/${name}`)).status).toBe(403);
  });

  it("an admin deletes a schema (204); then it is SCHEMA_NOT_FOUND, and the name is free again", async () => {
    const name = uniqueId("gone");
    await as("admin", "POST", "/schemas", { name, schema: PERSON });
    expect((await as("admin", "DELETE", `/schemas/${name}`)).status).toBe(204);
    const read = await as("user", "GET", `/schemas/${name}`);
    expect(read.status).toBe(404);
    expect(await code(read)).toBe("SCHEMA_NOT_FOUND");
    const again = await as("admin", "DELETE", `/schemas/${name}`);
    expect(await code(again)).toBe("SCHEMA_NOT_FOUND");
    expect((await as("admin", "POST", "/schemas", { name, schema: { type: "integer" } })).status).toBe(201);
  });

  it("an invalid name in the path is 400", async () => {
    const response = await as("user", "GET", `/schemas/${encodeURIComponent("a b")}`);
    expect(response.status).toBe(400);
  });

  it("/generate/structured uses a registered schema by name; an unknown name is 404 SCHEMA_NOT_FOUND", async () => {
    const name = uniqueId("by-name");
    await as("admin", "POST", "/schemas", { name, schema: PERSON });
    const model = uniqueId("so-named");
    const agent = await agents.serving(model);
    const pending = postJson("/generate/structured", { prompt: "x", model, schema: name });
    const frame = await answer(agent, ['{"name":"N"}']);
    expect(frame.format).toEqual(PERSON);
    const body = (await (await pending).json()) as GenerateStructuredResponse;
    expect(body).toMatchObject({ data: { name: "N" }, attempts: 1 });

    const missing = await postJson("/generate/structured", {
      prompt: "x",
      model,
      schema: uniqueId("nobody"),
    });
    expect(missing.status).toBe(404);
    expect(await code(missing)).toBe("SCHEMA_NOT_FOUND");
    expect(await agent.unread("generate")).toEqual([]);
  });
});
