// Bearer JWT authentication and role checks (docs/authentication.md). Keys: JWT_SECRET (HS256) for
// tokens without a `kid`, JWT_SECRETS = {"<kid>": "<secret>"} for tokens naming one (rotation), and
// an identity provider's JWKS (JWT_JWKS_URL) for every other kid; then the token deny-list.
import type { Context, MiddlewareHandler } from "hono";
import { Role } from "../../../schema/api.ts";
import { readConfig } from "../../config.ts";
import { GatewayError } from "../../errors.ts";
import type { AppEnv } from "../../types.ts";
import { keySources } from "./key-sources.ts";
import { TokenDenyList } from "./token-deny-list.ts";
import { VerifiedTokens } from "./verified-tokens.ts";
import { verifyToken } from "./verify-token.ts";

/** What the route a request reached demands, and what it was called with (the audit middleware reads it). */
export interface Access {
  /** The role auth() required on this route. */
  required: Role;
  /** The route's pattern as mounted, e.g. `/models/:model_id/activate`. */
  route: string;
  params: Record<string, string>;
}

declare module "hono" {
  interface ContextVariableMap {
    access: Access;
  }
}

/** Which roles satisfy a required role: an admin may do everything a user may. */
const SATISFIES: Record<Role, readonly Role[]> = {
  user: ["user", "admin"],
  admin: ["admin"],
  agent: ["agent"],
};

/** Per isolate. 4,096 tokens of ~300 bytes is about 1–2 MB at most. */
const verifiedTokens = new VerifiedTokens(4_096);

/** Per isolate: the copy of the deny-list every authenticated request checks. */
export const tokenDenyList = new TokenDenyList();

export interface AuthOptions {
  /** The role a caller needs (or one that satisfies it, see SATISFIES). */
  role: Role;
}

/** auth()'s handler, marked with the role it requires (tests find admin routes by it in app.routes). */
export type AuthHandler = MiddlewareHandler<AppEnv> & { readonly requiredRole: Role };

export function auth({ role }: AuthOptions): AuthHandler {
  if (!Role.safeParse(role).success) throw new Error(`auth(): unknown role ${String(role)}`);
  const handler: MiddlewareHandler<AppEnv> = async function auth(c, next) {
    const token = bearerToken(c.req.header("Authorization"));
    if (token === undefined) throw new GatewayError("UNAUTHORIZED", "missing bearer token");
    const config = readConfig(c.env);
    const sources = keySources(c.env, config);
    const now = Date.now();
    let claims = verifiedTokens.get(token, sources, now);
    if (claims === undefined) {
      claims = await verifyToken(token, sources, config, now);
      verifiedTokens.set(token, sources, claims);
    }
    const revoked = await tokenDenyList.find(
      c.env.DB,
      claims,
      config.tokenRevocationRefreshMs,
      backgroundOf(c),
    );
    if (revoked !== undefined) {
      throw new GatewayError(
        "TOKEN_REVOKED",
        revoked.kind === "jti" ? "this token has been revoked" : "this token's subject has been revoked",
      );
    }
    const callerRole = claims.role;
    if (callerRole === undefined || !SATISFIES[role].includes(callerRole)) {
      throw new GatewayError("FORBIDDEN", `this route requires role ${role}`);
    }
    c.set("caller", { sub: claims.sub, role: callerRole, exp: claims.exp });
    c.set("access", {
      required: role,
      route: c.req.routePath,
      params: c.req.param() as Record<string, string>,
    });
    await next();
  };
  return Object.assign(handler, { requiredRole: role });
}

/** The request's waitUntil, for work that may outlive the response; undefined outside a request. */
function backgroundOf(c: Context<AppEnv>): ((work: Promise<unknown>) => void) | undefined {
  try {
    const ctx = c.executionCtx;
    return (work) => ctx.waitUntil(work);
  } catch {
    return undefined;
  }
}

function bearerToken(header: string | undefined): string | undefined {
  const match = header?.match(/^Bearer[ \t]+([A-Za-z0-9._~+/=-]+)[ \t]*$/i);
  return match?.[1];
}
