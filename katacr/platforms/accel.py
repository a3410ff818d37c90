"""Choose KVM or TCG by a probe boot, never by /dev/kvm's existence alone.

On hosts with broken nested virtualization /dev/kvm opens fine but a
guest hangs at "Booting from ROM"; only a boot that reaches the guest
agent in time proves KVM usable.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from katacr import commands
from katacr.config import VmConfig
from katacr.errors import ConfigError, KatacrError
from katacr.platforms.qemu import QemuVM, VmSpec

log = logging.getLogger("katacr.accel")

KVM = Path("/dev/kvm")


@dataclass
class AccelChoice:
    accel: str
    reason: str


def kvm_device_usable(dev: Path | None = None) -> str | None:
    """None if /dev/kvm can be opened read-write, else why not."""
    dev = dev or KVM
    if not dev.exists():
        return f"{dev} does not exist"
    try:
        fd = os.open(dev, os.O_RDWR)
    except OSError as exc:
        return f"{dev} cannot be opened: {exc.strerror}"
    os.close(fd)
    return None


def probe_kvm(cfg: VmConfig, kernel: Path, image: Path,
              log_dir: Path) -> str | None:
    """None if a KVM guest reaches its agent in time, else why not."""
    spec = VmSpec(name=f"katacr-kvm-probe-{os.getpid():x}", kernel=kernel,
                  image=image, accel="kvm",
                  # The model the VMs will use: one that aborts under
                  # KVM must send them to TCG.
                  cpu_model=cfg.cpu_model, cpus=1, memory_mb=512)
    with QemuVM(spec, log_dir, cfg.qemu) as vm:
        vm.start()
        try:
            vm.wait_ready(cfg.kvm_probe_timeout)
        except KatacrError:
            status = vm.proc.poll() if vm.proc else None
            if status is None:
                return (f"a KVM probe boot did not reach the guest agent "
                        f"in {cfg.kvm_probe_timeout} s")
            last = commands.tail(vm.qemu_log, lines=3).splitlines()
            why = next((ln for ln in last if "error" in ln.lower()),
                       last[0] if last else "")
            return (f"a KVM probe boot failed: QEMU exited with status "
                    f"{status}: {why.strip()}")
    return None


def choose_accel(cfg: VmConfig, kernel: Path, image: Path,
                 log_dir: Path) -> AccelChoice:
    """Pick the accelerator for this session's VMs, saying why."""
    if cfg.accel == "tcg":
        return AccelChoice("tcg", "vm.accel is tcg")
    problem = kvm_device_usable()
    if cfg.accel == "kvm":
        if problem:
            raise ConfigError(f"vm.accel: kvm asked for but {problem}")
        return AccelChoice("kvm", "vm.accel is kvm")
    if problem:
        return AccelChoice("tcg", problem)
    problem = probe_kvm(cfg, kernel, image, log_dir)
    if problem:
        return AccelChoice("tcg", problem)
    return AccelChoice("kvm", "a KVM probe boot reached the guest agent")
