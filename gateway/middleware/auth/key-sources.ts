// Which key verifies a token, with which algorithms: the gateway's own HS256 secrets (JWT_SECRET,
// and JWT_SECRETS by `kid` for rotation) or an identity provider's key set (JWT_JWKS_URL, through
// jose's remote JWKS). Built once per isolate and configuration; a refused configuration fails closed.
import { createRemoteJWKSet, errors, type JWTVerifyGetKey, type ProtectedHeaderParameters } from "jose";
import { z } from "zod";
import type { GatewayConfig, JwksConfig } from "../../config.ts";
import { GatewayError, INTERNAL_MESSAGE } from "../../errors.ts";
import { log } from "../../log.ts";

/** RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (32 bytes). */
export const MIN_SECRET_BYTES = 32;

/** The only algorithm the gateway's own secrets verify. */
const SECRET_ALGORITHMS: readonly string[] = ["HS256"];

/** The key a token selected, with the algorithms allowed for it and where its role is. */
export interface SelectedKey {
  source: "secret" | "jwks";
  key: CryptoKey | JWTVerifyGetKey;
  algorithms: readonly string[];
  /** The claim holding the caller's role: always `role` for the gateway's own tokens. */
  roleClaim: string;
  /** How long a verification with this key may be reused from the verified-token cache (ms). */
  reuseMs: number;
}

/** The JWKS could not be read (down, slow, not a key set): the token cannot be checked right now. */
export class KeySourceUnavailable extends Error {
  override readonly name = "KeySourceUnavailable";
}

/**
 * One configuration's keys. A new configuration (any secret, the JWKS settings, iss, aud, the clock
 * tolerance) is a new instance, and the verified-token cache serves only the instance it verified with.
 */
export class KeySources {
  constructor(
    private readonly secret: Promise<CryptoKey>,
    private readonly byKid: ReadonlyMap<string, Promise<CryptoKey>>,
    private readonly jwks: { keys: JWTVerifyGetKey; config: JwksConfig } | undefined,
  ) {}

  /**
   * The key source a token's header selects (docs/authentication.md, "Key sources"): a `kid` that
   * JWT_SECRETS names -> that secret; no `kid` and HS256 -> JWT_SECRET; anything else -> the JWKS
   * when one is configured, with its own allow-list (so an HS256 token naming a JWKS key's kid, the
   * key-confusion attack, meets an allow-list without HS256). Undefined: no source can verify it.
   */
  async select(header: ProtectedHeaderParameters): Promise<SelectedKey | undefined> {
    const keyed = header.kid === undefined ? undefined : this.byKid.get(header.kid);
    if (keyed !== undefined) return this.#secret(await keyed);
    if (header.kid === undefined && header.alg === "HS256") return this.#secret(await this.secret);
    if (this.jwks === undefined) return undefined;
    const { keys, config } = this.jwks;
    return {
      source: "jwks",
      key: keys,
      algorithms: config.algorithms,
      roleClaim: config.roleClaim,
      // A key the provider withdrew stops verifying cached tokens once the set would be refetched.
      reuseMs: config.maxAgeMs,
    };
  }

  #secret(key: CryptoKey): SelectedKey {
    return {
      source: "secret",
      key,
      algorithms: SECRET_ALGORITHMS,
      roleClaim: "role",
      reuseMs: Number.POSITIVE_INFINITY,
    };
  }
}

interface RawAuthSettings {
  secret: string | undefined;
  secrets: string | undefined;
  jwks: GatewayConfig["jwks"];
  issuer: string | undefined;
  audience: string | undefined;
  clockToleranceS: number;
}

/** Per isolate: the key sources of the configuration last seen, or the reason it was refused. */
let built: { raw: RawAuthSettings; value: KeySources | { refused: string } } | undefined;

/**
 * The key sources for this request's configuration. A refused configuration (JWT_SECRET missing or
 * shorter than MIN_SECRET_BYTES, JWT_SECRETS malformed or holding a short secret, JWT_JWKS_* invalid)
 * is a deployment error: logged with the reason on every request it fails, and answered with a
 * plain 500, while /health keeps working. A short secret is never used.
 */
export function keySources(env: Env, config: GatewayConfig): KeySources {
  const raw: RawAuthSettings = {
    secret: env.JWT_SECRET as string | undefined,
    secrets: env.JWT_SECRETS as string | undefined,
    jwks: config.jwks,
    issuer: config.jwtIssuer,
    audience: config.jwtAudience,
    clockToleranceS: config.jwtClockToleranceS,
  };
  if (built === undefined || !sameSettings(built.raw, raw)) built = { raw, value: build(raw) };
  const { value } = built;
  if (value instanceof KeySources) return value;
  log("error", value.refused);
  throw new GatewayError("INTERNAL", INTERNAL_MESSAGE);
}

