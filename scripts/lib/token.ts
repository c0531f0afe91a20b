// Mints HS256 JWTs the gateway accepts (development and tests; production uses your IdP or this).
import { SignJWT } from "jose";
import { Role } from "../../schema/api.ts";

export type { Role } from "../../schema/api.ts";
export const ROLES: readonly Role[] = Role.options;

/** Parses "90s", "30m", "1h", "7d" (or plain seconds) into seconds; undefined when malformed. */
export function parseTtl(ttl: string): number | undefined {
  const m = /^(\d+)\s*([smhd]?)$/.exec(ttl.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = { "": 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as "" | "s" | "m" | "h" | "d"];
  const seconds = n * unit;
  return seconds > 0 ? seconds : undefined;
}

export interface MintOptions {
  secret: string;
  role: Role;
  sub: string;
  ttlSeconds?: number;
  kid?: string;
  issuer?: string;
  audience?: string;
}

export async function mintToken(o: MintOptions): Promise<string> {
  let jwt = new SignJWT({ role: o.role })
    .setProtectedHeader(o.kid ? { alg: "HS256", kid: o.kid } : { alg: "HS256" })
    .setSubject(o.sub)
    .setIssuedAt()
    .setExpirationTime(`${o.ttlSeconds ?? 3600}s`);
  if (o.issuer) jwt = jwt.setIssuer(o.issuer);
  if (o.audience) jwt = jwt.setAudience(o.audience);
  return jwt.sign(new TextEncoder().encode(o.secret));
}
