// Unit tests for the pure parts of the agent's QEMU and network helpers (no root, no QEMU).
import assert from "node:assert/strict";
import { test } from "node:test";
import { NetworkSetupError, slotAddresses } from "../../packages/agent/src/network/netns.js";
import {
  buildMicrovmArgv,
  guestKernelCmdline,
  hostTscKhz,
} from "../../packages/agent/src/qemu/cmdline.js";

const base = {
  kernel: "/img/vmlinuz",
  initrd: "/img/initrd.img",
  cmdline: "console=ttyS0",
  rootfs: { path: "/run/sbx/rootfs.qcow2", format: "qcow2" as const },
  memoryMiB: 512,
  vcpus: 2,
  accel: "tcg" as const,
};

function optionAfter(argv: string[], flag: string): string[] {
  return argv.flatMap((value, i) => (argv[i - 1] === flag ? [value] : []));
}

test("microvm argv: TCG defaults, drive, serial, QMP", () => {
  const argv = buildMicrovmArgv({
    ...base,
    tap: { ifname: "tap0" },
    qmpSocket: "/run/sbx/qmp.sock",
    serialLog: "/run/sbx/console.log",
  });
  assert.equal(argv[0], "qemu-system-x86_64");
  assert.deepEqual(optionAfter(argv, "-M"), ["microvm,x-option-roms=off,isa-serial=on"]);
  assert.deepEqual(optionAfter(argv, "-accel"), ["tcg"]);
  assert.deepEqual(optionAfter(argv, "-cpu"), ["max"]);
  assert.deepEqual(optionAfter(argv, "-initrd"), ["/img/initrd.img"]);
  assert.ok(argv.includes("-nodefaults") && argv.includes("-no-reboot"));
  assert.deepEqual(optionAfter(argv, "-drive"), [
    "id=rootfs,file=/run/sbx/rootfs.qcow2,format=qcow2,if=none,discard=unmap",
  ]);
  assert.deepEqual(optionAfter(argv, "-netdev"), [
    "tap,id=net0,ifname=tap0,script=no,downscript=no",
  ]);
  assert.deepEqual(optionAfter(argv, "-serial"), ["chardev:console"]);
  assert.deepEqual(optionAfter(argv, "-qmp"), ["unix:/run/sbx/qmp.sock,server=on,wait=off"]);
});

test("microvm argv: KVM, no ACPI, no initrd, paused restore", () => {
  const argv = buildMicrovmArgv({
    ...base,
    initrd: null,
    accel: "kvm",
    acpi: false,
    startPaused: true,
    incoming: "defer",
  });
  assert.deepEqual(optionAfter(argv, "-accel"), ["kvm"]);
  assert.deepEqual(optionAfter(argv, "-cpu"), ["host"]);
  assert.deepEqual(optionAfter(argv, "-M"), ["microvm,x-option-roms=off,isa-serial=on,acpi=off"]);
  assert.ok(!argv.includes("-initrd"));
  assert.ok(argv.includes("-S"));
  assert.deepEqual(optionAfter(argv, "-incoming"), ["defer"]);
});

test("microvm argv rejects commas in paths and bad sizes", () => {
  assert.throws(() => buildMicrovmArgv({ ...base, kernel: "/a,b" }), /comma/);
  assert.throws(() => buildMicrovmArgv({ ...base, memoryMiB: 10 }), /memoryMiB/);
  assert.throws(() => buildMicrovmArgv({ ...base, vcpus: 0 }), /vcpus/);
});

test("guest kernel command line puts the host clock first", () => {
  assert.equal(hostTscKhz("processor\t: 0\ncpu MHz\t\t: 2599.998\n"), 2599998);
  assert.throws(() => hostTscKhz("processor: 0\n"), /cpu MHz/);
  assert.equal(
    guestKernelCmdline({
      image: "root=/dev/vda rw",
      tscKhz: 2599998,
      extra: ["nestbox.dns=1.1.1.1"],
    }),
    "console=ttyS0 tsc_early_khz=2599998 tsc=reliable root=/dev/vda rw nestbox.dns=1.1.1.1",
  );
});

test("veth slots cut 10.250.0.0/16 into /30 blocks", () => {
  assert.deepEqual(slotAddresses(0), {
    host: "10.250.0.1",
    sandbox: "10.250.0.2",
    prefixLength: 30,
  });
  assert.deepEqual(slotAddresses(65), {
    host: "10.250.1.5",
    sandbox: "10.250.1.6",
    prefixLength: 30,
  });
  assert.deepEqual(slotAddresses(16383).sandbox, "10.250.255.254");
  assert.throws(() => slotAddresses(16384), NetworkSetupError);
  assert.throws(() => slotAddresses(1.5), NetworkSetupError);
});
