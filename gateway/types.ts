// Hono context types shared by every middleware and route of the gateway.
import type { Role } from "../schema/api.ts";

export interface Caller {
  /** The token's `sub`: a user, an admin, or (for role agent) the agent id. */
  sub: string;
  role: Role;
  /**
   * The token's `exp` (epoch seconds). An agent's connection ends then: the hub closes it with
   * UNAUTHORIZED, and the agent needs a fresh token to come back.
   */
  exp: number;
}

export interface AppEnv {
  Bindings: Env;
  Variables: {
    requestId: string;
    caller: Caller;
  };
}
