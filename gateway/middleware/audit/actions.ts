// The names the audit trail gives each admin write route: its action ("<kind>.<verb>") and the
// target it acted on ("<kind>:<id>"), from the route's path parameters, its parsed body, or (for a
// create) the id in its answer. A route missing here is still recorded, as "<METHOD> <route>" on its
// path; test/gateway/audit.test.ts fails until it has a name.

export interface AuditInput {
  params: Record<string, string>;
  /** The route's parsed JSON body (json-body's `body`), if it has one. */
  body: unknown;
  /** The JSON answer; read only for routes that say `fromResponse`. */
  response: unknown;
}

export interface AuditedRoute {
  action: string | ((input: AuditInput) => string);
  target: (input: AuditInput) => string;
  /** The target is in the answer (an id the action created). */
  fromResponse?: true;
}

const field = (value: unknown, key: string): string => {
  const v = typeof value === "object" && value !== null ? (value as Record<string, unknown>)[key] : undefined;
  return typeof v === "string" || typeof v === "number" ? String(v) : "?";
};

const model =
  (param: string) =>
  ({ params }: AuditInput) =>
    `model:${params[param] ?? "?"}`;

/** Keyed by "<METHOD> <route pattern as mounted>". */
export const AUDITED_ROUTES: Readonly<Record<string, AuditedRoute>> = {
  // The agent routes write their rows themselves, in the batch that changes the agent.
  "POST /agents/:id/revoke": { action: "agent.revoke", target: ({ params }) => `agent:${params.id}` },
  "POST /agents/:id/restore": { action: "agent.restore", target: ({ params }) => `agent:${params.id}` },
  "POST /circuit-breaker/reset": {
    action: "breaker.reset",
    target: ({ body }) => {
      const agent = field(body, "agentId");
      const modelName = field(body, "model");
      return agent === "?" ? "breaker:*" : `breaker:${agent}${modelName === "?" ? "" : `/${modelName}`}`;
    },
  },
  "POST /schemas": { action: "schema.register", target: ({ body }) => `schema:${field(body, "name")}` },
  "DELETE /schemas/:name": {
    action: "schema.delete",
    target: ({ params }) => `schema:${params.name ?? "?"}`,
  },
  "POST /models/register": {
    action: "model.register",
    target: ({ body }) => `model:${field(body, "name")}:${field(body, "version")}`,
  },
  "PUT /models/:model_id/artifact": { action: "model.artifact_upload", target: model("model_id") },
  "POST /models/:model_id/activate": { action: "model.activate", target: model("model_id") },
  "POST /models/:name/rollback": { action: "model.rollback", target: model("name") },
  "POST /models/:name/deactivate": { action: "model.deactivate", target: model("name") },
  "POST /models/:model_id/deprecate": { action: "model.deprecate", target: model("model_id") },
  "POST /models/:model_id/archive": { action: "model.archive", target: model("model_id") },
  "POST /models/:model_id/metrics": { action: "model.metrics_record", target: model("model_id") },
  "PUT /models/:target/tags/:tag": { action: "model.tag_add", target: model("target") },
  "DELETE /models/:target/tags/:tag": { action: "model.tag_remove", target: model("target") },
  "PUT /models/:name/aliases/:alias": {
    action: "model.alias_set",
    target: ({ params }) => `model:${params.name}@${params.alias}`,
  },
  "DELETE /models/:name/aliases/:alias": {
    action: "model.alias_remove",
    target: ({ params }) => `model:${params.name}@${params.alias}`,
  },
  "POST /models/:model_id/deploy": {
    action: "deployment.start",
    target: ({ response }) => `deployment:${field(response, "deployment_id")}`,
    fromResponse: true,
  },
  "POST /deployments/:id/:command": {
    // The verb is the command (pause, resume, promote, rollback, ...): deployment.pause.
    action: ({ params }) => `deployment.${params.command}`,
    target: ({ params }) => `deployment:${params.id}`,
  },
  "POST /ab-tests/start": {
    action: "ab_test.start",
    target: ({ response }) => `ab_test:${field(response, "test_id")}`,
    fromResponse: true,
  },
  "POST /ab-tests/:id/stop": { action: "ab_test.stop", target: ({ params }) => `ab_test:${params.id}` },
  // The token routes write their rows themselves, in the batch that changes the deny-list.
  "POST /tokens/revoke": {
    action: "token.revoke",
    target: ({ body }) =>
      field(body, "jti") === "?" ? `subject:${field(body, "sub")}` : `token:${field(body, "jti")}`,
  },
  "DELETE /tokens/revoked/:id": {
    action: "token.restore",
    target: ({ params }) => `revocation:${params.id}`,
  },
  // Issue 12's other parts: the injection policy's admin lines, and rate-limit overrides.
  "PUT /security/injection-policy": {
    action: "security.injection_policy_set",
    target: ({ body }) => {
      const [route, modelName] = [field(body, "route"), field(body, "model")];
      return `injection_policy:${route === "?" ? "*" : route}/${modelName === "?" ? "*" : modelName}`;
    },
  },
  "PUT /rate-limits/:subject": {
    action: "rate_limit.set",
    target: ({ params }) => `subject:${params.subject}`,
  },
  "DELETE /rate-limits/:subject": {
    action: "rate_limit.remove",
    target: ({ params }) => `subject:${params.subject}`,
  },
};
