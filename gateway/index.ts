// The gateway Worker: assembles the Hono app from its middleware and route sub-apps, and exports
// the Durable Object classes wrangler.toml binds.
import { Hono } from "hono";
import { tracedFetch } from "./hub/bench-trace.ts";
import { accessLog } from "./middleware/access-log/index.ts";
import { audit } from "./middleware/audit/index.ts";
import { cors } from "./middleware/cors/index.ts";
import { errorHandler, notFoundHandler } from "./middleware/errors/index.ts";
import { requestId } from "./middleware/request-id/index.ts";
import { securityHeaders } from "./middleware/security-headers/index.ts";
import { agentRoutes } from "./routes/agents.ts";
import { auditRoutes } from "./routes/audit.ts";
import { circuitBreakerRoutes } from "./routes/circuit-breakers.ts";
import { dashboardRoutes } from "./routes/dashboard.ts";
import { generateRoutes } from "./routes/generate.ts";
import { healthRoutes } from "./routes/health.ts";
import { metricsRoutes } from "./routes/metrics.ts";
import { modelRoutes } from "./routes/models.ts";
import { monitoringRoutes } from "./routes/monitoring.ts";
import { openaiRoutes } from "./routes/openai.ts";
import { openapiRoutes } from "./routes/openapi.ts";
import { rateLimitRoutes } from "./routes/rate-limits.ts";
import { abTestRoutes, deploymentRoutes, feedbackRoutes } from "./routes/rollouts.ts";
import { schemaRoutes } from "./routes/schemas.ts";
import { securityRoutes } from "./routes/security.ts";
import { structuredRoutes } from "./routes/structured.ts";
import { tokenRoutes } from "./routes/tokens.ts";
import type { AppEnv } from "./types.ts";

export { AgentHub } from "./hub/agent-hub.ts";
export { RolloutController } from "./rollouts/controller.ts";

const app = new Hono<AppEnv>()
  .use(requestId())
  .use(securityHeaders())
  .use(cors())
  .use(accessLog())
  .use(audit())
  .route("/", healthRoutes)
  .route("/ab-tests", abTestRoutes)
  .route("/agents", agentRoutes)
  .route("/audit", auditRoutes)
  .route("/circuit-breaker", circuitBreakerRoutes)
  .route("/", dashboardRoutes)
  .route("/deployments", deploymentRoutes)
  .route("/feedback", feedbackRoutes)
  .route("/generate/structured", structuredRoutes)
  .route("/generate", generateRoutes)
  .route("/", metricsRoutes)
  .route("/models", modelRoutes)
  .route("/", monitoringRoutes)
  .route("/", openapiRoutes)
  .route("/security", securityRoutes)
  .route("/rate-limits", rateLimitRoutes)
  .route("/schemas", schemaRoutes)
  .route("/tokens", tokenRoutes)
  .route("/v1", openaiRoutes);

app.onError(errorHandler());
app.notFound(notFoundHandler(() => app.routes));

/** The assembled app, for tests that read its routes (the OpenAPI coverage test). */
export { app };

// BENCH_TRACE (bench/suites/tail.ts only): the traced Worker stamps its fetch() entry.
const fetch: typeof app.fetch = (request, env, ctx) =>
  (env as Partial<Env> | undefined)?.BENCH_TRACE === "1"
    ? tracedFetch(() => app.fetch(request, env, ctx))
    : app.fetch(request, env, ctx);

export default { fetch } satisfies ExportedHandler<Env>;
