// Reaching a sandbox's running QEMU through its QMP socket: to adopt it after an agent restart,
// or to stop it briefly for a snapshot or flatten of its disk.
import { rm } from "node:fs/promises";
import type { Logger } from "../../log.js";
import { RuntimeError, type RuntimeState, type SandboxSpec } from "../runtime.js";
import { envdUrl, syncGuestClock } from "./envd.js";
import { sandboxPath } from "./paths.js";
import { isProcessAlive } from "./process.js";
import { exists } from "./sandbox-dir.js";
import { livePidFromFile, Vm, vmError } from "./vm.js";

/** Whether the sandbox survived an agent restart: a paused one by its state file, a running one by QMP. */
export async function adoptVm(
  spec: SandboxSpec,
  state: RuntimeState,
  log: Logger,
): Promise<boolean> {
  if (state.paused) {
    const running = livePidFromFile(sandboxPath(spec.dir, "pid"), spec.dir);
    return running === undefined && (await exists(sandboxPath(spec.dir, "pauseState")));
  }
  if (state.pid === undefined || !isProcessAlive(state.pid, state.pidStartTime)) return false;
  let vm: Vm | undefined;
  try {
    vm = await Vm.attach(
      state.pid,
      state.pidStartTime ?? 0,
      sandboxPath(spec.dir, "qmp"),
      sandboxPath(spec.dir, "log"),
      sandboxPath(spec.dir, "serial"),
      2_000,
    );
    const status = await vm.status();
    if (status === "running") return true;
    if (status === "paused" || status === "postmigrate") {
      // The agent died between `stop` and `cont` of a pause or snapshot: the guest is intact
      // and the manager believes it runs, so let it run (a half-written pause state goes).
      await vm.qmp.execute("cont");
      await rm(sandboxPath(spec.dir, "pauseStateTmp"), { force: true });
      await rm(sandboxPath(spec.dir, "pauseState"), { force: true });
      log.warn("adopt: continued a stopped VM", { sandbox: spec.id, status });
      return (await vm.status()) === "running";
    }
    return false;
  } catch (error) {
    log.warn("adopt: QMP does not answer", { sandbox: spec.id, error: String(error) });
    return false;
  } finally {
    vm?.qmp.close();
  }
}

/** Runs `work` against the sandbox's QEMU (which it may stop), then lets the guest run again. */
export async function withStoppedVm(
  spec: SandboxSpec,
  state: RuntimeState,
  log: Logger,
  work: (vm: Vm) => Promise<void>,
): Promise<void> {
  const vm = await attachVm(spec, state);
  try {
    await work(vm);
  } catch (error) {
    throw await vm.error("internal", `sandbox ${spec.id}`, error);
  } finally {
    // `cont` also re-activates the disk after a completed outgoing migration.
    if (vm.alive()) {
      await vm.qmp.execute("cont").catch((error: unknown) => {
        log.error("could not continue the sandbox after a snapshot", {
          sandbox: spec.id,
          error: String(error),
        });
      });
      await syncGuestClock(envdUrl(spec.network.sandboxAddress), spec.envdAccessToken).catch(
        (error: unknown) => {
          // Only a few seconds of drift: worth a warning, not a failed snapshot.
          log.warn("could not set the guest clock", {
            sandbox: spec.id,
            error: String(error),
          });
        },
      );
    }
    vm.qmp.close();
  }
}

export async function attachVm(spec: SandboxSpec, state: RuntimeState): Promise<Vm> {
  if (state.pid === undefined || !isProcessAlive(state.pid, state.pidStartTime)) {
    throw new RuntimeError("failed_precondition", `sandbox ${spec.id}: QEMU is not running`);
  }
  try {
    return await Vm.attach(
      state.pid,
      state.pidStartTime ?? 0,
      sandboxPath(spec.dir, "qmp"),
      sandboxPath(spec.dir, "log"),
      sandboxPath(spec.dir, "serial"),
    );
  } catch (error) {
    throw await vmError(
      "unavailable",
      `sandbox ${spec.id}: QMP does not answer`,
      sandboxPath(spec.dir, "log"),
      sandboxPath(spec.dir, "serial"),
      error,
    );
  }
}
