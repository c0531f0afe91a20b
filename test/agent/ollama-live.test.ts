// The engine conformance suite against a REAL Ollama server, when one answers at OLLAMA_BASE_URL
// (default http://localhost:11434), on OLLAMA_TEST_MODEL or the first model it has. Where none
// answers (no Ollama server can be installed on this lab's CI), every case is skipped with that
// reason and none counts as passed.
import { OLLAMA_DEFAULT_URL, OllamaEngine } from "../../node-agent/engines/ollama/index.ts";
import { engineConformance } from "./engine-conformance.ts";

const url = (process.env.OLLAMA_BASE_URL ?? OLLAMA_DEFAULT_URL)
  .replace(/\/+$/, "")
  .replace(/\/(v1|api)$/, "");

async function probe(): Promise<{ model?: string; skip?: string }> {
  try {
    const res = await fetch(`${url}/api/tags`, { signal: AbortSignal.timeout(1_500) });
    if (!res.ok) return { skip: `the server at ${url} answered /api/tags with ${res.status}` };
    const { models } = (await res.json()) as { models: { name: string }[] };
    const wanted = process.env.OLLAMA_TEST_MODEL;
    // As `ollama list` names it: `llama3.2` is listed as `llama3.2:latest`.
    const model = wanted
      ? models.find((m) => m.name === wanted || m.name === `${wanted}:latest`)?.name
      : models[0]?.name;
    if (!model) {
      return {
        skip: wanted
          ? `the Ollama server at ${url} has no model ${wanted} (ollama pull ${wanted})`
          : `the Ollama server at ${url} has no model (ollama pull llama3.2:1b)`,
      };
    }
    return { model };
  } catch {
    return { skip: `no Ollama server reachable at ${url}` };
  }
}

const live = await probe();

engineConformance({
  label: `Ollama, live at ${url}${live.model ? ` (${live.model})` : ""}`,
  engine: "ollama",
  model: live.model ?? "none",
  prompt: "Write a long story about a lighthouse keeper.",
  ...(live.skip ? { skip: live.skip } : {}),
  create: async () => {
    const engine = new OllamaEngine({ baseUrl: url, refreshMs: 60_000 });
    await engine.start();
    return engine;
  },
});
