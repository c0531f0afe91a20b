// Hono context types shared by every middleware and route of the gateway.
import type { Role } from "./middleware/auth/index.ts";

export interface Caller {
  /** The token's `sub`: a user, an admin, or (for role agent) the agent id. */
  sub: string;
  role: Role;
}

export interface AppEnv {
  Bindings: Env;
  Variables: {
    requestId: string;
    caller: Caller;
  };
}
