// Revoking and restoring agents (POST /agents/:id/revoke, /restore): the live socket is closed
// with REVOKED, reconnects are refused until a restore, every action is in the audit trail with
// its actor; and an agent's token expiry reaches the hub with its connection.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { AgentEventsResponse, AgentRevocation, AgentRevokeResponse } from "../../schema/api.ts";
import { CloseCode } from "../../schema/protocol.ts";
import { bearer, gatewayFetch, TestAgent, trackedAgents, uniqueId, waitForNoAgents } from "./helpers.ts";
import {
  agentToken,
  closedWithin,
  closeQuietly,
  connectWith,
  fetchWith,
  recordingHubs,
  sayHello,
} from "./instrumented-env.ts";

const agents = trackedAgents();

async function adminPost(path: string, body?: unknown, sub = "ops-alice"): Promise<Response> {
  const headers: Record<string, string> = await bearer({ role: "admin", sub });
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return gatewayFetch(path, {
    method: "POST",
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function events(agentId: string) {
  const response = await gatewayFetch(`/agents/${agentId}/events`, {
    headers: await bearer({ role: "admin" }),
  });
  expect(response.status).toBe(200);
  return AgentEventsResponse.parse(await response.json());
}

describe("POST /agents/:id/revoke", () => {
  it("closes the live socket with REVOKED, refuses reconnects, and a restore lets it back", async () => {
    const agent = await agents.serving("rev-model");

    const revoked = await adminPost(`/agents/${agent.id}/revoke`, { reason: "laptop stolen" });
    expect(revoked.status).toBe(200);
    const body = AgentRevokeResponse.parse(await revoked.json());
    expect(body).toEqual({
      agentId: agent.id,
      revoked: true,
      revokedAt: expect.any(String),
      revokedBy: "ops-alice",
      reason: "laptop stolen",
      disconnected: true,
    });
    expect(await closedWithin(agent, 2000)).toMatchObject({ code: CloseCode.REVOKED });

    const refused = await TestAgent.upgrade(agent.id);
    expect(refused.status).toBe(403);
    expect(await refused.json()).toMatchObject({ error: { code: "AGENT_REVOKED" } });

    // Idempotent: a second revoke (here without a body) keeps the first time, actor and reason.
    // Once the agent answered the close (a node agent's ws does so by itself) and the hub let the
    // socket go, there is nothing left to disconnect.
    agent.close();
    await waitForNoAgents();
    const again = await adminPost(`/agents/${agent.id}/revoke`, undefined, "ops-bob");
    expect(again.status).toBe(200);
    expect(AgentRevokeResponse.parse(await again.json())).toEqual({ ...body, disconnected: false });

    const restored = await adminPost(`/agents/${agent.id}/restore`, { reason: "laptop found" }, "ops-carol");
    expect(restored.status).toBe(200);
    expect(AgentRevocation.parse(await restored.json())).toEqual({
      agentId: agent.id,
      revoked: false,
      revokedAt: null,
      revokedBy: null,
      reason: null,
    });
    agents.adopt(await TestAgent.ready({}, agent.id));
  });

  it("records every revoke and restore with its actor in the append-only audit log", async () => {
    const agent = await agents.serving("rev-audit-model");
    expect(
      (await adminPost(`/agents/${agent.id}/revoke`, { reason: "suspicious" }, "ops-alice")).status,
    ).toBe(200);
    expect((await adminPost(`/agents/${agent.id}/revoke`, undefined, "ops-bob")).status).toBe(200);
    expect((await adminPost(`/agents/${agent.id}/restore`, undefined, "ops-carol")).status).toBe(200);

    const { agent: row, events: trail } = await events(agent.id);
    expect(row).toMatchObject({ agentId: agent.id, revoked: false, pool: "default" });
    expect(trail.map((e) => [e.action, e.actor, e.actorRole])).toEqual([
      ["agent.restore", "ops-carol", "admin"],
      ["agent.revoke", "ops-bob", "admin"],
      ["agent.revoke", "ops-alice", "admin"],
    ]);
    expect(trail.map((e) => e.detail)).toEqual([
      { reason: null, wasRevoked: true, revokedAt: expect.any(String), revokedBy: "ops-alice" },
      { reason: null, alreadyRevoked: true, pool: "default" },
      { reason: "suspicious", alreadyRevoked: false, pool: "default" },
    ]);
    for (const e of trail) {
      expect(e.target).toBe(`agent:${agent.id}`);
      expect(e.requestId).toMatch(/^[0-9a-f-]{36}$/);
    }

    // The same rows in D1, and D1 refuses to rewrite or delete them.
    const stored = await env.DB.prepare("SELECT actor, action FROM audit_log WHERE target = ? ORDER BY id")
      .bind(`agent:${agent.id}`)
      .all();
    expect(stored.results).toEqual([
      { actor: "ops-alice", action: "agent.revoke" },
      { actor: "ops-bob", action: "agent.revoke" },
      { actor: "ops-carol", action: "agent.restore" },
    ]);
    await expect(
      env.DB.prepare("UPDATE audit_log SET actor = 'someone-else' WHERE target = ?")
        .bind(`agent:${agent.id}`)
        .run(),
    ).rejects.toThrow(/append-only/);
    await expect(
      env.DB.prepare("DELETE FROM audit_log WHERE target = ?").bind(`agent:${agent.id}`).run(),
    ).rejects.toThrow(/append-only/);

    const limited = await gatewayFetch(`/agents/${agent.id}/events?limit=1`, {
      headers: await bearer({ role: "admin" }),
    });
    expect(AgentEventsResponse.parse(await limited.json()).events.map((e) => e.action)).toEqual([
      "agent.restore",
    ]);
  });

  it("404 AGENT_NOT_FOUND for an agent the gateway never saw, and nothing is recorded", async () => {
    const id = uniqueId("ghost");
    for (const path of [`/agents/${id}/revoke`, `/agents/${id}/restore`]) {
      const response = await adminPost(path, {});
      expect(response.status).toBe(404);
      expect(await response.json()).toMatchObject({ error: { code: "AGENT_NOT_FOUND" } });
      expect(response.headers.get("X-Error-Code")).toBe("AGENT_NOT_FOUND");
    }
    const listed = await gatewayFetch(`/agents/${id}/events`, { headers: await bearer({ role: "admin" }) });
    expect(listed.status).toBe(404);
    const rows = await env.DB.prepare("SELECT COUNT(*) AS n FROM audit_log WHERE target = ?")
      .bind(`agent:${id}`)
      .first<{ n: number }>();
    expect(rows?.n).toBe(0);
  });

  it("needs role admin; a body must be JSON with at most a reason of 1 to 256 characters", async () => {
    const agent = await agents.serving("rev-auth-model");
    for (const role of ["user", "agent"] as const) {
      const response = await gatewayFetch(`/agents/${agent.id}/revoke`, {
        method: "POST",
        headers: await bearer({ role, sub: agent.id }),
      });
      expect(response.status).toBe(403);
      expect(await response.json()).toMatchObject({ error: { code: "FORBIDDEN" } });
    }
    const anonymous = await gatewayFetch(`/agents/${agent.id}/revoke`, { method: "POST" });
    expect(anonymous.status).toBe(401);

    for (const body of [{ reason: "" }, { reason: "x".repeat(257) }, { reason: 5 }, { why: "no" }]) {
      const response = await adminPost(`/agents/${agent.id}/revoke`, body);
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(await response.json()).toMatchObject({ error: { code: "INVALID_REQUEST" } });
    }
    const text = await gatewayFetch(`/agents/${agent.id}/revoke`, {
      method: "POST",
      headers: { ...(await bearer({ role: "admin" })), "Content-Type": "text/plain" },
      body: "please",
    });
    expect(text.status).toBe(415);
    // None of these revoked it: the agent is still connected.
    expect(await closedWithin(agent, 200)).toBeNull();
    expect((await events(agent.id)).events).toEqual([]);
  });

  it("closes a connection the hub accepted while the revoke was being written", async () => {
    // The interleaving the connect route guards against: the agent's row is read (not revoked),
    // then a revoke commits before the hub has the socket, so the revoke's disconnect finds nothing.
    // Here the revoke is written at the moment the Worker registers the connecting agent.
    const id = uniqueId("race");
    const { token } = await agentToken(id, 300);
    const revokeNow = () =>
      env.DB.prepare("UPDATE agents SET revoked_at = ?, revoked_by = 'ops-race' WHERE id = ?")
        .bind(Date.now(), id)
        .run();
    /** The statement, revoking the agent right after it ran. */
    const thenRevoke = (statement: D1PreparedStatement): D1PreparedStatement =>
      new Proxy(statement, {
        get(s, p) {
          const v = Reflect.get(s, p, s);
          if (typeof v !== "function") return v;
          if (p === "bind") return (...args: unknown[]) => thenRevoke(v.apply(s, args));
          return async (...args: unknown[]) => {
            const result = await v.apply(s, args);
            await revokeNow();
            return result;
          };
        },
      });
    const db = new Proxy(env.DB, {
      get(target, property) {
        const value = Reflect.get(target, property, target);
        if (typeof value !== "function") return value;
        if (property !== "prepare") return value.bind(target);
        return (query: string) => {
          const statement = value.call(target, query) as D1PreparedStatement;
          return /^insert into "agents"/i.test(query) ? thenRevoke(statement) : statement;
        };
      },
    });
    const agent = await connectWith({ ...env, DB: db }, id, token);
    expect(await closedWithin(agent, 2000)).toMatchObject({ code: CloseCode.REVOKED });
  });
});

describe("token expiry of a connected agent", () => {
  it("the connect passes the token's exp to the agent's hub", async () => {
    const id = uniqueId("exp-header");
    const { token, exp } = await agentToken(id, 120);
    const hubs = recordingHubs();
    const agent = await connectWith({ ...env, AGENT_HUB: hubs.namespace }, id, token);
    try {
      const connect = hubs.calls.find((c) => c.method === "fetch" && c.path === "/connect");
      expect(connect?.pool).toBe("default");
      expect(connect?.headers?.get("X-Orchard-Token-Exp")).toBe(String(exp));
    } finally {
      closeQuietly(agent);
    }
  });

  // Needs the hub's side (gateway/hub: close with UNAUTHORIZED at the X-Orchard-Token-Exp time).
  it("closes the agent's socket with UNAUTHORIZED once its token expires", async () => {
    const id = uniqueId("exp-close");
    const { token, exp } = await agentToken(id, 2);
    const agent = await connectWith(env, id, token);
    await sayHello(agent);
    const closed = await closedWithin(agent, exp * 1000 + 3000 - Date.now());
    expect(closed).toMatchObject({ code: CloseCode.UNAUTHORIZED });
    // Back with the same token: refused, the agent needs a fresh one.
    const again = await fetchWith(env, "/agents/connect", {
      headers: { Upgrade: "websocket", Authorization: `Bearer ${token}` },
    });
    expect(again.status).toBe(401);
    expect(await again.json()).toMatchObject({ error: { code: "TOKEN_EXPIRED" } });
  });
});
