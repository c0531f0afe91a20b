// Ops tests: the Prometheus rules, scrape config and Grafana dashboards of ops/, checked with promtool
// and against the monitoring contract (schema/monitoring.ts). Plain Node. The root is set explicitly:
// without it a vitest 4 project matches no files.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    name: "ops",
    root: fileURLToPath(new URL("../..", import.meta.url)),
    environment: "node",
    include: ["test/ops/**/*.test.ts"],
    testTimeout: 30_000,
  },
});
