"""Save, migrate, resume: the workload's own state must carry over."""

from __future__ import annotations

from pathlib import Path

import pytest

from katacr import checkpoint
from katacr.checkpoint import Checkpoint
from katacr.config import Config
from katacr.errors import StateNotCarriedOver
from katacr.platforms.local import LocalSandbox
from katacr.workloads import counter

pytestmark = pytest.mark.order(5)


def dumped_values(source: LocalSandbox, ckpt: Checkpoint) -> list[int]:
    """The counter as dumped: from the checkpoint's writable layer, else
    (cedana's archive carries none) from the source right after the dump."""
    carried = checkpoint.read_member(ckpt, counter.IO_FILE)
    if carried is not None:
        return counter.parse_values(carried.decode())
    return counter.read_values(source, source.name, stage="dump")


def dump_running_counter(source: LocalSandbox, engine,
                         checkpoint_dir: Path, cfg: Config
                         ) -> tuple[Checkpoint, list[int]]:
    """Start the counter in *source*, let it pass N, dump it."""
    pid = source.start_workload(source.name, cfg.workload.command)
    source.install()
    counter.wait_for_value(source, source.name,
                           cfg.checkpoint.counter_before_dump + 1,
                           timeout=60)
    ckpt = engine.dump(source, source.name, pid, checkpoint_dir)
    # criu stops the source (a migration); cedana dumps with leave-running.
    assert source.pid_alive(pid) == engine.leave_running
    dumped = dumped_values(source, ckpt)
    assert dumped[-1] > cfg.checkpoint.counter_before_dump
    return ckpt, dumped


def test_counter_survives_migration(
        source_sandbox: LocalSandbox, target_sandbox: LocalSandbox,
        engine, checkpoint_dir: Path,
        katacr_config: Config) -> None:
    cfg = katacr_config
    ckpt, dumped = dump_running_counter(source_sandbox, engine,
                                        checkpoint_dir, cfg)

    target_sandbox.prepare_target(target_sandbox.name)
    target_sandbox.install()
    pid = engine.restore(target_sandbox, ckpt, target_sandbox.name)

    assert target_sandbox.pid_alive(pid)
    after = counter.wait_for_lines(target_sandbox, target_sandbox.name,
                                   len(dumped), timeout=30)
    counter.check_continuation(dumped, after, cfg.checkpoint.max_gap_ticks)
    counter.check_advancing(target_sandbox, target_sandbox.name,
                            cfg.checkpoint.advance_seconds)
    assert target_sandbox.pid_alive(pid)


@pytest.mark.local_profile
def test_fresh_workload_instead_of_restore_is_caught(
        source_sandbox: LocalSandbox, target_sandbox: LocalSandbox,
        engine, checkpoint_dir: Path,
        katacr_config: Config) -> None:
    """The same assertion must fail for a cheat that restarts the workload."""
    cfg = katacr_config
    ckpt, dumped = dump_running_counter(source_sandbox, engine,
                                        checkpoint_dir, cfg)

    dst = target_sandbox
    dst.prepare_target(dst.name)
    dst.install()
    guest_tar = dst.push(ckpt.archive)
    dst.run(["tar", "-xf", guest_tar, "-C", "/tmp",
             checkpoint.ROOTFS_DIFF], stage="cheat")
    dst.run(["tar", "-xf", f"/tmp/{checkpoint.ROOTFS_DIFF}", "-C",
             dst.rootfs(dst.name)], stage="cheat")
    dst.start_container(dst.name, cfg.workload.command)  # no restore

    after = counter.wait_for_lines(dst, dst.name, len(dumped), timeout=30)
    with pytest.raises(StateNotCarriedOver, match="first value after "
                       "restore is 1"):
        counter.check_continuation(dumped, after,
                                   cfg.checkpoint.max_gap_ticks)
