// Tags on models and versions, and aliases (`name@stable`) that point at a version. Each change is
// recorded as an event (tags_changed, alias_set, alias_removed); a change that changes nothing is not.
import { and, eq } from "drizzle-orm";
import { modelAliases, modelTags } from "../../schema/db.ts";
import { GatewayError } from "../errors.ts";
import { type Actor, type Db, eventInsert, findModel, findVersion } from "./versions.ts";

/** A tag's target: a model (version null) or one of its versions. */
export interface TagTarget {
  name: string;
  version: string | null;
}

/** Adds or removes one tag; returns the target's tags after. */
export async function changeTag(db: Db, target: TagTarget, tag: string, op: "add" | "remove", actor: Actor) {
  if (target.version === null) await findModel(db, target.name);
  else await findVersion(db, target.name, target.version);
  const version = target.version ?? "";
  const where = and(eq(modelTags.name, target.name), eq(modelTags.version, version));
  const before = await db.select().from(modelTags).where(where);
  const present = before.some((t) => t.tag === tag);
  if (present !== (op === "add")) {
    await db.batch([
      op === "add"
        ? db.insert(modelTags).values({ name: target.name, version, tag }).onConflictDoNothing()
        : db.delete(modelTags).where(and(where, eq(modelTags.tag, tag))),
      eventInsert(db, actor, {
        name: target.name,
        version: target.version,
        kind: "tags_changed",
        detail: op === "add" ? { added: [tag], removed: [] } : { added: [], removed: [tag] },
      }),
    ]);
  }
  const after = new Set(before.map((t) => t.tag));
  if (op === "add") after.add(tag);
  else after.delete(tag);
  return {
    name: target.name,
    version: target.version,
    tags: [...after].sort(),
    changed: present !== (op === "add"),
  };
}

/** Points `name@alias` at a version (which must exist and not be archived). */
export async function setAlias(db: Db, name: string, alias: string, version: string, actor: Actor) {
  const row = await findVersion(db, name, version);
  if (row.status === "archived") throw new GatewayError("VERSION_ARCHIVED", `${name}:${version} is archived`);
  const before = await db
    .select()
    .from(modelAliases)
    .where(and(eq(modelAliases.name, name), eq(modelAliases.alias, alias)))
    .get();
  if (before?.version !== version) {
    await db.batch([
      db
        .insert(modelAliases)
        .values({ name, alias, version })
        .onConflictDoUpdate({ target: [modelAliases.name, modelAliases.alias], set: { version } }),
      eventInsert(db, actor, {
        name,
        version,
        kind: "alias_set",
        detail: { alias, version, previous: before?.version ?? null },
      }),
    ]);
  }
  return { name, alias, version, previous: before?.version ?? null };
}

export async function removeAlias(db: Db, name: string, alias: string, actor: Actor) {
  await findModel(db, name);
  const where = and(eq(modelAliases.name, name), eq(modelAliases.alias, alias));
  const before = await db.select().from(modelAliases).where(where).get();
  if (before === undefined)
    throw new GatewayError("ALIAS_NOT_FOUND", `model "${name}" has no alias "${alias}"`);
  await db.batch([
    db.delete(modelAliases).where(where),
    eventInsert(db, actor, {
      name,
      version: before.version,
      kind: "alias_removed",
      detail: { alias, version: before.version },
    }),
  ]);
  return { name, alias, removed: before.version };
}