function sameSettings(a: RawAuthSettings, b: RawAuthSettings): boolean {
  return (
    a.secret === b.secret &&
    a.secrets === b.secrets &&
    a.jwks === b.jwks &&
    a.issuer === b.issuer &&
    a.audience === b.audience &&
    a.clockToleranceS === b.clockToleranceS
  );
}

const encoder = new TextEncoder();

function build(raw: RawAuthSettings): KeySources | { refused: string } {
  if (!raw.secret) {
    return { refused: "JWT_SECRET is not set: run `wrangler secret put JWT_SECRET` (locally: .dev.vars)" };
  }
  if (encoder.encode(raw.secret).byteLength < MIN_SECRET_BYTES) {
    return {
      refused: `JWT_SECRET is shorter than ${MIN_SECRET_BYTES} bytes: refused (every authenticated request answers 500); set a random one, e.g. \`openssl rand -hex 32\``,
    };
  }
  const byKid = parseKeyedSecrets(raw.secrets);
  if (!(byKid instanceof Map)) return byKid;
  if (raw.jwks !== undefined && "invalid" in raw.jwks) return { refused: raw.jwks.invalid };
  const jwks = raw.jwks === undefined ? undefined : { keys: remoteKeys(raw.jwks), config: raw.jwks };
  return new KeySources(
    hmacKey(raw.secret),
    new Map([...byKid].map(([kid, secret]) => [kid, hmacKey(secret)])),
    jwks,
  );
}

const KeyedSecrets = z.record(z.string().min(1), z.string().min(1));

function parseKeyedSecrets(raw: string | undefined): Map<string, string> | { refused: string } {
  if (!raw) return new Map();
  let parsed: ReturnType<typeof KeyedSecrets.safeParse> | undefined;
  try {
    parsed = KeyedSecrets.safeParse(JSON.parse(raw));
  } catch {
    parsed = undefined;
  }
  if (!parsed?.success) return { refused: 'JWT_SECRETS is not a JSON object of {"kid": "secret"} strings' };
  const short = Object.entries(parsed.data)
    .filter(([, secret]) => encoder.encode(secret).byteLength < MIN_SECRET_BYTES)
    .map(([kid]) => kid);
  if (short.length > 0) {
    return {
      refused: `JWT_SECRETS: the secret of kid ${short.join(", ")} is shorter than ${MIN_SECRET_BYTES} bytes: refused (every authenticated request answers 500)`,
    };
  }
  return new Map(Object.entries(parsed.data));
}

// Imported HMAC keys by secret: a pure cache of a function of its key (it cannot disagree between
// isolates). Handing jose fresh bytes re-imports the key on every request: ~14 µs of the ~140 µs a
// verify costs (bench micro-benchmarks: 138 µs fresh bytes vs 88 µs with an imported CryptoKey).
const hmacKeys = new Map<string, Promise<CryptoKey>>();

function hmacKey(secret: string): Promise<CryptoKey> {
  let key = hmacKeys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
      "verify",
    ]);
    hmacKeys.set(secret, key);
  }
  return key;
}

// jose's remote key sets by URL and options, per isolate: each keeps the fetched set for maxAgeMs and
// refetches for an unknown kid at most every cooldownMs, so a flood of made-up kids costs the
// provider one fetch per isolate per cooldown. A handful of configurations at most in a lifetime.
const remoteSets = new Map<string, ReturnType<typeof createRemoteJWKSet>>();

/** Errors of a key lookup that are the token's fault (401), not the key set's (503). */
const TOKEN_FAULTS = [errors.JWKSNoMatchingKey, errors.JWKSMultipleMatchingKeys] as const;

function remoteKeys(config: JwksConfig): JWTVerifyGetKey {
  const id = JSON.stringify([config.url.href, config.timeoutMs, config.cooldownMs, config.maxAgeMs]);
  let set = remoteSets.get(id);
  if (set === undefined) {
    set = createRemoteJWKSet(config.url, {
      timeoutDuration: config.timeoutMs,
      cooldownDuration: config.cooldownMs,
      cacheMaxAge: config.maxAgeMs,
    });
    remoteSets.set(id, set);
  }
  const remote = set;
  return async (header, token) => {
    try {
      return await remote(header, token);
    } catch (err) {
      if (TOKEN_FAULTS.some((fault) => err instanceof fault)) throw err;
      // Timeout, refused connection, non-200, not JSON, not a key set: jose's error says which.
      log("error", "JWKS: the key set could not be fetched; tokens it signs are refused with 503", {
        jwksUrl: config.url.href,
        error: err instanceof Error ? err.name : String(err),
        errorCode: (err as { code?: unknown }).code,
        errorMessage: err instanceof Error ? err.message : undefined,
      });
      throw new KeySourceUnavailable("the JWKS could not be fetched", { cause: err });
    }
  };
}
