// The audit trail of admin actions (D1 audit_log, append-only): one middleware, mounted once in
// gateway/index.ts, records every admin write route that answered 2xx — who (the token's sub and
// role), what (action and target, actions.ts), when, the request id, and a small detail (the route,
// its parameters, its body). Routes that write their row in the same batch as their change (agent
// revoke/restore, token revocations) build it with auditRow() and say so with markAudited().

import { drizzle } from "drizzle-orm/d1";
import type { Context, MiddlewareHandler } from "hono";
import { auditLog } from "../../../schema/db.ts";
import { describeError, log } from "../../log.ts";
import type { AppEnv, Caller } from "../../types.ts";
import { AUDITED_ROUTES, type AuditInput } from "./actions.ts";

declare module "hono" {
  interface ContextVariableMap {
    /** Set by a route that wrote its own audit row. */
    audited: true;
  }
}

/** Methods that change nothing: never audited. */
const READS = new Set(["GET", "HEAD", "OPTIONS"]);

/** A body larger than this (as JSON) is recorded by its keys only. */
const MAX_BODY_CHARS = 2_048;

export type AuditRow = typeof auditLog.$inferInsert;

/** An audit row: who did what to which target in which request. */
export function auditRow(fields: {
  actor: Caller;
  action: string;
  target: string;
  requestId: string;
  detail: Record<string, unknown>;
  at?: Date;
}): AuditRow {
  return {
    at: fields.at ?? new Date(),
    actor: fields.actor.sub,
    actorRole: fields.actor.role,
    action: fields.action,
    target: fields.target,
    requestId: fields.requestId,
    detail: fields.detail,
  };
}

/** Tells the middleware this request's audit row is written already (with the route's own change). */
export function markAudited<E extends AppEnv>(c: Context<E>): void {
  c.set("audited", true);
}

/**
 * Records admin writes after they succeed. The row is written before the answer leaves, so an
 * admin who reads GET /audit next sees it. If D1 refuses it, the action has still happened: the
 * row is logged in full (level error) rather than lost, and the answer is unchanged.
 */
export function audit(): MiddlewareHandler<AppEnv> {
  return async function audit(c, next) {
    await next();
    const access = c.get("access");
    const status = c.res.status;
    if (access?.required !== "admin" || READS.has(c.req.method) || status < 200 || status >= 300) return;
    if (c.get("audited")) return;
    const row = await describe(c, access.route, access.params);
    try {
      await drizzle(c.env.DB).insert(auditLog).values(row);
    } catch (err) {
      log("error", "audit: the action succeeded but its audit row was not written", {
        auditRow: { ...row, at: row.at.toISOString() },
        ...describeError(err),
      });
    }
  };
}

async function describe(
  c: Context<AppEnv>,
  route: string,
  params: Record<string, string>,
): Promise<AuditRow> {
  const key = `${c.req.method} ${route}`;
  const named = AUDITED_ROUTES[key];
  const body = (c.var as Record<string, unknown>).body;
  const input: AuditInput = { params, body, response: undefined };
  if (named?.fromResponse)
    input.response = await c.res
      .clone()
      .json()
      .catch(() => undefined);
  const action =
    named === undefined ? key : typeof named.action === "string" ? named.action : named.action(input);
  return auditRow({
    actor: c.get("caller"),
    action,
    target: named?.target(input) ?? c.req.path,
    requestId: c.get("requestId"),
    detail: {
      route: key,
      ...(Object.keys(params).length > 0 ? { params } : {}),
      ...(body === undefined ? {} : { body: small(body) }),
      status: c.res.status,
    },
  });
}

/** The body itself when it is small; else what it held, without the values. */
function small(body: unknown): unknown {
  const json = JSON.stringify(body) ?? "null";
  if (json.length <= MAX_BODY_CHARS) return body;
  const keys = typeof body === "object" && body !== null ? Object.keys(body).slice(0, 32) : [];
  return { truncated: true, chars: json.length, keys };
}
