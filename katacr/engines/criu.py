"""The criu engine: CRIU itself, run in the guest through the guest channel.

Dump: ``criu dump`` of the container's init (the root of its PID
namespace) into a tmpfs work dir, the container's writable layer beside
the images, one tar streamed to the host through the share.  Restore:
the reverse, with ``--root`` at the target container's rootfs.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from katacr import checkpoint
from katacr.checkpoint import Checkpoint
from katacr.config import CheckpointConfig
from katacr.errors import StageError
from katacr.platforms.local import SHARE_GUEST, LocalSandbox

log = logging.getLogger("katacr.criu")

# The root mount of a container is a bind mount from the guest: declare
# every such mount external, as container engines do.
MOUNT_OPTIONS = ["--external", "mnt[]:sm"]
DUMP_OPTIONS = [*MOUNT_OPTIONS]
RESTORE_OPTIONS = [*MOUNT_OPTIONS, "--restore-detached"]
_PID_TAKEN = re.compile(r"Can't fork for (\d+): File exists|"
                        r"[Pp]id mismatch[^0-9]*(\d+)")
_ERROR_LINE = re.compile(r"\bError\b|\bWarn.*(fail|bad)", re.I)


# Messages of `criu check` (3.17) and its kernel probes, and the kernel
# option whose absence causes each.
KERNEL_HINTS = (
    ("System call kcmp is not supported", "CONFIG_CHECKPOINT_RESTORE"),
    ("PR_SET_MM_", "CONFIG_CHECKPOINT_RESTORE"),
    ("PR_GET_TID_ADDRESS", "CONFIG_CHECKPOINT_RESTORE"),
    ("Dirty tracking is OFF", "CONFIG_MEM_SOFT_DIRTY"),
    ("UFFD is not supported", "CONFIG_USERFAULTFD"),
    ("Time namespaces are not supported", "CONFIG_TIME_NS"),
    ("autofs", "CONFIG_AUTOFS_FS"),
    ("kerndat_has_memfd_hugetlb", "CONFIG_HUGETLBFS"),
    ("nftables", "CONFIG_NF_TABLES, CONFIG_NF_TABLES_INET"),
    ("TCP_REPAIR_WINDOW", "CONFIG_INET"),
    ("kerndat_tcp_repair", "CONFIG_INET and a loopback that is up"),
    ("NSID is not supported", "CONFIG_NET_NS"),
    ("kerndat_link_nsid", "CONFIG_VETH"),
    ("IFLA_NEW_IFINDEX", "CONFIG_VETH"),
    ("sock_diag", "CONFIG_UNIX_DIAG, CONFIG_INET_DIAG, CONFIG_NETLINK_DIAG, "
                  "CONFIG_PACKET_DIAG"),
    ("pagemap", "CONFIG_PROC_PAGE_MONITOR"),
    ("rseq", "CONFIG_RSEQ"),
)


def kernel_hints(log_text: str) -> list[str]:
    """The kernel options a CRIU error output points at, in order."""
    found: list[str] = []
    for needle, option in KERNEL_HINTS:
        if needle in log_text and option not in found:
            found.append(option)
    return found


def criu_errors(log_text: str, limit: int = 15) -> str:
    """The error lines of a CRIU log, for a failure message."""
    lines = [ln for ln in log_text.splitlines() if _ERROR_LINE.search(ln)]
    return "\n".join(lines[-limit:])


class CriuEngine:
    """Dump and restore with CRIU inside the guest."""

    leave_running = False
    name = "criu"

    def __init__(self, cfg: CheckpointConfig, log_dir: Path) -> None:
        self.cfg = cfg
        self.log_dir = log_dir

    def check(self, sandbox: LocalSandbox) -> str:
        """``criu check`` in the guest; on failure name the kernel options."""
        res = sandbox.run(["criu", "check"], stage="check", check=False)
        output = res.stdout + res.stderr
        if res.returncode != 0:
            hints = kernel_hints(output)
            why = ("the guest kernel lacks " + "; ".join(hints)) if hints \
                else "see its output"
            raise StageError("check", f"criu check failed: {why}",
                             argv=["criu", "check"],
                             returncode=res.returncode,
                             tail=criu_errors(output) or output[-2000:])
        return output

    def version(self, sandbox: LocalSandbox, stage: str) -> str:
        out = sandbox.run(["criu", "--version"], stage=stage).stdout
        return out.splitlines()[0].strip() if out else "unknown"

    def _fetch_log(self, sandbox: LocalSandbox, guest_path: str,
                   name: str) -> str:
        """Copy a guest log into the test's log dir (through the share: a
        verbose CRIU log can outgrow the agent's message size)."""
        res = sandbox.run(["cp", guest_path, f"{SHARE_GUEST}/{name}"],
                          stage="collect-logs", check=False)
        if res.returncode != 0:
            return ""
        return sandbox.pull(name, self.log_dir / name).read_text(
            errors="replace")

    def _run_criu(self, sandbox: LocalSandbox, argv: list[str], stage: str,
                  work: str, log_name: str, timeout: float) -> None:
        """Run CRIU; on failure quote its log's error lines."""
        host_log = f"{sandbox.name}-{log_name}"
        try:
            sandbox.run(argv, stage=stage, timeout=timeout)
        except StageError as exc:
            text = self._fetch_log(sandbox, f"{work}/{log_name}", host_log)
            message = self._pid_collision(sandbox, text) or exc.message
            raise StageError(stage, message, argv=argv,
                             returncode=exc.returncode,
                             log_path=self.log_dir / host_log,
                             tail=criu_errors(text) or exc.tail) from None
        self._fetch_log(sandbox, f"{work}/{log_name}", host_log)

    def refuse_terminal(self, sandbox: LocalSandbox, pid: int) -> None:
        """Refuse a workload tree in which a task has a terminal."""
        out = sandbox.run(["ps", "-e", "-o", "pid=,ppid=,tty=,comm="],
                          stage="dump").stdout
        rows = [ln.split(None, 3) for ln in out.splitlines() if ln.strip()]
        children: dict[int, list[list[str]]] = {}
        for row in rows:
            children.setdefault(int(row[1]), []).append(row)
        tree = [r for r in rows if int(r[0]) == pid]
        for row in tree:
            tree.extend(children.get(int(row[0]), []))
        if not tree:
            raise StageError("dump", f"workload PID {pid} is not running "
                             f"in {sandbox.name}")
        bound = [r for r in tree if r[2] != "?"]
        if bound:
            who = ", ".join(f"PID {r[0]} ({r[3]}) on {r[2]}" for r in bound)
            raise StageError("dump", f"terminal-bound workload: {who}; "
                             "start it detached (no -t, stdio to a file) "
                             "so it can be restored elsewhere")

    def _pid_collision(self, sandbox: LocalSandbox, log_text: str
                       ) -> str | None:
        """'PID N taken on target by COMM' when the log shows a collision."""
        m = _PID_TAKEN.search(log_text)
        if not m:
            return None
        pid = m.group(1) or m.group(2)
        comm = sandbox.run(["cat", f"/proc/{pid}/comm"], stage="restore",
                           check=False).stdout.strip() or "an exited task"
        return f"PID {pid} taken on target by {comm}"

    def check_writable(self, sandbox: LocalSandbox, path: str) -> None:
        """State the root's mount options; refuse a read-only work dir."""
        for target in ("/", path):
            res = sandbox.run(["findmnt", "-n", "-o", "TARGET,FSTYPE,OPTIONS",
                               "--target", target], stage="dump")
            mount, fstype, options = res.stdout.split()[:3]
            log.info("%s: %s is on %s (%s, %s)", sandbox.name, target, mount,
                     fstype, options)
            if target == path and "ro" in options.split(","):
                raise StageError("dump", f"CRIU work dir {path} is on a "
                                 f"read-only {fstype} mount ({mount}); it "
                                 "must be on a writable tmpfs")

    def dump(self, sandbox: LocalSandbox, container_id: str, pid: int,
             out_dir: Path) -> Checkpoint:
        """Dump the container's workload; return the sealed checkpoint."""
        work = f"{sandbox.state_dir(container_id)}/checkpoint"
        self.refuse_terminal(sandbox, pid)
        self.check_writable(sandbox, sandbox.state_dir(container_id))
        sandbox.run(["rm", "-rf", work], stage="dump")
        sandbox.run(["mkdir", "-p", f"{work}/images"], stage="dump")
        # What the source CPU offers, for the target to check against.
        sandbox.run(["criu", "cpuinfo", "dump", "--images-dir",
                     f"{work}/images"], stage="dump")
        options = list(DUMP_OPTIONS)
        argv = ["criu", "dump", "--tree", str(pid), "--images-dir",
                f"{work}/images", "--work-dir", work, "--log-file",
                "dump.log", "-v4", *options]
        self._run_criu(sandbox, argv, "dump", work, "dump.log",
                       self.cfg.dump_timeout)
        self._save_writable_layer(sandbox, container_id, work)
        out_dir.mkdir(parents=True, exist_ok=True)
        sandbox.run(["tar", "-cf", f"{SHARE_GUEST}/{checkpoint.ARCHIVE}",
                     "-C", work, "images", checkpoint.ROOTFS_DIFF],
                    stage="transfer", timeout=self.cfg.transfer_timeout)
        sandbox.pull(checkpoint.ARCHIVE, out_dir / checkpoint.ARCHIVE)
        release = sandbox.run(["uname", "-r"], stage="dump").stdout.strip()
        ckpt = checkpoint.seal(
            out_dir, criu_version=self.version(sandbox, "dump"),
            kernel_release=release, source=sandbox.name,
            container_id=container_id, dump_options=options,
            engine=self.name, image_digest=sandbox.image_digest,
            workload_image_digest=sandbox.workload_image_digest)
        log.info("dumped %s in %s: %s (%d bytes)", container_id,
                 sandbox.name, ckpt.archive, ckpt.manifest.size)
        return ckpt

    def _save_writable_layer(self, sandbox: LocalSandbox, container_id: str,
                             work: str) -> None:
        state = sandbox.state_dir(container_id)
        sandbox.run(["tar", "-cf", f"{work}/{checkpoint.ROOTFS_DIFF}",
                     f"--newer-mtime={state}/unpacked", "-C",
                     sandbox.rootfs(container_id), "."], stage="dump")

    def check_target(self, sandbox: LocalSandbox, ckpt: Checkpoint) -> None:
        """Refuse a target whose kernel, CRIU or guest image differs."""
        checkpoint.check_target(
            ckpt, kernel_release=sandbox.run(
                ["uname", "-r"], stage="restore").stdout.strip(),
            criu_version=self.version(sandbox, "restore"),
            image_digest=sandbox.image_digest)

    def check_cpu(self, sandbox: LocalSandbox, work: str) -> None:
        """Refuse a target CPU that lacks features the source CPU had."""
        res = sandbox.run(["criu", "cpuinfo", "check", "--images-dir",
                           f"{work}/images"], stage="restore", check=False)
        if res.returncode != 0:
            raise StageError("restore", "CPU features: the target CPU lacks "
                             "features the source CPU had (criu cpuinfo "
                             "check failed)", returncode=res.returncode,
                             tail=criu_errors(res.stdout + res.stderr)
                             or (res.stdout + res.stderr)[-2000:])

    def restore(self, sandbox: LocalSandbox, ckpt: Checkpoint,
                container_id: str) -> int:
        """Restore *ckpt* as *container_id*; return the restored init's PID."""
        checkpoint.verify(ckpt)
        self.check_target(sandbox, ckpt)
        work = f"{sandbox.state_dir(container_id)}/restore"
        root = sandbox.rootfs(container_id)
        guest_tar = sandbox.push(ckpt.archive, checkpoint.ARCHIVE)
        sandbox.run(["mkdir", "-p", work], stage="restore")
        sandbox.run(["tar", "-xf", guest_tar, "-C", work], stage="transfer",
                    timeout=self.cfg.transfer_timeout)
        sandbox.run(["tar", "-xf", f"{work}/{checkpoint.ROOTFS_DIFF}", "-C",
                     root], stage="restore")
        self.check_cpu(sandbox, work)
        argv = ["criu", "restore", "--images-dir", f"{work}/images",
                "--work-dir", work, "--log-file", "restore.log", "-v4",
                "--root", root, "--pidfile", f"{work}/restored.pid",
                *RESTORE_OPTIONS]
        self._run_criu(sandbox, argv, "restore", work, "restore.log",
                       self.cfg.restore_timeout)
        pid = int(sandbox.read_text(f"{work}/restored.pid", "restore").strip())
        log.info("restored %s in %s as PID %d", container_id, sandbox.name,
                 pid)
        return pid
