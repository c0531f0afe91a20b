// The model registry's HTTP API in workerd: registration (the specification's body as written),
// validation codes with nothing written, reads, roles, concurrent registrations, metrics, tags,
// aliases, lineage and serving?at.
import { describe, expect, it } from "vitest";
import { RegistryLimits } from "../../schema/registry-api.ts";
import { gatewayFetch, sleep } from "./helpers.ts";
import { call, expectError, modelName, register, registerInstant } from "./registry-helpers.ts";

describe("POST /models/register", () => {
  it("takes the specification's example body as written", async () => {
    const answer = await call(
      "POST",
      "/models/register",
      `{
    "model_path": "/path/to/model",
    "name": "my-model",
    "version": "1.0.0",
    "description": "Production model v1",
    "model_type": "llm",
    "framework": "mlx",
    "tags": ["production", "optimized"],
    "performance_metrics": {
      "accuracy": 0.95,
      "latency_ms": 150
    }
  }`,
    );
    expect(answer.status).toBe(201);
    expect(answer.body).toMatchObject({
      model_id: "my-model:1.0.0",
      status: "registered",
      source: { kind: "path", path: "/path/to/model" },
      tags: ["production", "optimized"],
    });
    const version = await call("GET", "/models/my-model/1.0.0", undefined, { role: "user" });
    expect(version.status).toBe(200);
    expect(version.body).toMatchObject({
      model_id: "my-model:1.0.0",
      description: "Production model v1",
      model_type: "llm",
      framework: "mlx",
      model_path: "/path/to/model",
      tags: ["optimized", "production"],
      performance_metrics: { accuracy: 0.95, latency_ms: 150 },
      created_by: "ops-alice",
    });
    expect(version.body.events.map((e: { kind: string }) => e.kind)).toEqual(["registered"]);
    const model = await call("GET", "/models/my-model", undefined, { role: "user" });
    expect(model.body).toMatchObject({ name: "my-model", active_version: null, pools: ["default"] });
  });

  it("refuses bad input with a stable code and writes nothing", async () => {
    const name = modelName();
    const base = { name, version: "1.0.0", model_path: "/m" };
    const cases: [Record<string, unknown> | string, number, string][] = [
      [{ ...base, version: "1.0" }, 400, "INVALID_VERSION"],
      [{ ...base, version: "01.0.0" }, 400, "INVALID_VERSION"],
      [{ ...base, name: "My Model" }, 400, "INVALID_MODEL_NAME"],
      [{ ...base, name: "org/model" }, 400, "INVALID_MODEL_NAME"],
      [
        { ...base, description: "x".repeat(RegistryLimits.maxDescriptionChars + 1) },
        400,
        "METADATA_TOO_LARGE",
      ],
      [{ ...base, tags: Array.from({ length: 33 }, (_, i) => `t${i}`) }, 400, "METADATA_TOO_LARGE"],
      [{ ...base, tags: ["x".repeat(65)] }, 400, "METADATA_TOO_LARGE"],
      [{ ...base, tags: ["no spaces"] }, 400, "INVALID_TAG"],
      [
        {
          ...base,
          performance_metrics: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, i])),
        },
        400,
        "METADATA_TOO_LARGE",
      ],
      [{ ...base, model_path: "/m", padding: "x".repeat(70_000) }, 400, "METADATA_TOO_LARGE"],
      [{ ...base, performance_metrics: { accuracy: "high" } }, 400, "INVALID_METRICS"],
      [{ ...base, performance_metrics: { accuracy: null } }, 400, "INVALID_METRICS"],
      [{ ...base, parent: `${name}:0.9.0` }, 400, "PARENT_NOT_FOUND"],
      [{ ...base, parent: "not a model id" }, 400, "INVALID_MODEL_ID"],
      [{ name, version: "1.0.0", source: { kind: "artifact" } }, 400, "INVALID_REQUEST"],
      [{ name, version: "1.0.0" }, 400, "INVALID_REQUEST"],
      [{ ...base, unknown_field: 1 }, 400, "INVALID_REQUEST"],
      ["{not json", 400, "INVALID_JSON"],
    ];
    for (const [body, status, code] of cases) {
      await expectError(call("POST", "/models/register", body), status, code);
    }
    await expectError(call("GET", `/models/${name}`), 404, "MODEL_NOT_FOUND");
  });

  it("records source, sha256, size, parameters, parent and dependencies", async () => {
    const name = modelName();
    await register(name, "1.0.0");
    const recorded = {
      source: { kind: "artifact", format: "gguf" },
      sha256: "a".repeat(64),
      size: 1234,
      parameters: { contextLength: 4096, quantization: "q4_k_m", engines: ["llamacpp"] },
      parent: `${name}:1.0.0`,
      dependencies: ["tokenizer-x:1.0.0"],
    };
    await register(name, "1.1.0", { model_path: undefined, ...recorded });
    const v = await call("GET", `/models/${name}/1.1.0`, undefined, { role: "user" });
    expect(v.body).toMatchObject({ ...recorded, artifact: null });
  });

  it("lets exactly one of 20 concurrent registrations of a version win; the rest are 409", async () => {
    const name = modelName();
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        call("POST", "/models/register", { name, version: "1.0.0", model_path: `/m/${i}` }),
      ),
    );
    const statuses = answers.map((a) => a.status).sort();
    expect(statuses.filter((s) => s === 201)).toHaveLength(1);
    expect(statuses.filter((s) => s === 409)).toHaveLength(19);
    expect(new Set(answers.filter((a) => a.status === 409).map((a) => a.code))).toEqual(
      new Set(["VERSION_EXISTS"]),
    );
    const lineage = await call("GET", `/models/${name}/lineage`);
    expect(lineage.body.events.filter((e: { kind: string }) => e.kind === "registered")).toHaveLength(1);
    await expectError(
      call("POST", "/models/register", { name, version: "1.0.0", model_path: "/x" }),
      409,
      "VERSION_EXISTS",
    );
  });
});

