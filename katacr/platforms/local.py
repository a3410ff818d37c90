"""The local profile's sandbox: a QEMU VM that runs containers itself.

It plays kata-agent's part with the guest helpers in the image: a
container's rootfs is unpacked under
``/run/kata-containers/shared/containers/<id>/rootfs`` (where Kata shares
it) and its workload started in its own PID and mount namespaces.  Files
move between host and guest through the VM's 9p share.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from katacr.platforms.guest_agent import GuestAgent, GuestResult
from katacr.platforms.qemu import QemuVM

log = logging.getLogger("katacr.sandbox")

CONTAINERS = "/run/kata-containers/shared/containers"
STATE = "/run/katacr"
SHARE_GUEST = "/mnt/katacr"
CONTAINER_RUN = "/usr/libexec/katacr/container-run"
INSTALLER = "/bin/build_start_daemon.sh"


class LocalSandbox:
    """A booted VM plus the container operations the harness needs."""

    def __init__(self, vm: QemuVM, layer: Path, command_timeout: float,
                 boot_timeout: float, image_digest: str = "",
                 workload_image_digest: str = "") -> None:
        self.vm = vm
        self.image_digest = image_digest
        self.workload_image_digest = workload_image_digest
        self.layer = layer
        self.name = vm.spec.name
        self.timeout = command_timeout
        self.boot_timeout = boot_timeout
        assert vm.spec.share_dir is not None
        self.share = vm.spec.share_dir
        self._ready = False

    def wait_ready(self) -> float:
        """Wait until the guest agent answers (once); return boot seconds."""
        if not self._ready:
            self.vm.wait_ready(self.boot_timeout)
            self._ready = True
        assert self.vm.boot_seconds is not None
        return self.vm.boot_seconds

    @property
    def guest(self) -> GuestAgent:
        return self.vm.guest

    def run(self, argv: list[str], stage: str, timeout: float | None = None,
            check: bool = True, capture: bool = True) -> GuestResult:
        """Run a command in the guest (argv list) under a timeout."""
        self.wait_ready()
        return self.guest.run(argv, stage=stage, capture=capture,
                              timeout=timeout or self.timeout, check=check)

    def install(self) -> str:
        """Run the in-guest installer; return what it printed."""
        return self.run([INSTALLER], stage="install").stdout

    def rootfs(self, container_id: str) -> str:
        return f"{CONTAINERS}/{container_id}/rootfs"

    def state_dir(self, container_id: str) -> str:
        return f"{STATE}/{container_id}"

    def push(self, host_file: Path, name: str | None = None) -> str:
        """Make a host file visible in the guest; return its guest path."""
        name = name or host_file.name
        dest = self.share / name
        shutil.copyfile(host_file, dest)
        return f"{SHARE_GUEST}/{name}"

    def pull(self, name: str, host_dest: Path) -> Path:
        """Move a file the guest wrote into the share to *host_dest*."""
        shutil.move(self.share / name, host_dest)
        return host_dest

    def create_container(self, container_id: str, layer: Path) -> None:
        """Unpack the workload image's layer as the container's rootfs."""
        guest_layer = self.push(layer, "layer.tar")
        root = self.rootfs(container_id)
        state = self.state_dir(container_id)
        self.run(["mkdir", "-p", root, state], stage="create-container")
        self.run(["tar", "-xf", guest_layer, "-C", root],
                 stage="create-container")
        # Files newer than this mark are the container's writable layer.
        self.run(["touch", f"{state}/unpacked"], stage="create-container")

    def start_container(self, container_id: str, argv: list[str]) -> int:
        """Start the container's workload; return its init's guest PID."""
        res = self.run([CONTAINER_RUN, container_id, *argv],
                       stage="start-workload")
        return int(res.stdout.split()[-1])

    def start_workload(self, container_id: str, argv: list[str]) -> int:
        """Create the container from the workload image and start *argv*."""
        self.create_container(container_id, self.layer)
        return self.start_container(container_id, argv)

    def prepare_target(self, container_id: str) -> None:
        """Make the container a checkpoint can be restored into."""
        self.create_container(container_id, self.layer)

    def read_text(self, path: str, stage: str) -> str:
        """A small guest text file's content."""
        self.wait_ready()
        return self.guest.read_text(path, stage=stage)

    def read_container_file(self, container_id: str, path: str,
                            stage: str) -> str:
        return self.read_text(f"{self.rootfs(container_id)}/{path}", stage)

    def pid_alive(self, pid: int) -> bool:
        return self.run(["kill", "-0", str(pid)], stage="verify",
                        check=False).returncode == 0
