"""Plain-QEMU VMs for the local profile.

A VM boots the guest kernel's ``vmlinux`` (PVH entry) on the read-only
ext4 image, with the QEMU guest agent on a virtio-serial port, a 9p share
for checkpoints, the serial console to the test's log directory, and no
network device.  A VM is a context manager: it always stops (QMP
``quit``, then SIGKILL to its process group).
"""

from __future__ import annotations

import atexit
import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol

from katacr import commands
from katacr.errors import StageError
from katacr.platforms.guest_agent import GuestAgent

log = logging.getLogger("katacr.qemu")

QGA_PORT = "org.qemu.guest_agent.0"
SHARE_TAG = "katacr"
# Every harness VM is named like a Kata sandbox, so it can be found (and
# cleaned up) from outside by its command line.
NAME_PREFIX = "sandbox-"
QUIT_GRACE_S = 10.0

_live: dict[int, "QemuVM"] = {}


@dataclass
class VmSpec:
    """What one VM boots and how big it is."""

    name: str
    kernel: Path
    image: Path
    accel: str = "tcg"
    cpu_model: str = "max"
    cpus: int = 1
    memory_mb: int = 1024
    share_dir: Path | None = None
    append: list[str] = field(default_factory=list)


def accel_args(accel: str, cpu_model: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", cpu_model]
    return ["-accel", "tcg", "-cpu", cpu_model]


class QemuVM:
    """One QEMU process and its guest agent."""

    def __init__(self, spec: VmSpec, log_dir: Path,
                 qemu: str = "qemu-system-x86_64") -> None:
        self.spec = spec
        self.log_dir = log_dir
        self.qemu = qemu
        # Named after the VM, so a leak check can tell whose it is.
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{spec.name}-run-"))
        self.console_log = log_dir / f"console-{spec.name}.log"
        self.qemu_log = log_dir / f"qemu-{spec.name}.log"
        self.guest = GuestAgent(self.run_dir / "qga.sock", spec.name,
                                log_dir / "commands.log")
        self.proc: subprocess.Popen | None = None
        self.boot_seconds: float | None = None

    def argv(self) -> list[str]:
        """The QEMU command line for this VM."""
        s = self.spec
        cmdline = ["console=ttyS0", "root=/dev/vda", "ro",
                   "rootfstype=ext4", "init=/sbin/katacr-init", "panic=-1",
                   "quiet", *s.append]
        argv = [self.qemu, "-name", NAME_PREFIX + s.name,
                *accel_args(s.accel, s.cpu_model),
                "-smp", str(s.cpus), "-m", str(s.memory_mb),
                "-nodefaults", "-no-user-config", "-display", "none",
                "-no-reboot", "-kernel", str(s.kernel),
                "-append", " ".join(cmdline),
                "-drive", f"file={s.image},if=none,id=root,format=raw,"
                          "readonly=on",
                "-device", "virtio-blk-pci,drive=root",
                "-serial", f"file:{self.console_log}",
                "-device", "virtio-serial-pci",
                "-chardev", f"socket,id=qga,path={self.guest.socket_path},"
                            "server=on,wait=off",
                "-device", f"virtserialport,chardev=qga,name={QGA_PORT}",
                "-qmp", f"unix:{self.run_dir / 'qmp.sock'},server=on,"
                        "wait=off"]
        if s.share_dir is not None:
            argv += ["-virtfs", f"local,path={s.share_dir},"
                     f"mount_tag={SHARE_TAG},security_model=none,id=share"]
        return argv

    def start(self) -> "QemuVM":
        """Start QEMU; return at once (see :meth:`wait_ready`)."""
        commands.which(self.qemu, "to boot guests (package qemu-system-x86)")
        argv = self.argv()
        log.info("boot %s (%s, cpu %s)", self.spec.name, self.spec.accel,
                 self.spec.cpu_model)
        self.proc = commands.start_daemon(argv, self.qemu_log)
        self.started_at = time.monotonic()
        _live[self.proc.pid] = self
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float) -> float:
        """Wait for the guest agent; return seconds since QEMU started."""
        try:
            self.guest.wait_ready(timeout, alive=self.alive)
        except StageError as exc:
            # The console says why a boot failed; QEMU's own log, if not.
            tail = commands.tail(self.console_log) or commands.tail(
                self.qemu_log)
            raise type(exc)(exc.stage, exc.message, argv=self.argv(),
                            returncode=self.proc.poll() if self.proc
                            else None, log_path=self.console_log,
                            tail=tail) from None
        self.boot_seconds = time.monotonic() - self.started_at
        log.info("%s up in %.1f s", self.spec.name, self.boot_seconds)
        return self.boot_seconds

    def _quit(self) -> None:
        qmp = QEMUMonitorProtocol(str(self.run_dir / "qmp.sock"))
        qmp.settimeout(3)
        try:
            qmp.connect()
            qmp.cmd("quit")
        finally:
            try:
                qmp.close()
            except Exception:  # noqa: BLE001 - QEMU is already gone
                pass

    def stop(self) -> None:
        """Stop QEMU (polite quit, then kill) and remove its sockets."""
        self.guest.close()
        if self.proc is not None and self.proc.poll() is None:
            try:
                self._quit()
                self.proc.wait(timeout=QUIT_GRACE_S)
            except Exception:  # noqa: BLE001 - fall through to the kill
                pass
        if self.proc is not None:
            commands.kill_group(self.proc, grace=0)
            _live.pop(self.proc.pid, None)
            ran = time.monotonic() - self.started_at
            log.debug("DONE qemu %s status=%s after %.1f s", self.spec.name,
                      self.proc.returncode, ran)
            with open(self.qemu_log, "a") as out:
                out.write(f"[qemu exited with status {self.proc.returncode}"
                          f" after {ran:.1f} s]\n")
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> "QemuVM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    """Last resort: no VM outlives the Python process."""
    for vm in list(_live.values()):
        vm.stop()
