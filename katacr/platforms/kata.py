"""The kata profile's sandbox: a Kata VM started by ``ctr run``.

With ``ctr run`` the sandbox id, the container id and the VM name are
one and the same (cedana finds the VM as ``qemu ... -name sandbox-<id>``
and restores into ``/run/kata-containers/shared/containers/<id>/rootfs``).
Guest commands go through ``kata-ctl exec <id> -- CMD`` where kata-ctl
takes a command (Kata >= 4.1), else through the debug console of
``kata-runtime exec <id>`` under a pseudo-terminal.

The guest is osbuilder's minimal Ubuntu (no procps): guest commands use
the shell and ``/proc`` only.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

from katacr import commands, leaks
from katacr.config import Config
from katacr.errors import StageError, StageTimeout
from katacr.platforms.console import PtyConsole
from katacr.platforms.containerd import Containerd
from katacr.platforms.guest_agent import GuestResult

log = logging.getLogger("katacr.kata")

CONTAINERS = "/run/kata-containers/shared/containers"
INSTALLER = "build_start_daemon.sh"
TARGET_IDLE = ["sleep", "2147483647"]
QEMU_NAME_PREFIX = "sandbox-"
SHIM = "containerd-shim-kata-v2"
STOP_GRACE_S = 10.0
WORKLOAD_START_S = 30.0
POLL_S = 0.5
# The kernel keeps 15 bytes of a process name (TASK_COMM_LEN - 1).
COMM_LEN = 15
# The newest process whose name is $1, from /proc: one line, so the
# debug console echoes it on one line.
NEWEST_BY_COMM = ('n=0; for d in /proc/[0-9]*; do '
                  'read -r c < "$d/comm" 2>/dev/null || continue; '
                  '[ "$c" = "$1" ] || continue; p=${d#/proc/}; '
                  '[ "$p" -gt "$n" ] && n=$p; done; '
                  '[ "$n" -gt 0 ] && echo "$n"')


def kata_ctl_runs_commands(help_text: str) -> bool:
    """True if ``kata-ctl exec --help`` shows a trailing command.

    Kata 3.x has ``kata-ctl exec <SANDBOX_ID>`` too, but it only opens
    the debug console; the command form (Kata >= 4.1) shows a repeated
    argument (``...``) in its usage line.
    """
    usage = next((ln for ln in help_text.splitlines()
                  if ln.strip().lower().startswith("usage:")), "")
    return "..." in usage


def kata_ctl_has_exec(kata_ctl: str, log_path: Path | None = None) -> bool:
    """True if this host's ``kata-ctl`` runs a command in a guest."""
    tool = shutil.which(kata_ctl)
    if not tool:
        return False
    res = commands.run([tool, "exec", "--help"], stage="preflight",
                       timeout=30, check=False, capture=True,
                       log_path=log_path)
    return res.returncode == 0 and kata_ctl_runs_commands(res.stdout)


def _value_after(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg in (flag, "-" + flag):
            return argv[i + 1]
    return None


def sandbox_processes(name: str, namespace: str) -> list[tuple[int, str]]:
    """(pid, argv) of the QEMU and the Kata shim of sandbox *name*.

    Exact argv matches only: ``sandbox-x-1`` must not catch ``sandbox-x-10``.
    """
    found = []
    qemu_name = QEMU_NAME_PREFIX + name
    for pid, argv in leaks.process_argvs():
        vm = _value_after(argv, "-name") or ""
        is_qemu = vm == qemu_name or vm.startswith(qemu_name + ",")
        is_shim = (os.path.basename(argv[0]) == SHIM
                   and _value_after(argv, "-id") == name
                   and _value_after(argv, "-namespace") == namespace)
        if (is_qemu or is_shim) and leaks.process_alive(pid):
            found.append((pid, " ".join(argv).strip()))
    return found


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
        self.commands_log = log_dir / "commands.log"
        self.timeout = cfg.vm.command_timeout
        self.image_digest = ""
        self.workload_image_digest = ""
        self.launched = False
        self.use_kata_ctl = kata_ctl_has_exec(cfg.kata.kata_ctl,
                                              self.commands_log)
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
        self.launched = True
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
                               log_path=self.commands_log)
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

    def workload_pid(self, command: str, stage: str = "start-workload",
                     timeout: float | None = None) -> int:
        """The guest PID of the newest process named after *command*."""
        timeout = WORKLOAD_START_S if timeout is None else timeout
        comm = os.path.basename(command)[:COMM_LEN]
        argv = ["sh", "-c", NEWEST_BY_COMM, "sh", comm]
        deadline = time.monotonic() + timeout
        while True:
            out = self.run(argv, stage=stage, check=False).stdout.split()
            if out and out[-1].isdigit():
                return int(out[-1])
            if time.monotonic() > deadline:
                raise StageTimeout(stage, f"{stage} timed out after "
                                   f"{timeout:g} s: no process {comm} in "
                                   f"guest {self.name}", argv=argv)
            time.sleep(POLL_S)

    def pid_alive(self, pid: int) -> bool:
        return self.run(["sh", "-c", 'kill -0 "$1"', "sh", str(pid)],
                        stage="verify", check=False).returncode == 0

    def _stop_container(self) -> None:
        """``ctr task kill``, ``task rm``, ``container rm``."""
        ctr = self.containerd
        if any(t.id == self.name for t in ctr.tasks()):
            ctr.kill(self.name)
            try:
                ctr.wait_stopped(self.name, STOP_GRACE_S)
            except StageError as exc:
                log.warning("%s", exc)
        ctr.remove(self.name)

    def _kill_leftovers(self) -> None:
        left = sandbox_processes(self.name, self.containerd.namespace)
        if left:
            log.error("sandbox %s left behind, killing: %s", self.name,
                      "; ".join(f"{pid} {cmd[:100]}" for pid, cmd in left))
            leaks.kill_all([pid for pid, _ in left])

    def close(self) -> None:
        """Stop and remove the container, then kill its shim and QEMU."""
        self.console.close()
        if self.launched:
            try:
                self._stop_container()
            except Exception as exc:  # noqa: BLE001 - teardown goes on
                log.error("removing %s: %s", self.name, exc)
        self._kill_leftovers()
