// Tokens that already verified, with their claims. jose's HS256 verify costs ~100 µs of CPU per
// request (WebCrypto HMAC, base64url, JSON; bench micro-benchmarks), and a client sends the same
// token with every request until it expires. An entry is keyed by the whole token, signature
// included, so only that exact string can hit it; it serves until the token's `exp` (or, for a
// JWKS key, until the key set would be refetched), and only under the key configuration it was
// verified with. Failures are never cached. Revocation is not cached here: the deny-list is
// checked on every request, hit or miss (token-deny-list.ts).
import type { Role } from "../../../schema/api.ts";

/** The claims auth() needs, as they were when the token verified. */
export interface VerifiedClaims {
  sub: string;
  /** The role its claim names, if it names a known one. */
  role: Role | undefined;
  /** The token's `exp`, seconds since the epoch. */
  exp: number;
  /** The token's `jti`, when it has one (revocable one by one). */
  jti: string | undefined;
  /** Epoch ms after which the entry is verified again even though the token has not expired. */
  reuseUntilMs: number;
}

export class VerifiedTokens {
  #settings: object | null = null;
  readonly #tokens = new Map<string, VerifiedClaims>();

  constructor(private readonly maxEntries: number) {}

  get size(): number {
    return this.#tokens.size;
  }

  /** The claims of `token` if it verified under these settings and has not expired at `nowMs`. */
  get(token: string, settings: object, nowMs: number): VerifiedClaims | undefined {
    if (this.#settings !== settings) return undefined;
    const claims = this.#tokens.get(token);
    if (claims === undefined) return undefined;
    // jose's rule, without clock tolerance: expired once exp <= now in whole seconds.
    if (claims.exp > Math.floor(nowMs / 1000) && nowMs < claims.reuseUntilMs) return claims;
    this.#tokens.delete(token);
    return undefined;
  }

  set(token: string, settings: object, claims: VerifiedClaims): void {
    if (this.#settings !== settings) {
      this.#tokens.clear();
      this.#settings = settings;
    }
    this.#tokens.delete(token);
    if (this.#tokens.size >= this.maxEntries) {
      // The oldest insertion goes first (Map keeps insertion order).
      const oldest = this.#tokens.keys().next().value;
      if (oldest !== undefined) this.#tokens.delete(oldest);
    }
    this.#tokens.set(token, claims);
  }
}
