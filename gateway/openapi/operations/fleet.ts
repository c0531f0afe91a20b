// The fleet's operations: agents and their connection, circuit breakers, health probes, monitoring
// (metrics, the performance report, alerts, the dashboard) and this reference.
import { z } from "zod";
import { AgentsResponse } from "../../../schema/agents-api.ts";
import {
  AgentEventsResponse,
  AgentRevocation,
  AgentRevocationRequest,
  AgentRevokeResponse,
  BreakerResetRequest,
  BreakerResetResponse,
  BreakerStatusResponse,
  HealthResponse,
  ReadyResponse,
} from "../../../schema/api.ts";
import { ActiveAlerts, METRICS, PerformanceReport } from "../../../schema/monitoring.ts";
import type { OperationSpec } from "../operation.ts";
import { params } from "./params.ts";

const html = { type: "string", description: "An HTML page." } as const;

export const fleetOperations: OperationSpec[] = [
  {
    method: "get",
    path: "/agents/connect",
    operationId: "connectAgent",
    tag: "Agents",
    access: "agent",
    summary: "Connect an agent (WebSocket upgrade)",
    description:
      "Where a node agent dials in (agents always dial out; the gateway never dials in). The request must ask " +
      "for a WebSocket upgrade; the socket then carries JSON text frames, AgentFrame from the agent and " +
      "GatewayFrame from the gateway, starting with the agent's `hello` (schema/PROTOCOL.md). A newer " +
      "connection with the same agent id supersedes the older one; the token's `exp` ends the connection.",
    params: {
      query: z.object({
        name: z
          .string()
          .trim()
          .min(1)
          .max(128)
          .optional()
          .describe("A display name (default: the agent id)."),
      }),
      header: z.object({ Upgrade: z.literal("websocket") }),
    },
    responses: {
      "101": { description: "Switching Protocols: the agent's WebSocket is accepted by its pool's hub." },
    },
    errors: ["UPGRADE_REQUIRED", "INVALID_REQUEST", "AGENT_REVOKED", "POOL_NOT_CONFIGURED"],
  },
  {
    method: "get",
    path: "/agents",
    operationId: "listAgents",
    tag: "Agents",
    access: "admin",
    summary: "Every pool's agents and counters",
    responses: { "200": { description: "The agents, per pool and summed.", json: AgentsResponse } },
    errors: [],
  },
  {
    method: "post",
    path: "/agents/{id}/revoke",
    operationId: "revokeAgent",
    tag: "Agents",
    access: "admin",
    summary: "Revoke an agent",
    description:
      "Recorded in the audit log; a live connection is closed with REVOKED (4002), which the agent never " +
      "retries, and its requests fail over. Repeating a revoke is safe. No body: no reason.",
    params: { path: params.agentId },
    body: { schema: AgentRevocationRequest, optional: true, example: { reason: "stolen laptop" } },
    responses: { "200": { description: "The agent's revocation.", json: AgentRevokeResponse } },
    errors: ["AGENT_NOT_FOUND", "UPSTREAM_ERROR"],
  },
  {
    method: "post",
    path: "/agents/{id}/restore",
    operationId: "restoreAgent",
    tag: "Agents",
    access: "admin",
    summary: "Restore a revoked agent",
    params: { path: params.agentId },
    body: { schema: AgentRevocationRequest, optional: true, example: { reason: "found again" } },
    responses: { "200": { description: "The agent's revocation, cleared.", json: AgentRevocation } },
    errors: ["AGENT_NOT_FOUND"],
  },
  {
    method: "get",
    path: "/agents/{id}/events",
    operationId: "listAgentEvents",
    tag: "Agents",
    access: "admin",
    summary: "An agent's audit trail, newest first",
    params: {
      path: params.agentId,
      // agent-revocation.ts checks it with its own (unexported) EventsLimit: 1 to 500, default 50.
      query: z.object({ limit: z.coerce.number().int().min(1).max(500).default(50) }),
    },
    responses: { "200": { description: "The agent and its events.", json: AgentEventsResponse } },
    errors: ["AGENT_NOT_FOUND", "INVALID_REQUEST"],
  },
  {
    method: "get",
    path: "/circuit-breaker/status",
    operationId: "getBreakers",
    tag: "Circuit breakers",
    access: "admin",
    summary: "The default pool's circuit breakers",
    responses: {
      "200": {
        description: "Every breaker, per agent and per agent and model.",
        json: BreakerStatusResponse,
      },
    },
    errors: [],
  },
  {
    method: "post",
    path: "/circuit-breaker/reset",
    operationId: "resetBreakers",
    tag: "Circuit breakers",
    access: "admin",
    summary: "Close circuit breakers by hand",
    description: "`{}` resets every breaker; `{agentId}` that agent's; `{agentId, model}` one.",
    body: { schema: BreakerResetRequest, example: { agentId: "mini-3", model: "tinyllama:1.1.0" } },
    responses: { "200": { description: "How many breakers were reset.", json: BreakerResetResponse } },
    errors: ["BREAKER_NOT_FOUND"],
  },
  {
    method: "get",
    path: "/health",
    operationId: "getHealth",
    tag: "Health and monitoring",
    access: "public",
    summary: "Liveness",
    description: "Always 200 while the Worker runs; `status` says what is degraded.",
    responses: { "200": { description: "Alive.", json: HealthResponse } },
    errors: [],
  },
  {
    method: "get",
    path: "/ready",
    operationId: "getReady",
    tag: "Health and monitoring",
    access: "public",
    summary: "Readiness",
    description: "Ready when D1 answers and at least one pool has an agent serving a model.",
    responses: {
      "200": { description: "Ready.", json: ReadyResponse },
      "503": { description: "Not ready; `reason` says why.", json: ReadyResponse },
    },
    errors: [],
  },
  {
    method: "get",
    path: "/metrics",
    operationId: "getMetrics",
    tag: "Health and monitoring",
    access: "admin_or_metrics_token",
    summary: "Prometheus metrics",
    description:
      "The Prometheus text exposition of every pool's counters, gauges and histograms (schema/monitoring.ts " +
      `METRICS): ${Object.keys(METRICS).join(", ")}.`,
    params: {
      header: z.object({
        Accept: z
          .string()
          .optional()
          .describe("`application/openmetrics-text` (with any q above 0) asks for OpenMetrics 1.0.0."),
      }),
    },
    responses: {
      "200": {
        description: "The metrics, in the format the Accept header asked for.",
        content: {
          "text/plain; version=0.0.4": { type: "string", description: "The Prometheus text format 0.0.4." },
          "application/openmetrics-text; version=1.0.0": {
            type: "string",
            description: "OpenMetrics 1.0.0.",
          },
        },
      },
    },
    errors: [],
  },
  {
    method: "get",
    path: "/performance/report",
    operationId: "getPerformanceReport",
    tag: "Health and monitoring",
    access: "admin",
    summary: "The performance report",
    description:
      "Requests, errors, latency and time-to-first-token percentiles and tokens/s over the last 1 m, 5 m, 1 h " +
      "and 24 h, overall, per model version and per agent; each agent's resources; the health score.",
    responses: { "200": { description: "The report.", json: PerformanceReport } },
    errors: [],
  },
  {
    method: "get",
    path: "/alerts/active",
    operationId: "getActiveAlerts",
    tag: "Health and monitoring",
    access: "admin",
    summary: "The alerts firing now",
    description: "Each alert with the value and threshold that fired it (thresholds: ALERT_THRESHOLDS).",
    responses: { "200": { description: "The active alerts.", json: ActiveAlerts } },
    errors: [],
  },
  {
    method: "get",
    path: "/dashboard",
    operationId: "getDashboard",
    tag: "Health and monitoring",
    access: "public",
    summary: "The operator dashboard",
    description:
      "A page that reads the admin routes above with an admin token the operator gives it; the page itself is public.",
    responses: { "200": { description: "The dashboard.", content: { "text/html": html } } },
    errors: [],
  },
  {
    method: "get",
    path: "/dashboard/",
    operationId: "redirectDashboard",
    tag: "Health and monitoring",
    access: "public",
    summary: "The dashboard, with a trailing slash",
    responses: {
      "301": {
        description: "Moved to /dashboard.",
        headers: z.object({ Location: z.literal("/dashboard") }),
      },
    },
    errors: [],
  },
  {
    method: "get",
    path: "/dashboard/{file}",
    operationId: "getDashboardAsset",
    tag: "Health and monitoring",
    access: "public",
    summary: "The dashboard's script, style sheet and icon",
    description:
      "Cached for good when `v` is the asset's current version (the page links it so), else revalidated.",
    params: {
      path: z.object({
        file: z.string().describe("An asset the page links: `app.js`, `app.css`, `icon.svg`."),
      }),
      query: z.object({ v: z.string().optional().describe("The asset's version, as the page links it.") }),
    },
    responses: {
      "200": {
        description: "The asset.",
        content: {
          "text/javascript": { type: "string" },
          "text/css": { type: "string" },
          "image/svg+xml": { type: "string" },
        },
      },
    },
    errors: ["NOT_FOUND"],
  },
  {
    method: "get",
    path: "/openapi.json",
    operationId: "getOpenApiDocument",
    tag: "Reference",
    access: "public",
    summary: "This OpenAPI 3.1 document",
    description: "Generated from the zod schemas the routes validate with.",
    responses: {
      "200": { description: "The document.", content: { "application/json": { type: "object" } } },
    },
    errors: [],
  },
  {
    method: "get",
    path: "/docs",
    operationId: "getDocs",
    tag: "Reference",
    access: "public",
    summary: "The API reference page",
    description: "This document as a readable page, rendered on the server.",
    responses: { "200": { description: "The reference.", content: { "text/html": html } } },
    errors: [],
  },
];
