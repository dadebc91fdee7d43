import type { ServiceImpl } from "@connectrpc/connect";
import type { Filesystem } from "@nestbox/proto/filesystem";
import type { EnvdContext } from "../context.js";

// Placeholder until the filesystem service lands: every RPC answers "unimplemented".
export function createFilesystemService(_ctx: EnvdContext): Partial<ServiceImpl<typeof Filesystem>> {
  return {};
}
