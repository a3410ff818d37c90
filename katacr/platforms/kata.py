"""The kata profile's sandbox: a Kata VM started by ``ctr run``.

With ``ctr run`` the sandbox id, the container id and the VM name are
one and the same (cedana finds the VM as ``qemu ... -name sandbox-<id>``
and restores into ``/run/kata-containers/shared/containers/<id>/rootfs``).
Guest commands go through ``kata-ctl exec <id> -- CMD`` where that
exists (Kata >= 4.1), else through ``kata-runtime exec <id>``'s debug
console under a pseudo-terminal.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Sequence

from katacr import commands, leaks
from katacr.config import Config
from katacr.errors import StageError
from katacr.platforms.console import PtyConsole
from katacr.platforms.containerd import Containerd
from katacr.platforms.guest_agent import GuestResult

log = logging.getLogger("katacr.kata")

CONTAINERS = "/run/kata-containers/shared/containers"
INSTALLER = "build_start_daemon.sh"
TARGET_IDLE = ["sleep", "2147483647"]


def kata_ctl_has_exec(kata_ctl: str) -> bool:
    """True if ``kata-ctl`` has the ``exec`` subcommand (Kata >= 4.1)."""
    tool = shutil.which(kata_ctl)
    if not tool:
        return False
    res = commands.run([tool, "exec", "--help"], stage="preflight",
                       timeout=30, check=False, capture=True)
    return res.returncode == 0


class KataSandbox:
    """One Kata sandbox (VM + its one container), driven from the host."""

    def __init__(self, name: str, cfg: Config, containerd: Containerd,
                 image: str, runtime_config: Path | None,
                 log_dir: Path) -> None:
        self.name = name
        self.cfg = cfg
        self.containerd = containerd
        self.image = image
        self.runtime_config = runtime_config
        self.log_dir = log_dir
        self.timeout = cfg.vm.command_timeout
        self.image_digest = ""
        self.workload_image_digest = ""
        self.use_kata_ctl = kata_ctl_has_exec(cfg.kata.kata_ctl)
        self.console = PtyConsole([cfg.kata.kata_runtime, "exec", name],
                                  name, log_dir / f"console-{name}.log",
                                  cfg.kata.prompt_timeout)

    def wait_ready(self) -> float:
        """The VM is up once ``ctr run`` returned; nothing to wait for."""
        return 0.0

    def _launch(self, container_id: str, argv: list[str]) -> None:
        if container_id != self.name:
            raise StageError("start-workload", f"container id "
                             f"{container_id} must equal the sandbox name "
                             f"{self.name} (cedana restores by VM name)")
        self.containerd.run_detached(
            self.image, container_id, argv, runtime=self.cfg.kata.runtime,
            runtime_config=str(self.runtime_config)
            if self.runtime_config else None)

    def start_workload(self, container_id: str, argv: list[str]) -> int:
        """``ctr run --runtime io.containerd.kata.v2 -d IMAGE ID ARGV``."""
        self._launch(container_id, argv)
        return self.workload_pid(argv[-1])

    def prepare_target(self, container_id: str) -> None:
        """Start the target sandbox with an idle workload to restore into."""
        self._launch(container_id, TARGET_IDLE)

    def run(self, argv: Sequence[str], stage: str,
            timeout: float | None = None, check: bool = True,
            capture: bool = True) -> GuestResult:
        """Run a command in the guest."""
        timeout = timeout or self.timeout
        if self.use_kata_ctl:
            res = commands.run([self.cfg.kata.kata_ctl, "exec", self.name,
                                "--", *argv], stage=stage, timeout=timeout,
                               check=check, capture=True,
                               log_path=self.log_dir / "commands.log")
            return GuestResult(list(argv), res.returncode, res.stdout, "",
                               res.duration)
        return self.console.run(argv, stage=stage, timeout=timeout,
                                check=check)

    def install(self) -> str:
        """Run the in-guest installer, as the manual flow does."""
        return self.run([INSTALLER], stage="install").stdout

    def rootfs(self, container_id: str) -> str:
        return f"{CONTAINERS}/{container_id}/rootfs"

    def read_text(self, path: str, stage: str) -> str:
        return self.run(["cat", path], stage=stage).stdout

    def read_container_file(self, container_id: str, path: str,
                            stage: str) -> str:
        return self.read_text(f"{self.rootfs(container_id)}/{path}", stage)

    def workload_pid(self, comm: str, stage: str = "start-workload") -> int:
        """The guest PID of the newest process running *comm*."""
        out = self.run(["pgrep", "-n", "-f", comm], stage=stage).stdout
        return int(out.split()[0])

    def pid_alive(self, pid: int) -> bool:
        return self.run(["kill", "-0", str(pid)], stage="verify",
                        check=False).returncode == 0

    def close(self) -> None:
        """Remove the container; kill any shim or QEMU left of this VM."""
        self.console.close()
        try:
            self.containerd.remove(self.name)
        except Exception as exc:  # noqa: BLE001 - keep cleaning up
            log.error("removing %s: %s", self.name, exc)
        left = leaks.processes_matching(f"sandbox-{self.name}")
        if left:
            log.error("%s left behind, killing: %s", self.name, left)
            leaks.kill_all([pid for pid, _ in left])
