// Compile-time only (nothing imports it; `tsc -p gateway` checks it): each JSON answer the document
// gives a route is checked against the type Hono infers for what that route's handler returns, so
// a field added, renamed or retyped in a route breaks the build until the document says so too.
// Where a route's own type is looser than the truth (a D1 text column holding an enum, `unknown`
// JSON), those fields are named and left out of the check.
import type { ExtractSchema } from "hono/types";
import type { z } from "zod";
import type { AgentsResponse } from "../../schema/agents-api.ts";
import type {
  AgentEventsResponse,
  AgentRevocation,
  AgentRevokeResponse,
  BreakerResetResponse,
  BreakerStatusResponse,
  HealthResponse,
  ReadyResponse,
} from "../../schema/api.ts";
import type { ActiveAlerts, PerformanceReport } from "../../schema/monitoring.ts";
import type {
  ActivateResponse,
  LineageResponse,
  ModelDetail,
  ServingResponse,
  VersionDetail,
} from "../../schema/registry-api.ts";
import type { changeTag } from "../registry/labels.ts";
import type {
  chatChunk,
  chatCompletion,
  chatToolCallChunks,
  chatToolCallCompletion,
  chatUsageChunk,
} from "../render/openai-shapes.ts";
import type { agentRoutes } from "../routes/agents.ts";
import type { circuitBreakerRoutes } from "../routes/circuit-breakers.ts";
import type { healthRoutes } from "../routes/health.ts";
import type { modelRoutes } from "../routes/models.ts";
import type { monitoringRoutes } from "../routes/monitoring.ts";
import type { openaiRoutes } from "../routes/openai.ts";
import type { abTestRoutes, deploymentRoutes, feedbackRoutes } from "../routes/rollouts.ts";
import type * as shapes from "./shapes.ts";

/** The JSON a route answers with: Hono's inferred output for that path, method and status. */
type Answer<
  App,
  Path extends keyof ExtractSchema<App>,
  Method extends string,
  Status = number,
> = ExtractSchema<App>[Path] extends infer Route
  ? Method extends keyof Route
    ? Extract<Route[Method], { status: Status }> extends { output: infer O }
      ? O
      : never
    : never
  : never;

/** The document's shape covers the route's answer: every field it has, with a type that admits it. */
type Covers<Route, Doc> = [Route] extends [never]
  ? false
  : [Route] extends [Doc]
    ? Exclude<keyof Route, keyof Doc> extends never
      ? true
      : false
    : false;

type Holds<T extends true> = T;
type Doc<S extends z.ZodType> = z.output<S>;
type Loose<T, K extends PropertyKey> = Omit<T, K>;

type Models = typeof modelRoutes;
type DeploymentFields = "strategy" | "status";
type AbFields = "status" | "success_metrics" | "results";

