// /schemas: JSON Schemas registered by name for /generate/structured (admins register and delete,
// users list and read). A schema is checked like a request's before it is stored.
import { Hono } from "hono";
import { SchemaName, SchemaRegistration } from "../../schema/structured.ts";
import { GatewayError } from "../errors.ts";
import { auth } from "../middleware/auth/index.ts";
import { jsonBody } from "../middleware/json-body/index.ts";
import { checkSchema } from "../structured/schema-check.ts";
import {
  deleteSchema,
  listSchemas,
  readSchema,
  registeredSchemaBody,
  registerSchema,
} from "../structured/schema-store.ts";
import type { AppEnv } from "../types.ts";

function schemaName(raw: string): string {
  const parsed = SchemaName.safeParse(raw);
  if (!parsed.success) {
    throw new GatewayError("INVALID_REQUEST", "a schema name is 1-64 letters, digits, '.', '_' or '-'", {
      param: "name",
    });
  }
  return parsed.data;
}

const notFound = (name: string) =>
  new GatewayError("SCHEMA_NOT_FOUND", `no schema is registered as ${JSON.stringify(name)}`, {
    param: "name",
  });

export const schemaRoutes = new Hono<AppEnv>()
  .post("/", auth({ role: "admin" }), jsonBody(SchemaRegistration), async (c) => {
    const body = c.get("body");
    const checked = checkSchema(body.schema, "schema");
    const { outcome, row } = await registerSchema(c.env.DB, {
      name: body.name,
      schema: JSON.stringify(checked.schema),
      description: body.description ?? null,
      createdAt: new Date(),
      createdBy: c.get("caller").sub,
    });
    if (outcome === "taken") {
      throw new GatewayError(
        "SCHEMA_EXISTS",
        `the name ${JSON.stringify(body.name)} holds another schema; delete it first or choose another name`,
        { param: "name" },
      );
    }
    return c.json(registeredSchemaBody(row), outcome === "created" ? 201 : 200);
  })
  .get("/", auth({ role: "user" }), async (c) => {
    const rows = await listSchemas(c.env.DB);
    return c.json({ schemas: rows.map(registeredSchemaBody) });
  })
  .get("/:name", auth({ role: "user" }), async (c) => {
    const name = schemaName(c.req.param("name"));
    const row = await readSchema(c.env.DB, name);
    if (row === null) throw notFound(name);
    return c.json(registeredSchemaBody(row));
  })
  .delete("/:name", auth({ role: "admin" }), async (c) => {
    const name = schemaName(c.req.param("name"));
    if (!(await deleteSchema(c.env.DB, name))) throw notFound(name);
    return c.body(null, 204);
  });
