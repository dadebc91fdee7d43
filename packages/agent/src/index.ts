// Public surface of @nestbox/agent. The host agent daemon itself arrives with its runtimes;
// these are the pieces the guest-image boot test and the runtimes share.
export * from "./network/netns.js";
export * from "./qemu/cmdline.js";
export * from "./qemu/image.js";