export type RouteAnswersMatchTheDocument = [
  Holds<Covers<Answer<Models, "/register", "$post", 201>, Doc<typeof shapes.RegisterResponse>>>,
  Holds<Covers<Answer<Models, "/", "$get">, Doc<typeof shapes.ModelList>>>,
  Holds<Covers<Answer<Models, "/:name", "$get">, Doc<typeof ModelDetail>>>,
  Holds<Covers<Answer<Models, "/:name/:version", "$get">, Doc<typeof VersionDetail>>>,
  Holds<Covers<Answer<Models, "/:name/lineage", "$get">, Doc<typeof LineageResponse>>>,
  Holds<Covers<Answer<Models, "/:name/serving", "$get">, Doc<typeof ServingResponse>>>,
  Holds<Covers<Answer<Models, "/:model_id/metrics", "$post", 201>, Doc<typeof shapes.MetricsRecorded>>>,
  // The tag routes' handler is typed as a MiddlewareHandler (no inferred output): check what it answers with.
  Holds<Covers<Awaited<ReturnType<typeof changeTag>>, Doc<typeof shapes.TagsChanged>>>,
  Holds<Covers<Answer<Models, "/:name/aliases/:alias", "$put">, Doc<typeof shapes.AliasSet>>>,
  Holds<Covers<Answer<Models, "/:name/aliases/:alias", "$delete">, Doc<typeof shapes.AliasRemoved>>>,
  Holds<Covers<Answer<Models, "/:model_id/activate", "$post">, Doc<typeof ActivateResponse>>>,
  Holds<Covers<Answer<Models, "/:name/rollback", "$post">, Doc<typeof shapes.RollbackResponse>>>,
  Holds<Covers<Answer<Models, "/:name/deactivate", "$post">, Doc<typeof shapes.DeactivateResponse>>>,
  Holds<Covers<Answer<Models, "/:model_id/deprecate", "$post">, Doc<typeof shapes.RetireResponse>>>,
  Holds<Covers<Answer<Models, "/:model_id/archive", "$post">, Doc<typeof shapes.RetireResponse>>>,
  Holds<Covers<Answer<Models, "/:model_id/artifact", "$put", 201>, Doc<typeof shapes.ArtifactStored>>>,
  Holds<
    Covers<
      Loose<Answer<Models, "/:model_id/deploy", "$post", 202>, DeploymentFields>,
      Loose<Doc<typeof shapes.DeploymentView>, DeploymentFields>
    >
  >,
  Holds<
    Covers<
      Loose<Answer<typeof deploymentRoutes, "/", "$get">["deployments"][number], DeploymentFields>,
      Loose<Doc<typeof shapes.DeploymentList>["deployments"][number], DeploymentFields>
    >
  >,
  Holds<
    Covers<
      Loose<Answer<typeof deploymentRoutes, "/:id", "$get">, DeploymentFields>,
      Loose<Doc<typeof shapes.DeploymentView>, DeploymentFields>
    >
  >,
  Holds<
    Covers<
      Loose<Answer<typeof deploymentRoutes, "/:id/:command", "$post">, DeploymentFields>,
      Loose<Doc<typeof shapes.DeploymentView>, DeploymentFields>
    >
  >,
  Holds<
    Covers<
      Loose<Answer<typeof abTestRoutes, "/start", "$post", 201>, AbFields>,
      Loose<Doc<typeof shapes.AbTestView>, AbFields>
    >
  >,
  Holds<
    Covers<
      Loose<Answer<typeof abTestRoutes, "/", "$get">["ab_tests"][number], AbFields>,
      Loose<Doc<typeof shapes.AbTestList>["ab_tests"][number], AbFields>
    >
  >,
  Holds<
    Covers<
      Loose<Answer<typeof abTestRoutes, "/:id", "$get">, AbFields>,
      Loose<Doc<typeof shapes.AbTestView>, AbFields>
    >
  >,
  Holds<
    Covers<
      Loose<Answer<typeof abTestRoutes, "/:id/stop", "$post">, AbFields>,
      Loose<Doc<typeof shapes.AbTestView>, AbFields>
    >
  >,
  Holds<Covers<Answer<typeof feedbackRoutes, "/", "$post", 201>, Doc<typeof shapes.FeedbackRecorded>>>,
  // Hono widens the list's literal strings ("list", "model", "orchard") to string.
  Holds<
    Covers<
      Loose<Answer<typeof openaiRoutes, "/models", "$get">["data"][number], "object" | "owned_by">,
      Loose<Doc<typeof shapes.OpenAIModelList>["data"][number], "object" | "owned_by">
    >
  >,
  Holds<Covers<ReturnType<typeof chatCompletion>, Doc<typeof shapes.ChatCompletion>>>,
  Holds<Covers<ReturnType<typeof chatToolCallCompletion>, Doc<typeof shapes.ChatCompletion>>>,
  Holds<Covers<ReturnType<typeof chatToolCallChunks>[number], Doc<typeof shapes.ChatCompletionChunk>>>,
  Holds<
    Covers<
      ReturnType<typeof chatChunk> | ReturnType<typeof chatUsageChunk>,
      Doc<typeof shapes.ChatCompletionChunk>
    >
  >,
  Holds<Covers<Answer<typeof agentRoutes, "/", "$get">, Doc<typeof AgentsResponse>>>,
  Holds<Covers<Answer<typeof agentRoutes, "/:id/revoke", "$post">, Doc<typeof AgentRevokeResponse>>>,
  Holds<Covers<Answer<typeof agentRoutes, "/:id/restore", "$post">, Doc<typeof AgentRevocation>>>,
  Holds<Covers<Answer<typeof agentRoutes, "/:id/events", "$get">, Doc<typeof AgentEventsResponse>>>,
  Holds<Covers<Answer<typeof circuitBreakerRoutes, "/status", "$get">, Doc<typeof BreakerStatusResponse>>>,
  Holds<Covers<Answer<typeof circuitBreakerRoutes, "/reset", "$post">, Doc<typeof BreakerResetResponse>>>,
  Holds<Covers<Answer<typeof healthRoutes, "/health", "$get">, Doc<typeof HealthResponse>>>,
  Holds<Covers<Answer<typeof healthRoutes, "/ready", "$get">, Doc<typeof ReadyResponse>>>,
  Holds<
    Covers<Answer<typeof monitoringRoutes, "/performance/report", "$get">, Doc<typeof PerformanceReport>>
  >,
  Holds<Covers<Answer<typeof monitoringRoutes, "/alerts/active", "$get">, Doc<typeof ActiveAlerts>>>,
];
