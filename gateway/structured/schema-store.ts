// Registered schemas in D1 (structured_schemas): what POST /schemas stores after the schema check,
// and what /generate/structured looks a `schema` name up in. A name holds one schema until deleted.
import { asc, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { type StructuredSchemaRow, structuredSchemas } from "../../schema/db.ts";
import type { RegisteredSchema } from "../../schema/structured.ts";

export function registeredSchemaBody(row: StructuredSchemaRow): RegisteredSchema {
  return {
    name: row.name,
    schema: JSON.parse(row.schema) as Record<string, unknown>,
    description: row.description,
    created_at: row.createdAt.toISOString(),
    created_by: row.createdBy,
  };
}

export async function readSchema(d1: D1Database, name: string): Promise<StructuredSchemaRow | null> {
  const rows = await drizzle(d1)
    .select()
    .from(structuredSchemas)
    .where(eq(structuredSchemas.name, name))
    .limit(1);
  return rows[0] ?? null;
}

export function listSchemas(d1: D1Database): Promise<StructuredSchemaRow[]> {
  return drizzle(d1).select().from(structuredSchemas).orderBy(asc(structuredSchemas.name));
}

/**
 * Stores `row` unless its name is taken: "created", "same" (the name holds this very schema: a
 * repeated registration changes nothing) or "taken" (another schema), with the row the name holds.
 */
export async function registerSchema(
  d1: D1Database,
  row: StructuredSchemaRow,
): Promise<{ outcome: "created" | "same" | "taken"; row: StructuredSchemaRow }> {
  const inserted = await drizzle(d1).insert(structuredSchemas).values(row).onConflictDoNothing().returning();
  if (inserted[0] !== undefined) return { outcome: "created", row: inserted[0] };
  const existing = await readSchema(d1, row.name);
  // Deleted in between: the name is free again, and this registration may take it.
  if (existing === null) return registerSchema(d1, row);
  return { outcome: existing.schema === row.schema ? "same" : "taken", row: existing };
}

export async function deleteSchema(d1: D1Database, name: string): Promise<boolean> {
  const deleted = await drizzle(d1)
    .delete(structuredSchemas)
    .where(eq(structuredSchemas.name, name))
    .returning({ name: structuredSchemas.name });
  return deleted.length > 0;
}
