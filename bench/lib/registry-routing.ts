// Makes the bench's requests registry-routed: each benchmark model an agent serves on its own is
// registered by the hub as an agent-local version; activating it makes a request by name resolve
// through the hub's routing table (name -> active version -> agents), as in production. A gateway
// built before the registry (a --against ref) has no /models routes and is measured as it is.
import { AGENT_LOCAL_VERSION } from "../../schema/registry.ts";
import { mintToken } from "../../scripts/lib/token.ts";

export type RegistryRouting = "registry" | "no registry in this build";

/**
 * Activates `name:0.0.0-local` for each model on the gateway at `origin`. The hub registers a
 * model shortly after an agent announces it, so a 404 VERSION_NOT_FOUND is retried for a while.
 */
export async function routeThroughRegistry(
  origin: string,
  secret: string,
  models: readonly string[],
  timeoutMs = 30_000,
): Promise<RegistryRouting> {
  const token = await mintToken({ secret, role: "admin", sub: "bench", ttlSeconds: 3600 });
  for (const model of models) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const res = await fetch(`${origin}/models/${model}:${AGENT_LOCAL_VERSION}/activate`, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ timeout_ms: 10_000 }),
      });
      const body = await res.text();
      if (res.ok) break;
      // A route this build does not have is NOT_FOUND; a version not registered yet names itself.
      if (res.status === 404 && res.headers.get("x-error-code") === "NOT_FOUND")
        return "no registry in this build";
      if (Date.now() > deadline) {
        throw new Error(`could not activate ${model}:${AGENT_LOCAL_VERSION}: ${res.status} ${body}`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  return "registry";
}
