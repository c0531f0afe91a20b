// Transitional: the Worker <-> hub contract moved to schema/hub.ts; the routes still import it
// from here until they are switched over in the same change.
export {
  type AgentSummary,
  DEFAULT_POOL,
  DispatchErrorBody,
  type DispatchRequest,
  HubHeader,
  type HubMetrics,
  type HubSnapshot,
} from "../../schema/hub.ts";
