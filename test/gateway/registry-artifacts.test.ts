// Artifacts in workerd: an upload is kept only when its size and sha256 match the registration
// (nothing kept otherwise), artifacts are immutable, and agents download them whole or by range.
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import worker from "../../gateway/index.ts";
import { BASE, bearer, gatewayFetch } from "./helpers.ts";
import { call, expectError, modelName, register } from "./registry-helpers.ts";

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Deterministic bytes of a given length (a pretend GGUF). */
function artifactBytes(length: number, seed = 7): Uint8Array {
  const bytes = new Uint8Array(length);
  let x = seed;
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

async function registerArtifact(name: string, version: string, bytes: Uint8Array, sha256?: string) {
  return register(name, version, {
    model_path: undefined,
    source: { kind: "artifact", format: "gguf" },
    sha256: sha256 ?? (await sha256Hex(bytes)),
    size: bytes.byteLength,
  });
}

async function upload(modelId: string, bytes: Uint8Array, contentLength = bytes.byteLength, role = "admin") {
  const response = await gatewayFetch(`/models/${modelId}/artifact`, {
    method: "PUT",
    headers: {
      ...(await bearer({ role, sub: "ops-alice" })),
      "Content-Type": "application/octet-stream",
      "Content-Length": String(contentLength),
    },
    body: bytes,
  });
  const body = (await response.json()) as { error?: { code: string } } & Record<string, unknown>;
  return { status: response.status, code: body.error?.code, body };
}

async function download(modelId: string, headers: Record<string, string> = {}, role = "agent") {
  return gatewayFetch(`/models/${modelId}/artifact`, {
    headers: { ...(await bearer({ role, sub: "mini-1" })), ...headers },
  });
}

describe("PUT /models/:model_id/artifact", () => {
  it("streams the upload into R2 while hashing it, records the event, and serves it to agents", async () => {
    const name = modelName();
    const bytes = artifactBytes(300_000);
    const sha256 = await sha256Hex(bytes);
    await registerArtifact(name, "1.0.0", bytes);
    const stored = await upload(`${name}:1.0.0`, bytes);
    expect(stored.status).toBe(201);
    expect(stored.body).toMatchObject({ model_id: `${name}:1.0.0`, sha256, size: bytes.byteLength });
    const v = await call("GET", `/models/${name}/1.0.0`);
    expect(v.body.artifact).toMatchObject({ path: `/models/${name}:1.0.0/artifact` });
    expect(v.body.events.map((e: { kind: string }) => e.kind)).toEqual(["registered", "artifact_uploaded"]);
    const whole = await download(`${name}:1.0.0`);
    expect(whole.status).toBe(200);
    expect(whole.headers.get("ETag")).toBe(`"${sha256}"`);
    expect(whole.headers.get("Accept-Ranges")).toBe("bytes");
    expect(whole.headers.get("Content-Length")).toBe(String(bytes.byteLength));
    expect(await sha256Hex(new Uint8Array(await whole.arrayBuffer()))).toBe(sha256);
    // An admin may fetch it too; a user may not.
    const asAdmin = await download(`${name}:1.0.0`, {}, "admin");
    expect(asAdmin.status).toBe(200);
    await asAdmin.arrayBuffer();
    const asUser = await download(`${name}:1.0.0`, {}, "user");
    expect(asUser.status).toBe(403);
    await asUser.arrayBuffer();
  });

  it("is immutable: a second upload is 409 ARTIFACT_EXISTS", async () => {
    const name = modelName();
    const bytes = artifactBytes(1000);
    await registerArtifact(name, "1.0.0", bytes);
    expect((await upload(`${name}:1.0.0`, bytes)).status).toBe(201);
    const again = await upload(`${name}:1.0.0`, bytes);
    expect({ status: again.status, code: again.code }).toEqual({ status: 409, code: "ARTIFACT_EXISTS" });
  });

  it("refuses a hash mismatch and keeps nothing; the right bytes are accepted after", async () => {
    const name = modelName();
    const bytes = artifactBytes(5000);
    await registerArtifact(name, "1.0.0", bytes);
    const wrong = artifactBytes(5000, 99);
    const refused = await upload(`${name}:1.0.0`, wrong);
    expect({ status: refused.status, code: refused.code }).toEqual({
      status: 400,
      code: "ARTIFACT_HASH_MISMATCH",
    });
    const listed = await env.ARTIFACTS.list({ prefix: `models/${name}/` });
    expect(listed.objects).toEqual([]);
    const missing = await download(`${name}:1.0.0`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe("ARTIFACT_NOT_FOUND");
    const v = await call("GET", `/models/${name}/1.0.0`);
    const refusedEvent = v.body.events.find((e: { kind: string }) => e.kind === "artifact_refused");
    expect(refusedEvent.detail).toMatchObject({ reason: "sha256", actual_sha256: await sha256Hex(wrong) });
    expect((await upload(`${name}:1.0.0`, bytes)).status).toBe(201);
    expect((await env.ARTIFACTS.list({ prefix: `models/${name}/` })).objects).toHaveLength(1);
  });

  it("refuses a Content-Length other than the registered size (400 ARTIFACT_SIZE_MISMATCH)", async () => {
    const name = modelName();
    const bytes = artifactBytes(2000);
    await registerArtifact(name, "1.0.0", bytes);
    const short = await upload(`${name}:1.0.0`, bytes.slice(0, 1999));
    expect({ status: short.status, code: short.code }).toEqual({
      status: 400,
      code: "ARTIFACT_SIZE_MISMATCH",
    });
    expect((await env.ARTIFACTS.list({ prefix: `models/${name}/` })).objects).toEqual([]);
  });

  it("refuses a body that ends before its Content-Length, keeping nothing (artifact_refused)", async () => {
    const name = modelName();
    const bytes = artifactBytes(2000);
    await registerArtifact(name, "1.0.0", bytes);
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(bytes.slice(0, 1500));
        controller.close();
      },
    });
    const response = await gatewayFetch(`/models/${name}:1.0.0/artifact`, {
      method: "PUT",
      headers: { ...(await bearer({ role: "admin" })), "Content-Length": "2000" },
      body,
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe(
      "ARTIFACT_SIZE_MISMATCH",
    );
    expect((await env.ARTIFACTS.list({ prefix: `models/${name}/` })).objects).toEqual([]);
    const v = await call("GET", `/models/${name}/1.0.0`);
    expect(v.body.events.at(-1)).toMatchObject({ kind: "artifact_refused", detail: { reason: "size" } });
    expect(v.body.artifact).toBeNull();
  });

  it("refuses an artifact over ARTIFACT_MAX_BYTES (413 ARTIFACT_TOO_LARGE)", async () => {
    const name = modelName();
    const bytes = artifactBytes(4096);
    await registerArtifact(name, "1.0.0", bytes);
    const request = new Request(`${BASE}/models/${name}:1.0.0/artifact`, {
      method: "PUT",
      headers: { ...(await bearer({ role: "admin" })), "Content-Length": String(bytes.byteLength) },
      body: bytes,
    });
    const ctx = createExecutionContext();
    const response = await worker.fetch(
      request,
      { ...env, ARTIFACT_MAX_BYTES: "1024" } as unknown as Env,
      ctx,
    );
    await waitOnExecutionContext(ctx);
    expect(response.status).toBe(413);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe("ARTIFACT_TOO_LARGE");
    expect((await env.ARTIFACTS.list({ prefix: `models/${name}/` })).objects).toEqual([]);
  });

  it("needs an artifact registration: 404 without one, 409 SOURCE_NOT_ARTIFACT for another source", async () => {
    const name = modelName();
    await register(name, "1.0.0");
    const bytes = artifactBytes(10);
    const notArtifact = await upload(`${name}:1.0.0`, bytes);
    expect({ status: notArtifact.status, code: notArtifact.code }).toEqual({
      status: 409,
      code: "SOURCE_NOT_ARTIFACT",
    });
    const unknownVersion = await upload(`${name}:2.0.0`, bytes);
    expect({ status: unknownVersion.status, code: unknownVersion.code }).toEqual({
      status: 404,
      code: "VERSION_NOT_FOUND",
    });
    const unknownModel = await upload("nobody:1.0.0", bytes);
    expect({ status: unknownModel.status, code: unknownModel.code }).toEqual({
      status: 404,
      code: "MODEL_NOT_FOUND",
    });
    const asAgent = await upload(`${name}:1.0.0`, bytes, bytes.byteLength, "agent");
    expect(asAgent.status).toBe(403);
    await expectError(call("GET", `/models/${name}:1.0.0/artifact`), 409, "SOURCE_NOT_ARTIFACT");
  });
});

describe("GET /models/:model_id/artifact with Range", () => {
  it("answers 206 with Content-Range for a range, a suffix and an open end; 416 outside the object", async () => {
    const name = modelName();
    const bytes = artifactBytes(10_000);
    await registerArtifact(name, "1.0.0", bytes);
    await upload(`${name}:1.0.0`, bytes);
    const id = `${name}:1.0.0`;
    const part = await download(id, { Range: "bytes=100-199" });
    expect(part.status).toBe(206);
    expect(part.headers.get("Content-Range")).toBe("bytes 100-199/10000");
    expect(part.headers.get("Content-Length")).toBe("100");
    expect(new Uint8Array(await part.arrayBuffer())).toEqual(bytes.slice(100, 200));
    const resume = await download(id, { Range: "bytes=9000-" });
    expect(resume.headers.get("Content-Range")).toBe("bytes 9000-9999/10000");
    expect(new Uint8Array(await resume.arrayBuffer())).toEqual(bytes.slice(9000));
    const suffix = await download(id, { Range: "bytes=-10" });
    expect(suffix.headers.get("Content-Range")).toBe("bytes 9990-9999/10000");
    expect(new Uint8Array(await suffix.arrayBuffer())).toEqual(bytes.slice(9990));
    const clipped = await download(id, { Range: "bytes=9995-20000" });
    expect(clipped.headers.get("Content-Range")).toBe("bytes 9995-9999/10000");
    await clipped.arrayBuffer();
    for (const range of ["bytes=10000-", "bytes=5-2", "bytes=0-1,5-6", "items=0-1", "bytes=-0"]) {
      const bad = await download(id, { Range: range });
      expect(bad.status, range).toBe(416);
      expect(bad.headers.get("Content-Range")).toBe("bytes */10000");
      expect(((await bad.json()) as { error: { code: string } }).error.code).toBe("RANGE_NOT_SATISFIABLE");
    }
  });

  it("resolves name@alias", async () => {
    const name = modelName();
    const bytes = artifactBytes(64);
    await registerArtifact(name, "1.0.0", bytes);
    await upload(`${name}:1.0.0`, bytes);
    await call("PUT", `/models/${name}/aliases/stable`, { version: "1.0.0" });
    const response = await download(`${name}@stable`);
    expect(response.status).toBe(200);
    expect(new Uint8Array(await response.arrayBuffer())).toEqual(bytes);
  });
});
