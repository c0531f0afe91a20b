// One agent, several engines: an Engine that routes each model to the engine serving it. Its
// models are the members' merged (a name two engines offer is the first one's); a generate, load
// or unload goes to the model's engine. A model keeps its route once seen, so a request for an
// Ollama model while its server is away reaches the Ollama engine and fails as unavailable
// (retryable) instead of as unknown.
import { stat } from "node:fs/promises";
import type { ModelId } from "../../schema/model-id.ts";
import type { EngineInfo, EngineName, ModelInfo } from "../../schema/protocol.ts";
import {
  type Engine,
  EngineError,
  type Generation,
  type GenerationRequest,
  type LoadSpec,
  type UnloadOptions,
} from "./engine.ts";
import { streamGeneration } from "./pieces.ts";

export interface CompositeOptions {
  /** Models that belong to one member from the start (configured ones), by name. */
  routes?: ReadonlyMap<string, EngineName>;
  /** What hello says of a member that does not describe itself. */
  describeMember?: (engine: Engine) => Promise<EngineInfo>;
}

export class CompositeEngine implements Engine {
  readonly name: EngineName;
  private readonly byName = new Map<EngineName, Engine>();
  /** model -> the member serving it: configured, listed once, or loaded there. */
  private readonly routes = new Map<string, Engine>();
  /** Routes of configured models, which outlive an unload. */
  private readonly fixed = new Set<string>();
  private readonly describeMember: (engine: Engine) => Promise<EngineInfo>;

  constructor(
    private readonly members: readonly Engine[],
    options: CompositeOptions = {},
  ) {
    const first = members[0];
    if (!first) throw new Error("a composite engine needs at least one engine");
    this.name = first.name;
    for (const member of members) {
      if (this.byName.has(member.name)) throw new Error(`engine ${member.name} is given twice`);
      this.byName.set(member.name, member);
    }
    for (const [model, engine] of options.routes ?? []) {
      const member = this.byName.get(engine);
      if (!member) throw new Error(`model "${model}" is routed to ${engine}, which is not running`);
      this.routes.set(model, member);
      this.fixed.add(model);
    }
    this.describeMember = options.describeMember ?? (async (e) => ({ name: e.name, capabilities: [] }));
  }

  /** The engines behind this one, in hello's order. */
  get engines(): readonly Engine[] {
    return this.members;
  }

  /** Every member's models; a member that fails to list is left out, unless all fail. */
  async listModels(): Promise<ModelInfo[]> {
    const lists = await Promise.allSettled(this.members.map((m) => m.listModels()));
    const failed = lists.find((l) => l.status === "rejected");
    if (failed && lists.every((l) => l.status === "rejected")) throw failed.reason;
    const out = new Map<string, ModelInfo>();
    lists.forEach((list, i) => {
      const member = this.members[i] as Engine;
      if (list.status !== "fulfilled") return;
      for (const model of list.value) {
        const route = this.routes.get(model.name);
        if (route && route !== member) continue; // served by another engine
        if (out.has(model.name)) continue;
        if (!route) this.routes.set(model.name, member);
        out.set(model.name, model);
      }
    });
    return [...out.values()];
  }

  async describe(): Promise<EngineInfo[]> {
    const described = await Promise.all(
      this.members.map(async (m) => (m.describe ? await m.describe() : [await this.describeMember(m)])),
    );
    return described.flat();
  }

  generate(request: GenerationRequest, signal: AbortSignal): Generation {
    const known = this.routes.get(request.model);
    if (known) return known.generate(request, signal);
    // Not seen yet (a model that appeared since the last list): look once, then route.
    return streamGeneration(
      async (emit, halt) => {
        const member = await this.route(request.model);
        const inner = member.generate(request, AbortSignal.any([signal, halt.signal]));
        for await (const piece of inner) emit(piece);
        return inner.result;
      },
      (err) =>
        err instanceof EngineError
          ? err
          : new EngineError("ENGINE_ERROR", "the engine failed", true, { cause: err }),
    );
  }

  async load(model: ModelId, spec?: LoadSpec): Promise<ModelInfo> {
    if (!spec) return (await this.route(model)).load(model);
    const member = await this.memberFor(spec);
    const current = this.routes.get(model);
    if (current && current !== member) {
      throw new EngineError(
        "MODEL_LOAD_FAILED",
        `model "${model}" is served by ${current.name} on this agent; unload it before loading it with ${member.name}`,
      );
    }
    const info = await member.load(model, spec);
    this.routes.set(model, member);
    return info;
  }

  async unload(model: ModelId, options?: UnloadOptions): Promise<void> {
    await (await this.route(model)).unload(model, options);
    // A registry version may come back on another engine; a model still listed is routed again.
    if (!this.fixed.has(model)) this.routes.delete(model);
  }

  async close(): Promise<void> {
    await Promise.all(this.members.map((m) => m.close()));
  }

  private async route(model: string): Promise<Engine> {
    let member = this.routes.get(model);
    if (!member) {
      await this.listModels().catch(() => undefined);
      member = this.routes.get(model);
    }
    if (!member) throw new EngineError("MODEL_NOT_FOUND", `no model named "${model}" on this agent`);
    return member;
  }

  /** The member a registry version loads on: the one it names, else by its weights (a folder: MLX; a file: llama.cpp). */
  private async memberFor(spec: LoadSpec): Promise<Engine> {
    const named = (engine: EngineName) => {
      const member = this.byName.get(engine);
      if (!member) {
        throw new EngineError(
          "MODEL_LOAD_FAILED",
          `this agent runs no ${engine} engine (it runs ${[...this.byName.keys()].join(", ")})`,
        );
      }
      return member;
    };
    if (spec.engine) return named(spec.engine);
    const folder = await stat(spec.path).then(
      (s) => s.isDirectory(),
      () => false,
    );
    return named(folder ? "mlx" : "llamacpp");
  }
}
