"""A containerd daemon driven through ``ctr``.

Either the harness starts a private daemon, with its root, state dir,
socket and config all under one work directory and the CRI plugin off,
or it attaches to a running one (a Kata host).  Every ``ctr`` call runs
through :func:`katacr.commands.run` under a timeout and is logged to
``ctr.log`` in the given log directory.  :meth:`Containerd.close` leaves
nothing the object created: containers, tasks, shims, mounts, the daemon.

Known shortcoming: containerd 1.6's shims put their sockets in
``/run/containerd/s/`` whatever the daemon's state dir (the names hash
the daemon address, so they never clash with a system daemon's), and
create that directory if it is missing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from katacr import commands
from katacr.commands import Result
from katacr.errors import KatacrError, StageError

log = logging.getLogger("katacr.containerd")

RUNC = "io.containerd.runc.v2"
NAMESPACE = "katacr"
CTR_TIMEOUT = 60.0
START_TIMEOUT = 30.0
STOP_GRACE_S = 10.0
POLL_S = 0.2
# containerd 1.6 hardcodes this; its state dir setting does not move it.
SHIM_SOCKET_DIR = Path("/run/containerd/s")
# sun_path holds 108 bytes, the terminating NUL among them.
MAX_SOCKET_PATH = 107
TTRPC_SUFFIX = ".ttrpc"
# The private daemon: no CRI (it wants CNI and a sandbox image), and no
# plugin writing outside the work dir (the opt plugin defaults to /opt).
CONFIG = """\
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{address}"

