// Access control's operations: revoking tokens before they expire (/tokens) and the audit trail of
// admin actions (/audit). docs/authentication.md says how revocation reaches every isolate.
import { z } from "zod";
import {
  AuditList,
  AuditQuery,
  TokenRevocationLifted,
  TokenRevocationList,
  TokenRevocationQuery,
  TokenRevokeRequest,
  TokenRevokeResponse,
} from "../../../schema/api.ts";
import type { OperationSpec } from "../operation.ts";

export const accessOperations: OperationSpec[] = [
  {
    method: "post",
    path: "/tokens/revoke",
    operationId: "revokeToken",
    tag: "Authentication",
    access: "admin",
    summary: "Revoke a token, or every token of a subject",
    description:
      "`jti` revokes one token; `sub` every token of that subject, whatever its jti or role. Either is refused " +
      "with 401 TOKEN_REVOKED on every route, by every isolate of the gateway within `effectiveWithinMs` " +
      "(TOKEN_REVOCATION_REFRESH_MS, 5 s by default; at once by the isolate that answered). `until` lets it " +
      "lapse by itself (e.g. when the revoked token would have expired anyway). Revoking the same jti or " +
      "sub again replaces the revocation (200). Recorded in the audit trail.",
    body: {
      schema: TokenRevokeRequest,
      example: { jti: "4f9c2a1e-7b3d-4c55-9a0e-2d6f1b8c3e77", reason: "pasted into a public issue" },
    },
    responses: {
      "201": { description: "Revoked.", json: TokenRevokeResponse },
      "200": {
        description: "Revoked again: the earlier revocation of the same jti or sub is replaced.",
        json: TokenRevokeResponse,
      },
    },
    errors: ["TOO_MANY_REVOCATIONS"],
  },
  {
    method: "get",
    path: "/tokens/revoked",
    operationId: "listRevokedTokens",
    tag: "Authentication",
    access: "admin",
    summary: "Revocations in force, newest first",
    params: { query: TokenRevocationQuery },
    responses: { "200": { description: "A page of revocations.", json: TokenRevocationList } },
    errors: ["INVALID_REQUEST"],
  },
  {
    method: "delete",
    path: "/tokens/revoked/{id}",
    operationId: "liftTokenRevocation",
    tag: "Authentication",
    access: "admin",
    summary: "Lift a revocation",
    description:
      "The token (or subject) is accepted again within the same interval. Recorded in the audit trail.",
    params: {
      path: z.object({
        id: z
          .string()
          .regex(/^[1-9][0-9]*$/)
          .describe("The revocation's id."),
      }),
    },
    responses: { "200": { description: "Lifted; the revocation as it was.", json: TokenRevocationLifted } },
    errors: ["INVALID_REQUEST", "REVOCATION_NOT_FOUND"],
  },
  {
    method: "get",
    path: "/audit",
    operationId: "listAuditEvents",
    tag: "Authentication",
    access: "admin",
    summary: "The audit trail of admin actions, newest first",
    description:
      "Every admin write that succeeded: who (the token's sub and role), what (`action`, `target`), when, the " +
      "request id and a small detail (the route, its parameters and body). Filter by `target` (`model:<id>`, " +
      "`agent:<id>`, `deployment:<id>`, `token:<jti>`, `subject:<sub>`, ...), `actor` or `action`; page " +
      "with `before` (the `nextBefore` of the previous page). The trail is append-only.",
    params: { query: AuditQuery },
    responses: { "200": { description: "A page of the trail.", json: AuditList } },
    errors: ["INVALID_REQUEST"],
  },
];
