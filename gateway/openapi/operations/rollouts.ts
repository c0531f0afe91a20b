// Deployments (POST /models/{model_id}/deploy, /deployments) and A/B tests (/ab-tests).
import { z } from "zod";
import {
  AbTestListQuery,
  AbTestStartRequest,
  DeploymentCommand,
  DeploymentListQuery,
  DeployRequest,
  TEST_ID_PATTERN,
} from "../../../schema/rollouts-api.ts";
import type { OperationSpec } from "../operation.ts";
import { AbTestList, AbTestView, DeploymentList, DeploymentView } from "../shapes.ts";
import { LocationHeader, params } from "./params.ts";

const deploymentId = z.string().describe("The id POST /models/{model_id}/deploy answered with.");
const testId = z.string().regex(TEST_ID_PATTERN).describe("The `test_id` the A/B test was started with.");

export const rolloutOperations: OperationSpec[] = [
  {
    method: "post",
    path: "/models/{model_id}/deploy",
    operationId: "deployVersion",
    tag: "Deployments",
    access: "admin",
    summary: "Deploy a version with a strategy",
    description:
      "Starts rolling the version out in place of the one its name serves. `immediate` switches once the new " +
      "version is loaded; `blue_green` (also spelled `blue-green`) smoke-tests it first and keeps the old one " +
      "warm for an instant abort; `canary` moves a growing share of end users over, step by step, while the " +
      "canary judge compares both arms and rolls back on a failing critical metric; `rolling` replaces the " +
      "version agent by agent. One deployment or A/B test runs per model at a time. Follow it with " +
      "GET /deployments/{id} (the Location header).",
    params: { path: params.modelId },
    body: {
      schema: DeployRequest,
      example: { strategy: "canary", steps: [10, 50, 100], min_requests_per_arm: 200, min_step_ms: 600000 },
    },
    responses: {
      "202": { description: "Started.", json: DeploymentView, headers: LocationHeader },
    },
    errors: [
      "INVALID_MODEL_ID",
      "MODEL_NOT_FOUND",
      "VERSION_NOT_FOUND",
      "ALIAS_NOT_FOUND",
      "VERSION_ARCHIVED",
      "NOTHING_TO_DEPLOY",
      "VERSION_NOT_ACTIVE",
      "ROLLOUT_IN_PROGRESS",
    ],
  },
  {
    method: "get",
    path: "/deployments",
    operationId: "listDeployments",
    tag: "Deployments",
    access: "user",
    summary: "List deployments, newest first",
    params: { query: DeploymentListQuery },
    responses: { "200": { description: "The deployments (without their events).", json: DeploymentList } },
    // A query outside its schema (an empty or unknown status, a limit out of range).
    errors: ["INVALID_REQUEST"],
  },
  {
    method: "get",
    path: "/deployments/{id}",
    operationId: "getDeployment",
    tag: "Deployments",
    access: "user",
    summary: "A deployment with every decision it made",
    params: { path: z.object({ id: deploymentId }) },
    responses: { "200": { description: "The deployment.", json: DeploymentView } },
    errors: ["DEPLOYMENT_NOT_FOUND"],
  },
  {
    method: "post",
    path: "/deployments/{id}/{command}",
    operationId: "commandDeployment",
    tag: "Deployments",
    access: "admin",
    summary: "Promote, pause, resume or abort a deployment",
    description:
      "`promote` ends it in the candidate's favour at once (a canary serves everyone, a blue-green ends its " +
      "rollback window), `pause` and `resume` hold and release it, `abort` stops it and restores the version " +
      "that served before. A command " +
      "another strategy or state does not take is 409 COMMAND_NOT_ALLOWED; an unknown command is 404 NOT_FOUND.",
    params: { path: z.object({ id: deploymentId, command: DeploymentCommand }) },
    responses: { "200": { description: "The deployment after the command.", json: DeploymentView } },
    errors: [
      "NOT_FOUND",
      "DEPLOYMENT_NOT_FOUND",
      "DEPLOYMENT_NOT_RUNNING",
      "DEPLOYMENT_NOT_PAUSED",
      "COMMAND_NOT_ALLOWED",
    ],
  },
  {
    method: "post",
    path: "/ab-tests/start",
    operationId: "startAbTest",
    tag: "A/B tests",
    access: "admin",
    summary: "Start an A/B test between two versions",
    description:
      "Requests for model_a's name are split by end user (X-Orchard-User, the OpenAI `user` field, else the " +
      "token's `sub`): the share `traffic_split` gets model_b, sticky per user. model_a must be the version " +
      "serving its name now. The report uses always-valid statistics, so it may be read at any time; the test " +
      "ends after `duration_hours` or when stopped.",
    body: {
      schema: AbTestStartRequest,
      example: {
        test_id: "tinyllama-q4-vs-q8",
        model_a: "tinyllama:1.1.0",
        model_b: "tinyllama:1.2.0",
        traffic_split: 0.5,
        duration_hours: 72,
        success_metrics: ["accuracy", "response_time"],
      },
    },
    responses: { "201": { description: "Started.", json: AbTestView, headers: LocationHeader } },
    errors: [
      "INVALID_MODEL_ID",
      "MODEL_NOT_FOUND",
      "VERSION_NOT_FOUND",
      "VERSION_ARCHIVED",
      "VERSION_NOT_ACTIVE",
      "AB_TEST_EXISTS",
      "ROLLOUT_IN_PROGRESS",
    ],
  },
  {
    method: "get",
    path: "/ab-tests",
    operationId: "listAbTests",
    tag: "A/B tests",
    access: "user",
    summary: "List A/B tests, newest first",
    params: { query: AbTestListQuery },
    responses: { "200": { description: "The tests (without live figures or events).", json: AbTestList } },
    // A query outside its schema (an empty or unknown status, a limit out of range).
    errors: ["INVALID_REQUEST"],
  },
  {
    method: "get",
    path: "/ab-tests/{id}",
    operationId: "getAbTest",
    tag: "A/B tests",
    access: "user",
    summary: "An A/B test with its report",
    description: "While it runs, `results` is the live report over every pool; once it ended, the final one.",
    params: { path: z.object({ id: testId }) },
    responses: { "200": { description: "The test.", json: AbTestView } },
    errors: ["AB_TEST_NOT_FOUND"],
  },
  {
    method: "post",
    path: "/ab-tests/{id}/stop",
    operationId: "stopAbTest",
    tag: "A/B tests",
    access: "admin",
    summary: "Stop an A/B test",
    description: "Every end user goes back to model_a; the final report is kept.",
    params: { path: z.object({ id: testId }) },
    responses: { "200": { description: "The test, stopped, with its final report.", json: AbTestView } },
    errors: ["AB_TEST_NOT_FOUND", "AB_TEST_NOT_RUNNING"],
  },
];
