"""The cedana engine: ``cedana dump kata`` / ``cedana restore kata``.

cedana's host side drops write errors silently, so its exit status is
never taken alone: the dump must leave a valid ``DIR/dmp.tar``, and a
restore counts only once the workload is seen alive and advancing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from katacr import checkpoint, commands
from katacr.checkpoint import Checkpoint
from katacr.config import Config
from katacr.errors import CheckpointCorrupt
from katacr.platforms.kata import KataSandbox

log = logging.getLogger("katacr.cedana")

# build_start_daemon.sh builds CRIU in /tmp/criu and puts it first on
# the daemon's PATH only; a prebuilt CRIU is on the guest's PATH.
GUEST_CRIU_VERSION = "PATH=/tmp/criu/criu:$PATH criu --version"


class CedanaEngine:
    """Dump and restore a Kata sandbox's workload with the cedana CLI."""

    leave_running = True
    name = "cedana"

    def __init__(self, cfg: Config, log_dir: Path) -> None:
        self.cfg = cfg
        self.cedana = cfg.kata.cedana or "cedana"
        self.log_dir = log_dir
        self.log_path = log_dir / "cedana.log"

    def version(self) -> str:
        """What ``cedana --version`` says; recorded in every manifest."""
        res = commands.run([self.cedana, "--version"], stage="dump",
                           timeout=30, check=False, capture=True,
                           log_path=self.log_path)
        lines = res.stdout.strip().splitlines()
        return lines[0] if res.returncode == 0 and lines else "unknown"

    def guest_criu_version(self, sandbox: KataSandbox) -> str:
        """The CRIU the guest daemon uses: prebuilt, or built in /tmp."""
        res = sandbox.run(["sh", "-c", GUEST_CRIU_VERSION], stage="dump",
                          check=False)
        lines = res.stdout.strip().splitlines()
        return lines[0] if res.returncode == 0 and lines else "unknown"

    def dump(self, sandbox: KataSandbox, container_id: str, pid: int,
             out_dir: Path) -> Checkpoint:
        """``cedana dump kata <vm> -d DIR``; DIR/dmp.tar must be valid."""
        version = self.version()
        out_dir.mkdir(parents=True, exist_ok=True)
        commands.run([self.cedana, "dump", "kata", sandbox.name, "-d",
                      out_dir], stage="dump",
                     timeout=self.cfg.checkpoint.dump_timeout,
                     log_path=self.log_path)
        archive = out_dir / checkpoint.ARCHIVE
        if not archive.is_file():
            raise CheckpointCorrupt("dump", f"cedana dump exited 0 but left "
                                    f"no {archive}", log_path=self.log_path,
                                    tail=commands.tail(self.log_path))
        release = sandbox.run(["uname", "-r"], stage="dump").stdout.strip()
        ckpt = checkpoint.seal(
            out_dir, criu_version=self.guest_criu_version(sandbox),
            kernel_release=release, image_digest=sandbox.image_digest,
            workload_image_digest=sandbox.workload_image_digest,
            source=sandbox.name, container_id=container_id,
            dump_options=["kata", f"cedana {version}"],
            engine=self.name)
        log.info("dumped %s with cedana %s: %s (%d bytes)", sandbox.name,
                 version, archive, ckpt.manifest.size)
        return ckpt

    def check_target(self, sandbox: KataSandbox, ckpt: Checkpoint) -> None:
        """Refuse a target whose kernel, CRIU or guest image differs."""
        checkpoint.check_target(
            ckpt, kernel_release=sandbox.run(
                ["uname", "-r"], stage="restore").stdout.strip(),
            criu_version=self.guest_criu_version(sandbox),
            image_digest=sandbox.image_digest)

    def restore(self, sandbox: KataSandbox, ckpt: Checkpoint,
                container_id: str) -> int:
        """``cedana restore kata <vm2> -d dmp.tar``; return the new PID."""
        checkpoint.verify(ckpt)
        self.check_target(sandbox, ckpt)
        commands.run([self.cedana, "restore", "kata", sandbox.name, "-d",
                      ckpt.archive], stage="restore",
                     timeout=self.cfg.checkpoint.restore_timeout,
                     log_path=self.log_path)
        # cedana's exit status proves nothing: the workload must be there
        # (and the test then checks that its counter goes on).
        pid = sandbox.workload_pid(self.cfg.workload.command[-1],
                                   stage="restore")
        log.info("restored %s into %s as PID %d", ckpt.manifest.source,
                 sandbox.name, pid)
        return pid
