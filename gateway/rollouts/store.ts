// Rollouts in D1: the `rollouts` row (spec, state, result) and its append-only `rollout_events`.
// A change that moves traffic also appends a model_events row, because the registry's revision
// (the routing table's) is max(model_events.id): hubs take a pushed table only when it is newer.
import { and, desc, eq, type SQL } from "drizzle-orm";
import { type RolloutRow, rolloutEvents, rollouts } from "../../schema/db.ts";
import type { RolloutRoute } from "../../schema/rollouts.ts";
import { GatewayError } from "../errors.ts";
import { type Actor, type Db, eventInsert, isUniqueViolation } from "../registry/versions.ts";

export interface RolloutEventInput {
  at: number;
  /** The token's `sub`, or "controller". */
  actor: string;
  kind: string;
  detail: Record<string, unknown>;
  requestId?: string | null;
}

/** The part of a rollout's state the routing table reads (json_extract in loadRoutingTable). */
export interface RoutedState {
  route: RolloutRoute | null;
  [key: string]: unknown;
}

export interface NewRollout {
  id: string;
  kind: "deployment" | "ab_test";
  model: string;
  strategy: string;
  status: string;
  spec: Record<string, unknown>;
  state: RoutedState;
  endsAt: number | null;
  now: number;
}

const eventRows = (id: string, events: readonly RolloutEventInput[]) =>
  events.map((e) => ({
    rolloutId: id,
    at: new Date(e.at),
    actor: e.actor,
    kind: e.kind,
    requestId: e.requestId ?? null,
    detail: e.detail,
  }));

/**
 * Inserts a running rollout with its first events, and a model event so hubs see the new table.
 * Another running rollout on the model (the partial unique index) is 409 ROLLOUT_IN_PROGRESS; an
 * A/B test id already used is 409 AB_TEST_EXISTS.
 */
export async function insertRollout(
  db: Db,
  rollout: NewRollout,
  events: readonly RolloutEventInput[],
  actor: Actor,
): Promise<RolloutRow> {
  const row = {
    id: rollout.id,
    kind: rollout.kind,
    model: rollout.model,
    strategy: rollout.strategy,
    status: rollout.status,
    running: true,
    spec: rollout.spec,
    state: rollout.state as Record<string, unknown>,
    result: null,
    createdBy: actor.sub,
    createdAt: new Date(rollout.now),
    updatedAt: new Date(rollout.now),
    endsAt: rollout.endsAt === null ? null : new Date(rollout.endsAt),
    endedAt: null,
  };
  try {
    await db.batch([
      db.insert(rollouts).values(row),
      ...(events.length > 0 ? [db.insert(rolloutEvents).values(eventRows(rollout.id, events))] : []),
      eventInsert(db, actor, {
        name: rollout.model,
        version: null,
        kind: "rollout_started",
        detail: { rollout: rollout.id, strategy: rollout.strategy },
      }),
    ]);
  } catch (err) {
    if (!isUniqueViolation(err)) throw err;
    const existing = await db.select().from(rollouts).where(eq(rollouts.id, rollout.id)).get();
    if (existing !== undefined) {
      throw new GatewayError("AB_TEST_EXISTS", `an A/B test or deployment "${rollout.id}" already exists`);
    }
    const running = await runningRollout(db, rollout.model);
    throw inProgress(rollout.model, running);
  }
  return row as RolloutRow;
}

export function inProgress(model: string, running: RolloutRow | undefined): GatewayError {
  const what = running === undefined ? "a rollout" : `${describeKind(running)} ${running.id}`;
  return new GatewayError(
    "ROLLOUT_IN_PROGRESS",
    `model "${model}" already has ${what} running; one deployment or A/B test per model at a time`,
  );
}

const describeKind = (row: RolloutRow) =>
  row.kind === "ab_test" ? "A/B test" : `${row.strategy.replace("_", "-")} deployment`;

export interface RolloutUpdate {
  status: string;
  state: RoutedState;
  /** False once it ended; the row then leaves the routing table. */
  running: boolean;
  result?: Record<string, unknown> | null;
  now: number;
}

/**
 * Writes the controller's new state and events in one batch. `routeChanged` appends a model
 * event too (kind rollout_changed, or rollout_ended when it stops running), so the next published
 * table is newer than what hubs hold. The update only applies while the row is still running: a
 * rollout that ended meanwhile (a stop racing a tick) is left as it ended; false then.
 */
export async function saveRollout(
  db: Db,
  row: Pick<RolloutRow, "id" | "model">,
  update: RolloutUpdate,
  events: readonly RolloutEventInput[],
  routeChanged: boolean,
  actor: Actor,
): Promise<boolean> {
  const set = {
    status: update.status,
    state: update.state as Record<string, unknown>,
    running: update.running,
    updatedAt: new Date(update.now),
    ...(update.running ? {} : { endedAt: new Date(update.now) }),
    ...(update.result === undefined ? {} : { result: update.result }),
  };
  const statements = [
    db
      .update(rollouts)
      .set(set)
      .where(and(eq(rollouts.id, row.id), eq(rollouts.running, true)))
      .returning({ id: rollouts.id }),
    ...(events.length > 0 ? [db.insert(rolloutEvents).values(eventRows(row.id, events))] : []),
    ...(routeChanged || !update.running
      ? [
          eventInsert(db, actor, {
            name: row.model,
            version: null,
            kind: update.running ? "rollout_changed" : "rollout_ended",
            detail: { rollout: row.id, status: update.status, share: update.state.route?.share ?? null },
          }),
        ]
      : []),
  ] as const;
  const [updated] = await db.batch(statements as unknown as Parameters<Db["batch"]>[0]);
  return (updated as unknown[]).length > 0;
}

export async function findRollout(db: Db, id: string): Promise<RolloutRow | undefined> {
  return db.select().from(rollouts).where(eq(rollouts.id, id)).get();
}

export async function runningRollout(db: Db, model: string): Promise<RolloutRow | undefined> {
  return db
    .select()
    .from(rollouts)
    .where(and(eq(rollouts.model, model), eq(rollouts.running, true)))
    .get();
}

export interface RolloutQuery {
  kind: "deployment" | "ab_test";
  model?: string;
  status?: string;
  running?: boolean;
  limit: number;
}

export async function listRollouts(db: Db, query: RolloutQuery): Promise<RolloutRow[]> {
  const conditions: SQL[] = [eq(rollouts.kind, query.kind)];
  if (query.model !== undefined) conditions.push(eq(rollouts.model, query.model));
  if (query.status !== undefined) conditions.push(eq(rollouts.status, query.status));
  if (query.running !== undefined) conditions.push(eq(rollouts.running, query.running));
  return db
    .select()
    .from(rollouts)
    .where(and(...conditions))
    .orderBy(desc(rollouts.createdAt), desc(rollouts.id))
    .limit(query.limit)
    .all();
}

/** A rollout's events, oldest first (at most `limit`, the newest kept when there are more). */
export async function rolloutEventsOf(db: Db, id: string, limit = 500) {
  const rows = await db
    .select()
    .from(rolloutEvents)
    .where(eq(rolloutEvents.rolloutId, id))
    .orderBy(desc(rolloutEvents.id))
    .limit(limit)
    .all();
  return rows.reverse();
}
