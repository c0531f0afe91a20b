// Secrets are not in wrangler.toml. worker-configuration.d.ts is generated with
//   npx wrangler types gateway/worker-configuration.d.ts --include-runtime false --env-file /dev/null
// (`--env-file /dev/null` ignores a local .dev.vars, so the output is the same on every machine;
// `--include-runtime false` because @cloudflare/workers-types provides the runtime types), and the
// secrets are declared here instead. The code still treats an empty or unset secret as missing.
declare namespace Cloudflare {
  interface Env {
    /**
     * HS256 secret for tokens without a `kid` (`wrangler secret put JWT_SECRET`; locally .dev.vars).
     * At least 32 bytes: a shorter one is refused (every authenticated request answers 500).
     */
    JWT_SECRET: string;
    /** Optional JSON object {"<kid>": "<secret>"} for tokens carrying a `kid` header (rotation); 32 bytes each. */
    JWT_SECRETS: string;
    /**
     * Optional bearer token GET /metrics accepts besides an admin JWT, for a Prometheus scrape
     * config (`wrangler secret put METRICS_TOKEN`); unset: only admin JWTs scrape.
     */
    METRICS_TOKEN: string;
    /** Bench only (bench/suites/tail.ts sets it on a Worker of its own): "1" adds request timelines. */
    BENCH_TRACE?: string;
  }
}