describe("roles", () => {
  it("lets a user read and refuses a user's writes (403); no token is 401", async () => {
    const name = modelName();
    await register(name, "1.0.0");
    expect((await call("GET", "/models", undefined, { role: "user" })).status).toBe(200);
    expect((await call("GET", `/models/${name}`, undefined, { role: "user" })).status).toBe(200);
    const asUser = { role: "user" };
    await expectError(
      call("POST", "/models/register", { name, version: "2.0.0", model_path: "/m" }, asUser),
      403,
      "FORBIDDEN",
    );
    await expectError(call("POST", `/models/${name}:1.0.0/activate`, undefined, asUser), 403, "FORBIDDEN");
    await expectError(call("POST", `/models/${name}/rollback`, undefined, asUser), 403, "FORBIDDEN");
    await expectError(
      call("POST", `/models/${name}:1.0.0/metrics`, { metrics: { a: 1 } }, asUser),
      403,
      "FORBIDDEN",
    );
    await expectError(call("PUT", `/models/${name}/tags/x`, undefined, asUser), 403, "FORBIDDEN");
    await expectError(
      call("PUT", `/models/${name}/aliases/stable`, { version: "1.0.0" }, asUser),
      403,
      "FORBIDDEN",
    );
    await expectError(call("POST", `/models/${name}:1.0.0/archive`, undefined, asUser), 403, "FORBIDDEN");
    await expectError(call("GET", "/models", undefined, { role: "agent" }), 403, "FORBIDDEN");
    const anonymous = await gatewayFetch("/models");
    expect(anonymous.status).toBe(401);
  });
});

