// Tokens that already verified, with their claims. jose's HS256 verify costs ~100 µs of CPU per
// request (WebCrypto HMAC, base64url, JSON; bench micro-benchmarks), and a client sends the same
// token with every request until it expires. An entry is keyed by the whole token, signature
// included, so only that exact string can hit it; it serves until the token's `exp`, and only
// under the key configuration it was verified with. Failures are never cached.

/** The claims auth() needs, as they were when the token verified. */
export interface VerifiedClaims {
  sub: string;
  role: unknown;
  /** The token's `exp`, seconds since the epoch. */
  exp: number;
}

/** What a verification depends on besides the token: a change of any of it empties the cache. */
export interface VerifierSettings {
  secret: string;
  secrets: string | undefined;
  issuer: string | undefined;
  audience: string | undefined;
}

export class VerifiedTokens {
  #settings: VerifierSettings | null = null;
  readonly #tokens = new Map<string, VerifiedClaims>();

  constructor(private readonly maxEntries: number) {}

  get size(): number {
    return this.#tokens.size;
  }

  /** The claims of `token` if it verified under these settings and has not expired at `nowMs`. */
  get(token: string, settings: VerifierSettings, nowMs: number): VerifiedClaims | undefined {
    if (!this.#sameSettings(settings)) return undefined;
    const claims = this.#tokens.get(token);
    if (claims === undefined) return undefined;
    // jose's rule, without clock tolerance: expired once exp <= now in whole seconds.
    if (claims.exp > Math.floor(nowMs / 1000)) return claims;
    this.#tokens.delete(token);
    return undefined;
  }

  set(token: string, settings: VerifierSettings, claims: VerifiedClaims): void {
    if (!this.#sameSettings(settings)) {
      this.#tokens.clear();
      this.#settings = { ...settings };
    }
    this.#tokens.delete(token);
    if (this.#tokens.size >= this.maxEntries) {
      // The oldest insertion goes first (Map keeps insertion order).
      const oldest = this.#tokens.keys().next().value;
      if (oldest !== undefined) this.#tokens.delete(oldest);
    }
    this.#tokens.set(token, claims);
  }

  #sameSettings(s: VerifierSettings): boolean {
    const current = this.#settings;
    return (
      current !== null &&
      current.secret === s.secret &&
      current.secrets === s.secrets &&
      current.issuer === s.issuer &&
      current.audience === s.audience
    );
  }
}
