// The engine conformance suite against the llama.cpp engine, for real, on the generated demo model.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll } from "vitest";
import { ensureDemoModel } from "../../node-agent/demo-model.ts";
import { LlamaCppEngine } from "../../node-agent/engines/llamacpp/index.ts";
import { engineConformance } from "./engine-conformance.ts";

const dirs: string[] = [];
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

engineConformance({
  label: "llama.cpp (demo GGUF model)",
  engine: "llamacpp",
  model: "demo",
  prompt: "Once upon a time",
  create: async () => {
    const dir = await mkdtemp(join(tmpdir(), "orchard-conformance-"));
    dirs.push(dir);
    const path = await ensureDemoModel(dir);
    const engine = new LlamaCppEngine({ models: [{ name: "demo", path }], capacity: 2, threads: 1 });
    await engine.load("demo");
    return engine;
  },
});