describe("GET /models, /models/:name, /models/:name/:version", () => {
  it("lists versions newest first by semver, with status, tags and aliases", async () => {
    const name = modelName();
    for (const v of ["1.2.0", "1.10.0", "1.9.0", "1.10.0-rc.1", "0.1.0"]) await registerInstant(name, v);
    const detail = await call("GET", `/models/${name}`, undefined, { role: "user" });
    expect(detail.body.versions.map((v: { version: string }) => v.version)).toEqual([
      "1.10.0",
      "1.10.0-rc.1",
      "1.9.0",
      "1.2.0",
      "0.1.0",
    ]);
    await call("POST", `/models/${name}:1.9.0/activate`);
    await call("PUT", `/models/${name}/aliases/stable`, { version: "1.9.0" });
    await call("PUT", `/models/${name}/tags/team-a`);
    const after = await call("GET", `/models/${name}`, undefined, { role: "user" });
    expect(after.body).toMatchObject({
      active_version: "1.9.0",
      status: "active",
      aliases: { stable: "1.9.0" },
      tags: ["team-a"],
    });
    const v19 = after.body.versions.find((v: { version: string }) => v.version === "1.9.0");
    expect(v19).toMatchObject({ status: "active", aliases: ["stable"], model_id: `${name}:1.9.0` });
    const list = await call("GET", "/models", undefined, { role: "user" });
    expect(list.body.models.find((m: { name: string }) => m.name === name)).toMatchObject({
      active_version: "1.9.0",
      status: "active",
      pools: ["default"],
      versions: 5,
      tags: ["team-a"],
    });
  });

  it("answers 404 naming which is missing: the model or the version", async () => {
    const name = modelName();
    await register(name, "1.0.0");
    await expectError(call("GET", "/models/no-such-model"), 404, "MODEL_NOT_FOUND");
    await expectError(call("GET", "/models/no-such-model/1.0.0"), 404, "MODEL_NOT_FOUND");
    await expectError(call("GET", `/models/${name}/2.0.0`), 404, "VERSION_NOT_FOUND");
    await expectError(call("POST", `/models/${name}:2.0.0/activate`), 404, "VERSION_NOT_FOUND");
    await expectError(call("POST", "/models/no-such-model:1.0.0/activate"), 404, "MODEL_NOT_FOUND");
    await expectError(call("POST", `/models/${name}@nope/activate`), 404, "ALIAS_NOT_FOUND");
    await expectError(call("POST", `/models/${name}/activate`), 400, "INVALID_MODEL_ID");
    await expectError(call("GET", "/models/no-such-model/lineage"), 404, "MODEL_NOT_FOUND");
    await expectError(call("GET", "/models/no-such-model/serving"), 404, "MODEL_NOT_FOUND");
  });
});

describe("metrics", () => {
  it("records evaluations with source and time; a version shows declared, evaluation and live", async () => {
    const name = modelName();
    await register(name, "1.0.0", { performance_metrics: { accuracy: 0.9 } });
    const posted = await call("POST", `/models/${name}:1.0.0/metrics`, {
      metrics: { mmlu: 0.61, latency_ms: 120 },
      source: "harness-v2",
      recorded_at: "2026-11-30T12:00:00Z",
    });
    expect(posted.status).toBe(201);
    expect(posted.body).toMatchObject({
      model_id: `${name}:1.0.0`,
      source: "harness-v2",
      recorded_at: "2026-11-30T12:00:00.000Z",
    });
    await expectError(
      call("POST", `/models/${name}:1.0.0/metrics`, { metrics: { a: "x" } }),
      400,
      "INVALID_METRICS",
    );
    await expectError(
      call("POST", `/models/${name}:1.0.0/metrics`, { metrics: { a: 1 }, recorded_at: "yesterday" }),
      400,
      "INVALID_REQUEST",
    );
    const v = await call("GET", `/models/${name}/1.0.0`);
    expect(v.body.performance_metrics).toEqual({ accuracy: 0.9 });
    expect(v.body.evaluation_metrics).toEqual([
      expect.objectContaining({
        source: "evaluation",
        label: "harness-v2",
        metrics: { mmlu: 0.61, latency_ms: 120 },
      }),
    ]);
    expect(v.body.live_metrics).toEqual([]);
    expect(v.body.events.map((e: { kind: string }) => e.kind)).toEqual(["registered", "metrics_recorded"]);
  });
});

