// Credentials a model may reproduce from its training data or its context: each kind with the
// pattern that finds it and what it is replaced by. Patterns are linear (literal leads, bounded or
// single-class repetitions). Over-redaction is the accepted failure: documentation's sample keys
// (AKIAIOSFODNN7EXAMPLE) are redacted too.

export interface SecretKind {
  kind: string;
  /** Global: the sanitizer reads every match. */
  pattern: RegExp;
  /** The match's first group is context that stays (a key's name): only the rest is replaced. */
  keepsPrefix?: true;
}

export const SECRET_KINDS: readonly SecretKind[] = [
  {
    kind: "private_key",
    pattern:
      /-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----/g,
  },
  { kind: "jwt", pattern: /\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*/g },
  {
    kind: "aws_access_key",
    pattern: /\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}\b/g,
  },
  {
    kind: "aws_secret_key",
    pattern: /(\baws_?secret_?access_?key["']?\s{0,4}[:=]\s{0,4}["']?)[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])/gi,
    keepsPrefix: true,
  },
  { kind: "github_token", pattern: /\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b/g },
  { kind: "slack_token", pattern: /\bxox[abeoprs]-[A-Za-z0-9-]{10,255}/g },
  {
    kind: "slack_webhook",
    pattern:
      /https:\/\/hooks\.slack\.com\/services\/T[A-Za-z0-9_]{6,}\/B[A-Za-z0-9_]{6,}\/[A-Za-z0-9_]{16,}/g,
  },
  {
    kind: "api_key",
    pattern: /\bsk-(?:proj-|ant-(?:api|admin)\d{2}-|live-|test-|svcacct-)?[A-Za-z0-9_-]{20,255}/g,
  },
  { kind: "api_key", pattern: /\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,255}\b/g },
  { kind: "google_api_key", pattern: /\bAIza[0-9A-Za-z_-]{35}\b/g },
];

/** Something a secret's match starts with: text without any of these has no secret in it. */
export const SECRET_LEADS = [
  "-----BEGIN",
  "eyJ",
  "AKIA",
  "ASIA",
  "ABIA",
  "ACCA",
  "AGPA",
  "AIDA",
  "AIPA",
  "ANPA",
  "ANVA",
  "APKA",
  "AROA",
  "ASCA",
  "ghp_",
  "gho_",
  "ghu_",
  "ghs_",
  "ghr_",
  "github_pat_",
  "xoxa-",
  "xoxb-",
  "xoxe-",
  "xoxo-",
  "xoxp-",
  "xoxr-",
  "xoxs-",
  "https://hooks.slack.com/",
  "sk-",
  "sk_",
  "rk_",
  "AIza",
] as const;

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");

/** Any lead (as written: leads are case-sensitive), or the AWS secret's key name in any case. */
export const ANY_LEAD = new RegExp(
  `${SECRET_LEADS.map(escapeRegExp).join("|")}|[Aa][Ww][Ss]_?[Ss][Ee][Cc][Rr][Ee][Tt]`,
);

/** Every proper prefix of a lead ("s", "sk" of "sk-"): a chunk ending in one may be a secret's start. */
export const LEAD_PREFIXES: ReadonlySet<string> = new Set(
  SECRET_LEADS.flatMap((lead) => Array.from({ length: lead.length - 1 }, (_, i) => lead.slice(0, i + 1))),
);
export const LONGEST_LEAD = Math.max(...SECRET_LEADS.map((l) => l.length));

export function redactionFor(kind: string): string {
  return `[REDACTED:${kind}]`;
}
