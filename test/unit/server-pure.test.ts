/**
 * Pure parts of the control plane: how a host agent's failure becomes the API error a client
 * sees (lifecycle calls in src/services/sandboxes.ts, data-plane calls in
 * src/api/command-common.ts). No database. Host scoring: scheduler-scoring.test.ts.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { agentError } from "../../packages/server/src/api/command-common.js";
import { ApiError } from "../../packages/server/src/errors.js";
import { agentFailure } from "../../packages/server/src/services/sandboxes.js";

const fields = (e: ApiError) => ({ status: e.status, code: e.code, message: e.message });

describe("agentFailure (sandbox lifecycle calls)", () => {
  const cases: [Code, number, string, string][] = [
    [Code.NotFound, 404, "not_found", "sandbox sb1: gone"],
    [Code.FailedPrecondition, 409, "invalid_state", "sandbox sb1: gone"],
    [Code.InvalidArgument, 400, "invalid_request", "gone"],
    [Code.ResourceExhausted, 503, "no_hosts_available", "gone"],
    [Code.Unavailable, 503, "host_unavailable", "host of sandbox sb1 is unreachable"],
    [Code.Internal, 502, "agent_error", "pause failed: gone"],
  ];
  for (const [code, status, apiCode, message] of cases)
    it(`${Code[code]} → ${status} ${apiCode}`, () => {
      const e = agentFailure("sb1", "pause", new ConnectError("gone", code));
      assert.ok(e instanceof ApiError);
      assert.deepEqual(fields(e), { status, code: apiCode, message });
    });

  it("a non-Connect failure is a 502 agent_error", () => {
    const e = agentFailure("sb1", "pause", new Error("socket hang up"));
    assert.deepEqual(fields(e), {
      status: 502,
      code: "agent_error",
      message: "pause failed: Error: socket hang up",
    });
  });
});

describe("agentError (command and file calls)", () => {
  const cases: [Code, number, string][] = [
    [Code.NotFound, 404, "not_found"],
    [Code.AlreadyExists, 409, "conflict"],
    [Code.PermissionDenied, 403, "forbidden"],
    [Code.InvalidArgument, 400, "invalid_request"],
    [Code.FailedPrecondition, 409, "invalid_state"],
    [Code.ResourceExhausted, 413, "too_large"],
    [Code.Unavailable, 503, "host_unavailable"],
    [Code.Internal, 502, "agent_error"],
  ];
  for (const [code, status, apiCode] of cases)
    it(`${Code[code]} → ${status} ${apiCode}`, () => {
      const e = agentError(new ConnectError("boom", code), "file /x");
      assert.equal(e.status, status);
      assert.equal(e.code, apiCode);
      assert.match(e.message, /boom/);
    });

  it("names the object in a not-found message and passes an ApiError through", () => {
    assert.equal(
      agentError(new ConnectError("no such file", Code.NotFound), "file /x").message,
      "file /x not found: no such file",
    );
    const api = new ApiError(409, "invalid_state", "not running");
    assert.equal(agentError(api, "file /x"), api);
  });
});