[debug]
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"""


@dataclass
class Task:
    """One line of ``ctr task ls``."""

    id: str
    pid: int
    status: str


class Containerd:
    """A containerd daemon: private (started here) or attached to."""

    def __init__(self, work_dir: Path, log_dir: Path,
                 namespace: str = NAMESPACE, *,
                 start_timeout: float = START_TIMEOUT,
                 timeout: float = CTR_TIMEOUT) -> None:
        """Describe a private daemon under *work_dir*; start() runs it."""
        self.work_dir = Path(work_dir).resolve()
        self.log_dir = Path(log_dir)
        self.namespace = namespace
        self.start_timeout = start_timeout
        self.timeout = timeout
        self.private = True
        self.address = str(self.work_dir / "containerd.sock")
        self.root = self.work_dir / "root"
        self.state = self.work_dir / "state"
        self.runc_root: Path | None = self.work_dir / "runc"
        self.fifo_dir = self.work_dir / "fifo"
        self.ctr_log = self.log_dir / "ctr.log"
        self.daemon_log = self.log_dir / "containerd.log"
        self.proc: subprocess.Popen | None = None
        self.created: list[str] = []
        self._exec_serial = 0

    @classmethod
    def attach(cls, address: str, namespace: str, log_dir: Path,
               timeout: float = CTR_TIMEOUT,
               runc_root: Path | None = None) -> "Containerd":
        """Use a running daemon: start and stop nothing, remove our own.

        runc containers keep runc's default root unless *runc_root*.
        """
        work_dir = Path(tempfile.mkdtemp(prefix="katacr-ctr-"))
        self = cls(work_dir, log_dir, namespace, timeout=timeout)
        self.private = False
        self.address = address
        self.runc_root = runc_root
        self.wait_ready(self.start_timeout)
        return self

    # -- the daemon ------------------------------------------------------

    def start(self) -> "Containerd":
        """Start the private daemon and wait until ``ctr version`` answers."""
        if not self.private or self.proc is not None:
            return self
        containerd = commands.which("containerd", "to run containers "
                                    "(package containerd)")
        commands.which("ctr", "to drive containerd (package containerd)")
        # containerd also listens on the address plus ".ttrpc".
        if len(self.address + TTRPC_SUFFIX) > MAX_SOCKET_PATH:
            raise KatacrError(
                f"containerd work dir {self.work_dir} is too deep: its "
                f"socket {self.address}{TTRPC_SUFFIX} would exceed "
                f"{MAX_SOCKET_PATH} bytes; use a shorter work dir")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for d in (self.root, self.state, self.runc_root, self.fifo_dir):
            if d is not None:
                d.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "config.toml"
        config.write_text(CONFIG.format(root=self.root, state=self.state,
                                        address=self.address))
        argv = [containerd, "--config", str(config)]
        log.info("containerd: starting a private daemon at %s", self.address)
        self.proc = commands.start_daemon(argv, self.daemon_log)
        self.wait_ready(self.start_timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Poll ``ctr version`` until the daemon answers or *timeout* ends."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise StageError(
                    "containerd-start", "containerd exited with status "
                    f"{self.proc.returncode} before answering",
                    argv=self.proc.args, log_path=self.daemon_log,
                    tail=commands.tail(self.daemon_log))
            res = self.ctr(["version"], stage="containerd-start",
                           timeout=10, check=False)
            if res.returncode == 0:
                log.info("containerd: %s answers", self.address)
                return
            if time.monotonic() > deadline:
                raise StageError(
                    "containerd-start", f"containerd at {self.address} did "
                    f"not answer within {timeout:g} s", argv=res.argv,
                    log_path=self.daemon_log,
                    tail=commands.tail(self.daemon_log))
            time.sleep(POLL_S)

    def _stop_daemon(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            log.info("containerd: stopping pid %d", self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("containerd %d ignored SIGTERM for %g s; "
                            "killing it", self.proc.pid, STOP_GRACE_S)
                self.proc.kill()
                self.proc.wait(timeout=STOP_GRACE_S)
        with open(self.daemon_log, "a") as out:
            out.write(f"[containerd exited with status "
                      f"{self.proc.returncode}]\n")
        self.proc = None

    # -- ctr ---------------------------------------------------------------

    def ctr(self, args: Sequence[str | os.PathLike], *, stage: str,
            timeout: float | None = None, check: bool = True,
            capture: bool = True) -> Result:
        """Run ``ctr --address A --namespace N args``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return commands.run(
            ["ctr", "--address", self.address, "--namespace",
             self.namespace, *args], stage=stage,
            timeout=self.timeout if timeout is None else timeout,
            log_path=self.ctr_log, check=check, capture=capture)

    def import_image(self, archive: Path) -> str:
        """Import an OCI/Docker archive; return the image name it carried."""
        res = self.ctr(["image", "import", archive], stage="image-import",
                       timeout=max(self.timeout, 300))
        # ctr 1.6 prints "unpacking NAME (sha256:...)...done" per image.
        names = [line.split()[1] for line in res.stdout.splitlines()
                 if line.startswith("unpacking ") and len(line.split()) > 2]
        if not names:
            raise StageError("image-import", f"{archive} named no image "
                             "(no io.containerd.image.name annotation?)",
                             argv=res.argv, log_path=self.ctr_log,
                             tail=commands.tail(self.ctr_log))
        log.info("containerd: imported %s", ", ".join(names))
        return names[0]

    def run_detached(self, image: str, container_id: str,
                     argv: Sequence[str], runtime: str = RUNC,
                     runtime_config: str | None = None,
                     timeout: float | None = None) -> None:
        """``ctr run -d``: create *container_id* from *image*, start argv."""
        if container_id in self.created:
            # A reused id would make teardown remove the wrong container.
            raise KatacrError(f"container id {container_id} already used "
                              "here: container ids must be unique per use")
        args = ["run", "--runtime", runtime, "-d", "--fifo-dir",
                self.fifo_dir]
        if runtime_config:
            args += ["--runtime-config-path", runtime_config]
        if runtime == RUNC and self.runc_root is not None:
            # runc's state would otherwise go to /run/containerd/runc.
            args += ["--runc-root", self.runc_root]
        if runtime == RUNC:
            # The task's own stdio, kept for diagnostics; the shim writes it.
            stdio = self.log_dir / f"{container_id}.stdio.log"
            args += ["--log-uri", f"file://{stdio.resolve()}"]
        else:
            # No file:// log URI assumed of other shims; the cedana wrapper
            # sends the workload's output to container_io.txt anyway.
            args += ["--null-io"]
        # Recorded before the run: a half-made container is still ours.
        self.created.append(container_id)
        self.ctr([*args, image, container_id, *argv], stage="container-run",
                 timeout=timeout)
        log.info("containerd: %s runs %s (%s)", container_id,
                 " ".join(argv), runtime)

    def exec(self, container_id: str, argv: Sequence[str],
             exec_id: str | None = None, *, check: bool = True,
             timeout: float | None = None) -> Result:
        """``ctr task exec``: run argv in the container; capture stdout."""
        if exec_id is None:
            self._exec_serial += 1
            exec_id = f"katacr-exec-{os.getpid()}-{self._exec_serial}"
        return self.ctr(["task", "exec", "--exec-id", exec_id,
                         "--fifo-dir", self.fifo_dir, container_id, *argv],
                        stage="container-exec", timeout=timeout,
                        check=check)

    def kill(self, container_id: str, signal: str = "SIGKILL") -> None:
        """Send *signal* to the container's task (all its processes)."""
        self.ctr(["task", "kill", "--all", "--signal", signal,
                  container_id], stage="container-kill")

    def remove(self, container_id: str) -> None:
        """Remove the container's task (forced) and the container."""
        if any(t.id == container_id for t in self.tasks()):
            self.ctr(["task", "rm", "-f", container_id],
                     stage="container-remove")
        if container_id in self.containers():
            self.ctr(["container", "rm", container_id],
                     stage="container-remove")
        if container_id in self.created:
            self.created.remove(container_id)

    def tasks(self) -> list[Task]:
        """The tasks of our namespace."""
        res = self.ctr(["task", "ls"], stage="container-list")
        tasks = []
        for line in res.stdout.splitlines()[1:]:
            words = line.split()
            if len(words) >= 3:
                tasks.append(Task(words[0], int(words[1]), words[2]))
        return tasks

    def containers(self) -> list[str]:
        """The container ids of our namespace."""
        res = self.ctr(["container", "ls", "-q"], stage="container-list")
        return res.stdout.split()

    def wait_stopped(self, container_id: str, timeout: float) -> None:
        """Poll until the container's task is stopped or gone."""
        deadline = time.monotonic() + timeout
        while True:
            states = [t.status for t in self.tasks() if t.id == container_id]
            if not states or states[0] == "STOPPED":
                return
            if time.monotonic() > deadline:
                raise StageError("container-stop", f"task {container_id} "
                                 f"still {states[0]} after {timeout:g} s",
                                 log_path=self.ctr_log)
            time.sleep(POLL_S)

    # -- teardown ------------------------------------------------------------

    def shim_pids(self) -> list[int]:
        """PIDs of containerd shims serving our daemon and namespace."""
        return [pid for pid, _ in self._shims()]

    def _shims(self) -> list[tuple[int, str]]:
        shims = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            args = [a.decode(errors="replace") for a in argv]
            if not args or "containerd-shim" not in Path(args[0]).name:
                continue
            if not (_flag(args, "-address") == self.address
                    and _flag(args, "-namespace") == self.namespace):
                continue
            cid = _flag(args, "-id") or ""
            # On a shared daemon, only shims of our own containers.
            if self.private or cid in self.created:
                shims.append((int(proc.name), cid))
        return shims

    def mounts(self) -> list[str]:
        """Mount points below our work dir, deepest first."""
        points = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = _unescape(line.split()[4])
                if point.startswith(str(self.work_dir) + "/"):
                    points.append(point)
        return sorted(points, key=len, reverse=True)

    def _remove_containers(self) -> None:
        if self.private and (self.proc is None
                             or self.proc.poll() is not None):
            # Nobody answers ctr: the shim and runc sweeps below clean up.
            return
        for cid in list(self.created):
            self.ctr(["task", "kill", "--all", "--signal", "SIGKILL", cid],
                     stage="teardown", check=False)
            try:
                self.wait_stopped(cid, STOP_GRACE_S)
            except StageError as exc:
                log.warning("%s", exc)
            self.ctr(["task", "rm", "-f", cid], stage="teardown",
                     check=False)
            self.ctr(["container", "rm", cid], stage="teardown",
                     check=False)
            if cid not in self.containers():
                self.created.remove(cid)

    def shim_socket(self, container_id: str) -> Path:
        """Where containerd 1.6 puts the shim socket of *container_id*."""
        key = os.path.join(self.address, self.namespace, container_id)
        return SHIM_SOCKET_DIR / hashlib.sha256(key.encode()).hexdigest()

    def _kill_shims(self) -> None:
        for pid, cid in self._shims():
            log.warning("containerd: shim %d of %s outlived its task; "
                        "killing it", pid, cid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            # A killed shim leaves its socket; the name hashes our own
            # address, so it can be no one else's.
            self.shim_socket(cid).unlink(missing_ok=True)

    def _delete_runc_leftovers(self) -> None:
        # A killed shim leaves its container running, reparented to init.
        if self.runc_root is None:
            return
        ns_dir = self.runc_root / self.namespace
        if not ns_dir.is_dir():
            return
        for state in ns_dir.iterdir():
            commands.run(["runc", "--root", ns_dir, "delete", "--force",
                          state.name], stage="teardown", timeout=30,
                         log_path=self.ctr_log, check=False)

    def _unmount_all(self) -> None:
        for point in self.mounts():
            res = commands.run(["umount", point], stage="teardown",
                               timeout=30, log_path=self.ctr_log,
                               check=False)
            if res.returncode != 0:
                commands.run(["umount", "-l", point], stage="teardown",
                             timeout=30, log_path=self.ctr_log, check=False)

    def _remove_namespace_cgroups(self) -> None:
        # ctr puts each task in cgroup /<namespace>/<id>; runc removes the
        # leaf only.  rmdir fails on a cgroup still in use, so a parent
        # another session's task sits in stays.
        cgroups = Path("/sys/fs/cgroup")
        for parent in [cgroups / self.namespace,
                       *cgroups.glob(f"*/{self.namespace}")]:
            try:
                parent.rmdir()
            except OSError:
                pass

    def close(self) -> None:
        """Remove what we created, stop a private daemon, leave nothing.

        Safe after a failure and safe to call twice; raises StageError
        only when something is still left behind at the end.
        """
        steps = [self._remove_containers, self._stop_daemon,
                 self._kill_shims, self._delete_runc_leftovers,
                 self._unmount_all, self._remove_namespace_cgroups]
        if not self.private:
            steps = [self._remove_containers, self._kill_shims]
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - teardown goes on
                log.warning("containerd teardown, %s: %s",
                            step.__name__.strip("_"), exc)
        left = self._leftovers()
        if not left:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            return
        raise StageError("teardown", "containerd left behind: "
                         + "; ".join(left), log_path=self.ctr_log,
                         tail=commands.tail(self.ctr_log))

    def _leftovers(self) -> list[str]:
        left = []
        if self.created and not self.private:
            left.append("containers " + ", ".join(self.created))
        if self.proc is not None:
            left.append(f"daemon pid {self.proc.pid}")
        shims = self.shim_pids()
        if shims:
            left.append("shim pids " + ", ".join(map(str, shims)))
        if self.private:
            mounts = self.mounts()
            if mounts:
                left.append("mounts " + ", ".join(mounts))
        return left

    def __enter__(self) -> "Containerd":
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.close()
        except StageError as err:
            # Do not hide the failure that brought us here.
            if exc_type is None:
                raise
            log.error("%s", err)


def _flag(args: list[str], name: str) -> str | None:
    """The value after *name* in a shim command line, if any."""
    for i, arg in enumerate(args[:-1]):
        if arg in (name, "-" + name):
            return args[i + 1]
    return None


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space)."""
    return (field.replace("\\040", " ").replace("\\011", "\t")
            .replace("\\012", "\n").replace("\\134", "\\"))