describe("tags and aliases", () => {
  it("sets and removes tags on models and versions, recording each change once", async () => {
    const name = modelName();
    await register(name, "1.0.0", { tags: ["a"] });
    expect((await call("PUT", `/models/${name}/tags/fleet`)).body).toMatchObject({
      version: null,
      tags: ["fleet"],
      changed: true,
    });
    expect((await call("PUT", `/models/${name}:1.0.0/tags/b`)).body).toMatchObject({
      version: "1.0.0",
      tags: ["a", "b"],
    });
    expect((await call("PUT", `/models/${name}:1.0.0/tags/b`)).body.changed).toBe(false);
    expect((await call("DELETE", `/models/${name}:1.0.0/tags/a`)).body.tags).toEqual(["b"]);
    expect((await call("DELETE", `/models/${name}/tags/fleet`)).body.tags).toEqual([]);
    await expectError(call("PUT", `/models/${name}/tags/bad%20tag`), 400, "INVALID_TAG");
    await expectError(call("PUT", `/models/${name}:9.9.9/tags/x`), 404, "VERSION_NOT_FOUND");
    await expectError(call("PUT", "/models/nobody/tags/x"), 404, "MODEL_NOT_FOUND");
    const lineage = await call("GET", `/models/${name}/lineage`);
    expect(lineage.body.events.filter((e: { kind: string }) => e.kind === "tags_changed")).toHaveLength(4);
  });

  it("resolves name@alias like a version in every model_id route", async () => {
    const name = modelName();
    await registerInstant(name, "1.0.0");
    await registerInstant(name, "2.0.0");
    expect((await call("PUT", `/models/${name}/aliases/stable`, { version: "1.0.0" })).body).toMatchObject({
      previous: null,
    });
    expect((await call("PUT", `/models/${name}/aliases/stable`, { version: "2.0.0" })).body).toMatchObject({
      previous: "1.0.0",
    });
    expect((await call("POST", `/models/${name}@stable/metrics`, { metrics: { x: 1 } })).body.model_id).toBe(
      `${name}:2.0.0`,
    );
    expect((await call("PUT", `/models/${name}@stable/tags/pinned`)).body.version).toBe("2.0.0");
    expect((await call("POST", `/models/${name}@stable/activate`)).body.model_id).toBe(`${name}:2.0.0`);
    await expectError(
      call("PUT", `/models/${name}/aliases/Bad!`, { version: "1.0.0" }),
      400,
      "INVALID_ALIAS",
    );
    await expectError(
      call("PUT", `/models/${name}/aliases/latest`, { version: "3.0.0" }),
      404,
      "VERSION_NOT_FOUND",
    );
    await expectError(
      call("PUT", `/models/${name}/aliases/latest`, { version: "x" }),
      400,
      "INVALID_VERSION",
    );
    expect((await call("DELETE", `/models/${name}/aliases/stable`)).body).toMatchObject({ removed: "2.0.0" });
    await expectError(call("DELETE", `/models/${name}/aliases/stable`), 404, "ALIAS_NOT_FOUND");
    await expectError(
      call("POST", `/models/${name}@stable/metrics`, { metrics: { x: 1 } }),
      404,
      "ALIAS_NOT_FOUND",
    );
  });
});

