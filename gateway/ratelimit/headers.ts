// The RateLimit-Policy and RateLimit response fields of draft-ietf-httpapi-ratelimit-headers (-09:
// structured-field lists of quota policies, `q` quota, `w` window in seconds, `qu` quota unit;
// `r` remaining, `t` seconds until the quota is whole again). One policy per limit: "rpm",
// "tpm", "concurrency", and "<kind>:<model>" for a model's own limits. The draft registers no
// unit for tokens, so "tpm" is a policy of its own whose unit is named by the vendor parameter
// orchard-unit="tokens" (the draft's way for service-specific parameters).
import type { PolicyState } from "./book.ts";

export const POLICY_HEADER = "RateLimit-Policy";
export const STATE_HEADER = "RateLimit";
export const RATE_LIMIT_HEADERS = [POLICY_HEADER, STATE_HEADER] as const;

function policyItem(p: PolicyState): string {
  switch (p.kind) {
    case "rpm":
      return `"${p.name}";q=${p.quota};w=60`;
    case "tpm":
      return `"${p.name}";q=${p.quota};w=60;orchard-unit="tokens"`;
    case "concurrency":
      return `"${p.name}";q=${p.quota};qu="concurrent-requests"`;
  }
}

function stateItem(p: PolicyState): string {
  return p.resetSeconds === undefined
    ? `"${p.name}";r=${p.remaining}`
    : `"${p.name}";r=${p.remaining};t=${p.resetSeconds}`;
}

/** The two fields for a request's policies, as the limiter left them after deciding on it. */
export function rateLimitHeaders(policies: readonly PolicyState[]): Record<string, string> {
  let policy = "";
  let state = "";
  for (const p of policies) {
    const sep = policy === "" ? "" : ", ";
    policy += sep + policyItem(p);
    state += sep + stateItem(p);
  }
  return { [POLICY_HEADER]: policy, [STATE_HEADER]: state };
}
