// The "gateway" test project: runs test/gateway/*.test.ts inside workerd with the real Worker
// (wrangler.toml), D1 migrations applied in a setup file, and test-only bindings.
import { fileURLToPath } from "node:url";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

/** Secrets and short timeouts for tests; also read by helpers.ts through `env`. */
export const testBindings = {
  JWT_SECRET: "test-secret-for-the-gateway-suite-0123456789",
  JWT_SECRETS: JSON.stringify({ "2026-rotated": "rotated-test-secret-9876543210-abcdefghij" }),
  // The scrape token GET /metrics accepts besides an admin JWT.
  METRICS_TOKEN: "test-scrape-token-0123456789abcdef",
  QUEUE_MAX: "2",
  // Live per-version metrics reach D1 within a second, so the registry suites can read them back.
  LIVE_METRICS_FLUSH_MS: "1000",
  ROLLOUT_TICK_MS: "200",
  QUEUE_TIMEOUT_MS: "1500",
  HELLO_TIMEOUT_MS: "1500",
  // Long enough that test agents, which never ping, are not reaped; heartbeats are tested by
  // running the hub's checks at a chosen clock instead.
  HEARTBEAT_INTERVAL_MS: "60000",
  // Timeouts long enough not to fire in ordinary tests; resilience tests run the hub's checks at a
  // chosen clock (runChecks) or set X-Orchard-Timeout-Ms, so nothing waits for them in real time.
  FIRST_CHUNK_TIMEOUT_MS: "5000",
  IDLE_CHUNK_TIMEOUT_MS: "5000",
  // Short enough to watch an open breaker turn half-open in real time.
  BREAKER_COOLDOWN_MS: "2000",
  STREAM_BUFFER_MAX_BYTES: "65536",
  MODEL_FALLBACKS: JSON.stringify({ "fb-primary": ["fb-unknown", "fb-secondary"] }),
  // Two pools, so every test runs against a gateway that covers more than one. Models not listed
  // here (every other test's) go to the default pool; pools.test.ts uses the listed ones.
  POOLS: JSON.stringify({
    "lab-a": { locationHint: "wnam", models: ["lab-a-model", "shared-model"] },
    default: { models: ["shared-model"] },
  }),
  // Tests watch /health and /ready change at once; health-cache.test.ts sets its own TTL.
  HEALTH_CACHE_MS: "0",
  // Limits no suite's callers reach, so rate limits stay out of tests about something else;
  // rate-limits.test.ts sets its own (overrides per subject, and the app with other vars).
  RATE_LIMITS: JSON.stringify({
    user: { rpm: 1_000_000, tpm: 1_000_000_000, concurrency: 10_000 },
    admin: { rpm: 1_000_000, tpm: 1_000_000_000, concurrency: 10_000 },
  }),
};

export default defineConfig(async () => ({
  root: repoRoot,
  // FUZZ_RUNS / FUZZ_SEED / FUZZ_PATH reach the fuzz tests as import.meta.env (docs/fuzzing.md).
  envPrefix: ["VITE_", "FUZZ_"],
  plugins: [
    cloudflareTest({
      wrangler: { configPath: `${repoRoot}wrangler.toml` },
      miniflare: {
        bindings: {
          ...testBindings,
          TEST_MIGRATIONS: await readD1Migrations(`${repoRoot}schema/migrations`),
        },
      },
    }),
  ],
  test: {
    name: "gateway",
    // Set here too: as one of the root config's projects, the top-level root is not used for include.
    root: repoRoot,
    include: ["test/gateway/**/*.test.ts"],
    setupFiles: ["test/gateway/apply-migrations.ts"],
    testTimeout: 15_000,
    // The Worker logs a JSON line per request; show them only for failing tests.
    silent: "passed-only",
  },
}));
