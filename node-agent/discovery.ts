// Model discovery in a models folder (--models-dir): every GGUF file and every MLX model folder
// (config.json beside *.safetensors, as the mlx-community models ship) in it or in its subfolders
// one level down (the `org/model` layout of a Hugging Face download), each offered under its file
// or folder name. The Ollama server's models are discovered by the Ollama engine itself.
import { readdirSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { basename, join } from "node:path";
import { isModelId } from "../schema/model-id.ts";
import type { ModelSpec } from "./config.ts";

export interface ModelFolder {
  /** config.json and at least one *.safetensors. */
  mlx: boolean;
  /** A GGUF file in the folder (the first by name), which llama.cpp can serve instead. */
  gguf?: string;
}

export interface Discovery {
  models: ModelSpec[];
  /** What looked like a model but is not offered, and why. */
  skipped: { path: string; reason: string }[];
}

/** Split GGUF files: llama.cpp opens the first part and finds the others beside it. */
const SPLIT_PART = /-(\d{5})-of-(\d{5})\.gguf$/i;
const GGUF = /\.gguf$/i;
/** Vision projectors ship as GGUF files too, but are no model of their own. */
const PROJECTOR = /^mmproj/i;

/** What a folder holds, as far as engines care. */
export function inspectModelFolder(path: string): ModelFolder {
  let names: string[];
  try {
    names = readdirSync(path).sort();
  } catch {
    return { mlx: false };
  }
  return folderOf(path, names);
}

function folderOf(path: string, names: string[]): ModelFolder {
  const mlx = names.includes("config.json") && names.some((n) => n.endsWith(".safetensors"));
  const gguf = names.find((n) => isModelGguf(n));
  return { mlx, ...(gguf ? { gguf: join(path, gguf) } : {}) };
}

function isModelGguf(name: string): boolean {
  if (!GGUF.test(name) || PROJECTOR.test(name)) return false;
  const part = SPLIT_PART.exec(name);
  return !part || Number(part[1]) === 1;
}

/** The models in `dir`, sorted by path; names already `taken` (configured models) are skipped. */
export async function scanModelsDir(dir: string, taken: ReadonlySet<string> = new Set()): Promise<Discovery> {
  const found: Discovery = { models: [], skipped: [] };
  const names = new Set(taken);
  const offer = (spec: ModelSpec) => {
    if (names.has(spec.name)) {
      found.skipped.push({ path: spec.path, reason: `the name "${spec.name}" is taken` });
      return;
    }
    names.add(spec.name);
    found.models.push(spec);
  };
  const visit = async (folder: string, depth: number) => {
    const entries = await readdir(folder, { withFileTypes: true }).catch(() => []);
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      if (entry.name.startsWith(".")) continue;
      const path = join(folder, entry.name);
      if (entry.isFile() && isModelGguf(entry.name)) {
        const name = entry.name.replace(SPLIT_PART, "").replace(GGUF, "");
        if (isModelId(name)) offer({ name, path });
        else
          found.skipped.push({
            path,
            reason: `"${name}" is not a model name; name it with --model NAME=PATH`,
          });
      } else if (entry.isDirectory()) {
        const children = await readdir(path).catch(() => []);
        const inside = folderOf(path, children.sort());
        if (inside.mlx) {
          const name = basename(path);
          if (isModelId(name))
            offer({ name, path, format: "mlx", ...(inside.gguf ? { gguf: inside.gguf } : {}) });
          else
            found.skipped.push({
              path,
              reason: `"${name}" is not a model name; name it with --model NAME=PATH`,
            });
        } else if (depth === 0) {
          await visit(path, 1);
        }
      }
    }
  };
  await visit(dir, 0);
  return found;
}
