import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// End-to-end: the real Worker in workerd plus real agent processes running llama.cpp. Files run one
// at a time: each starts its own stack, and this machine has two cores.
export default defineConfig({
  test: {
    name: "e2e",
    root: fileURLToPath(new URL("../..", import.meta.url)),
    environment: "node",
    include: ["test/e2e/**/*.test.ts"],
    pool: "forks",
    fileParallelism: false,
    testTimeout: 90_000,
    hookTimeout: 90_000,
  },
});
