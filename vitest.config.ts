import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      "test/gateway/vitest.config.ts",
      "test/agent/vitest.config.ts",
      "test/e2e/vitest.config.ts",
      "test/ops/vitest.config.ts",
    ],
  },
});
