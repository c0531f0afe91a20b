// Setup file: applies schema/migrations to the test D1. Setup files run once per test file and
// applyD1Migrations() skips what is already applied, so this is safe to repeat.
import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";

await applyD1Migrations(env.DB, env.TEST_MIGRATIONS);
