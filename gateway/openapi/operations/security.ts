// The security operations: the prompt-injection policy (/security). docs/security-io.md has the
// rules, the modes and their trade-offs, content filters, output sanitization and the headers.
import { z } from "zod";
import { InjectionPolicyRequest, InjectionPolicyResponse } from "../../../schema/security-api.ts";
import type { OperationSpec } from "../operation.ts";

export const securityOperations: OperationSpec[] = [
  {
    method: "get",
    path: "/security/injection-policy",
    operationId: "getInjectionPolicy",
    tag: "Security",
    access: "admin",
    summary: "The prompt-injection policy in effect",
    description:
      "Every policy line — INJECTION_POLICY's (`config`) and the admins' (`admin`, from D1) — and the mode each " +
      "prompt route gets, for `model` when given. The most specific line wins (route and model, then model, " +
      "then route, then a line for everything); an admin's line wins a tie; with none, `flag`.",
    params: {
      query: z.object({ model: z.string().optional().describe("Resolve the modes for this model.") }),
    },
    responses: { "200": { description: "The policy.", json: InjectionPolicyResponse } },
    // A `model` that is not a model name.
    errors: ["INVALID_REQUEST"],
  },
  {
    method: "put",
    path: "/security/injection-policy",
    operationId: "setInjectionPolicy",
    tag: "Security",
    access: "admin",
    summary: "Set or remove an admin policy line",
    description:
      "Sets the mode (`off`, `flag`, `block`) for a scope — a route, a model, both, or (neither) every request — " +
      "or removes the admin line of that scope (`mode: null`). Kept in D1: the isolate that answers applies it " +
      "at once, every other within `cacheMs` (INJECTION_POLICY_CACHE_MS, 5 s by default). Recorded in the " +
      "audit trail.",
    body: { schema: InjectionPolicyRequest, example: { mode: "block", route: "chat" } },
    responses: { "200": { description: "The policy after the change.", json: InjectionPolicyResponse } },
    errors: [],
  },
];
