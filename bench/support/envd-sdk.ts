import { Sandbox } from "e2b";

/**
 * The E2B SDK's Sandbox bound straight to an envd on this machine, with no control plane in
 * front: what the SDK builds itself after `Sandbox.create` answers. The constructor is not the
 * SDK's public API (hence the cast); its options are the fields a create response carries.
 */
export function sandboxOnEnvd(envdUrl: string): Sandbox {
  const Ctor = Sandbox as unknown as new (o: {
    sandboxId: string;
    envdVersion: string;
    sandboxUrl: string;
    apiKey: string;
  }) => Sandbox;
  return new Ctor({
    sandboxId: "nbxbench000000000000",
    envdVersion: "0.6.4",
    sandboxUrl: envdUrl,
    apiKey: `e2b_${"0".repeat(40)}`,
  });
}