describe("GET /models/:name/lineage", () => {
  it("is the version graph (parents, dependencies), every event with actor and time, and metrics per version", async () => {
    const name = modelName();
    await registerInstant(name, "1.0.0", { performance_metrics: { accuracy: 0.8 } });
    await registerInstant(name, "1.1.0", { parent: `${name}:1.0.0`, dependencies: ["tok:1.0.0"] });
    await registerInstant(name, "1.1.1", { parent: `${name}:1.1.0` });
    await call("POST", `/models/${name}:1.1.0/activate`, undefined, { sub: "ops-bob" });
    await call("POST", `/models/${name}:1.1.0/metrics`, { metrics: { accuracy: 0.85 } });
    const { body } = await call("GET", `/models/${name}/lineage`, undefined, { role: "user" });
    expect(body.name).toBe(name);
    expect(body.versions.map((v: { version: string }) => v.version)).toEqual(["1.0.0", "1.1.0", "1.1.1"]);
    expect(body.versions[1]).toMatchObject({
      parent: `${name}:1.0.0`,
      dependencies: ["tok:1.0.0"],
      status: "active",
    });
    expect(body.edges).toEqual([
      { from: `${name}:1.0.0`, to: `${name}:1.1.0`, kind: "parent" },
      { from: "tok:1.0.0", to: `${name}:1.1.0`, kind: "dependency" },
      { from: `${name}:1.1.0`, to: `${name}:1.1.1`, kind: "parent" },
    ]);
    const kinds = body.events.map((e: { kind: string }) => e.kind);
    expect(kinds).toEqual([
      "registered",
      "registered",
      "registered",
      "activation_started",
      "activated",
      "metrics_recorded",
    ]);
    const activated = body.events.find((e: { kind: string }) => e.kind === "activated");
    expect(activated).toMatchObject({
      version: "1.1.0",
      actor: "ops-bob",
      detail: { from: null, to: "1.1.0" },
    });
    expect(Date.parse(activated.at)).toBeGreaterThan(0);
    expect(body.metrics["1.0.0"]).toEqual([
      expect.objectContaining({ source: "declared", metrics: { accuracy: 0.8 } }),
    ]);
    expect(body.metrics["1.1.0"]).toEqual([
      expect.objectContaining({ source: "evaluation", metrics: { accuracy: 0.85 } }),
    ]);
    expect(body.metrics["1.1.1"]).toEqual([]);
  });
});

describe("GET /models/:name/serving?at=", () => {
  it("answers which version served the name at each time", async () => {
    const name = modelName();
    await registerInstant(name, "1.0.0");
    await registerInstant(name, "2.0.0");
    const t0 = Date.now();
    await sleep(5);
    await call("POST", `/models/${name}:1.0.0/activate`);
    await sleep(5);
    const t1 = Date.now();
    await sleep(5);
    await call("POST", `/models/${name}:2.0.0/activate`);
    await sleep(5);
    const t2 = Date.now();
    await sleep(5);
    await call("POST", `/models/${name}/rollback`);
    await sleep(5);
    const t3 = Date.now();
    await sleep(5);
    await call("POST", `/models/${name}/deactivate`);
    await sleep(5);
    const t4 = Date.now();
    const at = async (time: number | string) =>
      (
        await call("GET", `/models/${name}/serving?at=${encodeURIComponent(String(time))}`, undefined, {
          role: "user",
        })
      ).body;
    expect(await at(t0)).toMatchObject({ name, version: null, since: null });
    expect(await at(t1)).toMatchObject({ version: "1.0.0" });
    expect(await at(new Date(t2).toISOString())).toMatchObject({
      version: "2.0.0",
      at: new Date(t2).toISOString(),
    });
    expect(await at(t3)).toMatchObject({ version: "1.0.0" });
    const last = await at(t4);
    expect(last.version).toBeNull();
    expect(Date.parse(last.since)).toBeLessThanOrEqual(t4);
    expect((await call("GET", `/models/${name}/serving`)).body.version).toBeNull();
    await expectError(call("GET", `/models/${name}/serving?at=yesterday`), 400, "INVALID_TIME");
    await expectError(call("GET", `/models/${name}/serving?at=2026-13-45T99:00:00Z`), 400, "INVALID_TIME");
  });
});
