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
        res = commands.run([self.cedana, "--version"], stage="dump",
                           timeout=30, check=False, capture=True,
                           log_path=self.log_path)
        return (res.stdout.strip().splitlines() or ["unknown"])[0]

    def dump(self, sandbox: KataSandbox, container_id: str, pid: int,
             out_dir: Path) -> Checkpoint:
        """``cedana dump kata <vm> -d DIR``; DIR/dmp.tar must be valid."""
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
        criu = sandbox.run(["criu", "--version"], stage="dump",
                           check=False).stdout.strip().splitlines()
        return checkpoint.seal(
            out_dir, criu_version=(criu or ["unknown"])[0],
            kernel_release=release, image_digest=sandbox.image_digest,
            workload_image_digest=sandbox.workload_image_digest,
            source=sandbox.name, container_id=container_id,
            dump_options=["kata", f"cedana {self.version()}"],
            engine=self.name)

    def restore(self, sandbox: KataSandbox, ckpt: Checkpoint,
                container_id: str) -> int:
        """``cedana restore kata <vm2> -d dmp.tar``; return the new PID."""
        checkpoint.verify(ckpt)
        commands.run([self.cedana, "restore", "kata", sandbox.name, "-d",
                      ckpt.archive], stage="restore",
                     timeout=self.cfg.checkpoint.restore_timeout,
                     log_path=self.log_path)
        command = self.cfg.workload.command[-1]
        return sandbox.workload_pid(command, stage="restore")
