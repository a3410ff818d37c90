"""Known C/R fault kinds: each provoked, named, bounded in time, leak-free."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from katacr import checkpoint
from katacr.builders.image import build_image
from katacr.cache import Artifact, Cache
from katacr.checkpoint import Checkpoint
from katacr.config import Config
from katacr.engines.criu import CriuEngine
from katacr.errors import CheckpointCorrupt, StageError, StageTimeout
from katacr.platforms.local import LocalSandbox
from katacr.workloads import counter

pytestmark = [pytest.mark.order(6), pytest.mark.local_profile]


def dump_counter(source: LocalSandbox, engine: CriuEngine, out: Path,
                 cfg: Config) -> Checkpoint:
    pid = source.start_workload(source.name, cfg.workload.command)
    source.install()
    return engine.dump(source, source.name, pid, out)


def copy_checkpoint(ckpt: Checkpoint, dest: Path) -> Checkpoint:
    shutil.copytree(ckpt.dir, dest)
    return checkpoint.load(dest)


def assert_nothing_restored(target: LocalSandbox,
                            refused_before_transfer: bool = True) -> None:
    procs = target.run(["ps", "-e", "-o", "args="], stage="verify").stdout
    assert "test.sh" not in procs
    if refused_before_transfer:
        res = target.run(["test", "-e", f"{target.state_dir(target.name)}"
                          "/restore"], stage="verify", check=False)
        assert res.returncode != 0, "restore started on a bad checkpoint"


def test_restore_fails_clearly_on_truncated_or_flipped_checkpoint(
        source_sandbox: LocalSandbox, target_sandbox: LocalSandbox,
        criu_engine: CriuEngine, checkpoint_dir: Path, tmp_path: Path,
        katacr_config: Config) -> None:
    ckpt = dump_counter(source_sandbox, criu_engine, checkpoint_dir,
                        katacr_config)
    cut = copy_checkpoint(ckpt, tmp_path / "cut")
    cut.archive.write_bytes(cut.archive.read_bytes()[:-1])
    flipped = copy_checkpoint(ckpt, tmp_path / "flipped")
    data = bytearray(flipped.archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.archive.write_bytes(bytes(data))
    target_sandbox.prepare_target(target_sandbox.name)

    with pytest.raises(CheckpointCorrupt, match="checkpoint corrupt: .*"
                       "bytes, manifest says"):
        criu_engine.restore(target_sandbox, cut, target_sandbox.name)
    with pytest.raises(CheckpointCorrupt, match="checkpoint corrupt: .*"
                       "sha256"):
        criu_engine.restore(target_sandbox, flipped, target_sandbox.name)
    assert_nothing_restored(target_sandbox)


def test_restore_refuses_a_target_booted_from_another_image(
        sandbox_factory, criu_engine: CriuEngine, checkpoint_dir: Path,
        katacr_config: Config, artifact_cache: Cache, guest_rootfs: Artifact,
        vm_image: Artifact, test_log_dir: Path) -> None:
    other_cfg = dataclasses.replace(katacr_config, image=dataclasses.replace(
        katacr_config.image, size_mb=katacr_config.image.size_mb + 64))
    other = build_image(other_cfg, artifact_cache, guest_rootfs,
                        test_log_dir)
    assert other.manifest["digest"] != vm_image.manifest["digest"]
    source = sandbox_factory("src")
    target = sandbox_factory("dst", image=other)
    ckpt = dump_counter(source, criu_engine, checkpoint_dir, katacr_config)
    target.prepare_target(target.name)

    with pytest.raises(StageError, match="FAIL at restore: source/target "
                       "mismatch: guest image: source sha256:"):
        criu_engine.restore(target, ckpt, target.name)
    assert_nothing_restored(target)


def test_restore_refuses_criu_version_skew(
        source_sandbox: LocalSandbox, target_sandbox: LocalSandbox,
        criu_engine: CriuEngine, checkpoint_dir: Path,
        katacr_config: Config) -> None:
    ckpt = dump_counter(source_sandbox, criu_engine, checkpoint_dir,
                        katacr_config)
    manifest = json.loads((ckpt.dir / checkpoint.MANIFEST).read_text())
    manifest["criu_version"] = "Version: 3.16"
    (ckpt.dir / checkpoint.MANIFEST).write_text(json.dumps(manifest))
    target_sandbox.prepare_target(target_sandbox.name)

    with pytest.raises(StageError) as err:
        criu_engine.restore(target_sandbox, checkpoint.load(ckpt.dir),
                            target_sandbox.name)
    assert "CRIU: source Version: 3.16, target Version: 3.17" in \
        str(err.value)


def test_dump_refuses_a_terminal_bound_workload(
        source_sandbox: LocalSandbox, criu_engine: CriuEngine,
        checkpoint_dir: Path) -> None:
    # script(1) gives its child a pty as controlling terminal, as
    # `ctr run -t` would.
    source_sandbox.run(["mkdir", "-p", "/run/katacr/tty"], stage="setup")
    source_sandbox.run(["setsid", "-f", "script", "-qfc", "sleep 600",
                        "/run/katacr/tty/typescript"], stage="setup",
                       capture=False)
    pid = int(source_sandbox.run(["pgrep", "-x", "-n", "sleep"],
                                 stage="setup").stdout)

    with pytest.raises(StageError, match=r"FAIL at dump: terminal-bound "
                       rf"workload: PID {pid} \(sleep\) on pts/"):
        criu_engine.dump(source_sandbox, "tty", pid, checkpoint_dir)


def test_boot_that_never_reaches_the_agent_times_out_with_console(
        source_sandbox: LocalSandbox) -> None:
    source_sandbox.boot_timeout = 1
    with pytest.raises(StageTimeout) as err:
        source_sandbox.wait_ready()
    msg = str(err.value)
    assert "FAIL at boot: boot timed out after 1 s" in msg
    assert "console-" in msg


def test_killed_vm_fails_the_next_guest_command_clearly(
        source_sandbox: LocalSandbox) -> None:
    source_sandbox.wait_ready()
    source_sandbox.vm.proc.kill()
    source_sandbox.vm.proc.wait(timeout=10)
    with pytest.raises(StageError, match="FAIL at verify: guest "):
        source_sandbox.run(["true"], stage="verify", timeout=10)


def test_restore_on_a_cpu_with_fewer_features_is_refused(
        sandbox_factory, criu_engine: CriuEngine, checkpoint_dir: Path,
        katacr_config: Config) -> None:
    source = sandbox_factory("src", cpu_model="max")
    target = sandbox_factory("dst", cpu_model="qemu64")
    ckpt = dump_counter(source, criu_engine, checkpoint_dir, katacr_config)
    target.prepare_target(target.name)

    with pytest.raises(StageError, match="FAIL at restore: CPU features: "
                       "the target CPU lacks features"):
        criu_engine.restore(target, ckpt, target.name)
    assert_nothing_restored(target, refused_before_transfer=False)


def occupy_pid(sandbox: LocalSandbox, pid: int) -> None:
    """Make a `sleep` hold guest PID *pid*.

    The agent spawns through one helper and `setsid -f` forks once, so
    the sleep gets the third PID after ``ns_last_pid``; try around it.
    """
    for offset in (3, 2, 4, 1, 5):
        sandbox.run(["sysctl", "-q", "-w",
                     f"kernel.ns_last_pid={pid - offset}"], stage="setup")
        sandbox.run(["setsid", "-f", "sleep", "600"], stage="setup",
                    capture=False)
        comm = sandbox.run(["cat", f"/proc/{pid}/comm"], stage="setup",
                           check=False).stdout.strip()
        if comm == "sleep":
            return
    pytest.fail(f"could not occupy PID {pid} in {sandbox.name}")


def test_restore_into_a_fresh_pid_namespace_survives_a_taken_pid(
        source_sandbox: LocalSandbox, target_sandbox: LocalSandbox,
        criu_engine: CriuEngine, checkpoint_dir: Path,
        katacr_config: Config) -> None:
    cfg = katacr_config
    pid = source_sandbox.start_workload(source_sandbox.name,
                                        cfg.workload.command)
    counter.wait_for_value(source_sandbox, source_sandbox.name, 3, 60)
    ckpt = criu_engine.dump(source_sandbox, source_sandbox.name, pid,
                            checkpoint_dir)
    occupy_pid(target_sandbox, pid)
    target_sandbox.prepare_target(target_sandbox.name)

    restored = criu_engine.restore(target_sandbox, ckpt, target_sandbox.name)

    assert restored != pid
    counter.check_advancing(target_sandbox, target_sandbox.name, 2)


def test_workload_holding_a_deleted_file_migrates(
        source_sandbox: LocalSandbox, target_sandbox: LocalSandbox,
        criu_engine: CriuEngine, checkpoint_dir: Path) -> None:
    """A deleted-but-open file: CRIU carries it as a ghost, or says why."""
    ghost = ["cedana", "sh", "-c",
             "echo state > /ghost; exec 3</ghost; rm /ghost; exec test.sh"]
    pid = source_sandbox.start_workload(source_sandbox.name, ghost)
    counter.wait_for_value(source_sandbox, source_sandbox.name, 3, 60)
    ckpt = criu_engine.dump(source_sandbox, source_sandbox.name, pid,
                            checkpoint_dir)
    target_sandbox.prepare_target(target_sandbox.name)

    restored = criu_engine.restore(target_sandbox, ckpt, target_sandbox.name)

    fd = target_sandbox.run(["readlink", f"/proc/{restored}/fd/3"],
                            stage="verify").stdout
    assert fd.strip().endswith("/ghost (deleted)")
    counter.check_advancing(target_sandbox, target_sandbox.name, 2)
