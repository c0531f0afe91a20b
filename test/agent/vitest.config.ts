// Agent tests: plain Node (no workerd), one project named "agent". The root is set explicitly so the
// include pattern means the same whether this file is run directly or as one of the root config's projects.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    name: "agent",
    root: fileURLToPath(new URL("../..", import.meta.url)),
    environment: "node",
    include: ["test/agent/**/*.test.ts"],
    // node-llama-cpp loads a native addon; child processes isolate it better than worker threads.
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
