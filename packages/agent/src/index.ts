// The package root of @nestbox/agent: the sandbox network, the QEMU argv builder and the guest
// image manifest, usable without the daemon. The daemon is `@nestbox/agent/main` (`main.ts`).
export * from "./network/netns.js";
export * from "./qemu/cmdline.js";
export * from "./qemu/image.js";
