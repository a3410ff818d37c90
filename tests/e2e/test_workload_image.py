"""The workload image runs under a private containerd and counts.

The image built without Docker must import into containerd under its
name, run ``cedana test.sh`` and write increasing integers into
``/container_io.txt``; the daemon must leave nothing behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from katacr.builders.workload import build_workload_image
from katacr.cache import Artifact, Cache
from katacr.config import Config
from katacr.leaks import process_alive
from katacr.platforms.containerd import Containerd
from katacr.workloads.counter import IO_FILE, parse_values

READ_TIMEOUT_S = 15.0


def _why_no_containerd() -> str:
    if os.geteuid() != 0:
        return "containerd and runc need root"
    missing = [t for t in ("containerd", "ctr", "runc")
               if not shutil.which(t)]
    return f"not installed: {', '.join(missing)}" if missing else ""


WHY_NOT = _why_no_containerd()
needs_containerd = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT)


pytestmark = pytest.mark.order(3)


def work_dir(factory: pytest.TempPathFactory) -> Path:
    """A short work dir: the daemon's socket path must fit in 107 bytes."""
    return factory.mktemp("ctrd", numbered=True)


@pytest.fixture
def containerd(test_log_dir: Path,
               tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Containerd]:
    with Containerd(work_dir(tmp_path_factory), test_log_dir) as daemon:
        yield daemon


def container_id() -> str:
    return f"katacr-wl-{uuid.uuid4().hex[:12]}"


def read_counter(daemon: Containerd, cid: str,
                 at_least: int) -> list[int]:
    """Poll the container's counter until it holds *at_least* values."""
    deadline = time.monotonic() + READ_TIMEOUT_S
    values: list[int] = []
    while time.monotonic() < deadline:
        res = daemon.exec(cid, ["cat", f"/{IO_FILE}"], check=False)
        if res.returncode == 0:
            values = parse_values(res.stdout)
            if len(values) >= at_least:
                return values
        time.sleep(0.2)
    pytest.fail(f"{IO_FILE} in {cid} held {values} after "
                f"{READ_TIMEOUT_S:g} s, wanted {at_least} values")


def test_two_builds_give_the_same_image_digest(
        tmp_path: Path, workload_image: Artifact,
        katacr_config: Config) -> None:
    again = build_workload_image(katacr_config, Cache(tmp_path / "cache"),
                                 tmp_path)
    assert not again.hit
    assert again.manifest["image_digest"] == \
        workload_image.manifest["image_digest"]
    assert (again.path / "image.tar").read_bytes() == \
        (workload_image.path / "image.tar").read_bytes()


@needs_containerd
def test_imported_image_counts_in_container_io(
        containerd: Containerd, workload_image: Artifact) -> None:
    name = containerd.import_image(workload_image.path / "image.tar")
    assert name == workload_image.manifest["image_name"]
    cid = container_id()
    containerd.run_detached(name, cid, ["cedana", "test.sh"])

    first = read_counter(containerd, cid, at_least=2)
    time.sleep(1.5)
    second = read_counter(containerd, cid, at_least=len(first) + 2)

    assert first[0] == 1
    assert second[:len(first)] == first
    assert second == list(range(1, len(second) + 1))


@needs_containerd
def test_close_leaves_no_task_container_shim_or_mount(
        test_log_dir: Path, tmp_path_factory: pytest.TempPathFactory,
        workload_image: Artifact) -> None:
    daemon = Containerd(work_dir(tmp_path_factory), test_log_dir).start()
    try:
        name = daemon.import_image(workload_image.path / "image.tar")
        cid = container_id()
        daemon.run_detached(name, cid, ["cedana", "test.sh"])
        read_counter(daemon, cid, at_least=1)
        [task] = daemon.tasks()
        assert (task.id, task.status) == (cid, "RUNNING")
        assert daemon.containers() == [cid]
        assert daemon.shim_pids() and daemon.mounts()
    finally:
        daemon.close()

    assert daemon.created == [] and daemon.proc is None
    assert daemon.shim_pids() == [] and daemon.mounts() == []
    assert not daemon.shim_socket(cid).exists()
    assert not process_alive(task.pid)
    assert not daemon.work_dir.exists()
    daemon.close()


@needs_containerd
def test_close_cleans_up_after_the_daemon_died(
        test_log_dir: Path, tmp_path_factory: pytest.TempPathFactory,
        workload_image: Artifact) -> None:
    daemon = Containerd(work_dir(tmp_path_factory), test_log_dir).start()
    try:
        name = daemon.import_image(workload_image.path / "image.tar")
        cid = container_id()
        daemon.run_detached(name, cid, ["cedana", "test.sh"])
        [task] = daemon.tasks()
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(timeout=10)
    finally:
        daemon.close()

    assert daemon.shim_pids() == [] and daemon.mounts() == []
    assert not daemon.shim_socket(cid).exists()
    assert not process_alive(task.pid)
    assert not daemon.work_dir.exists()


@needs_containerd
def test_attached_close_removes_only_its_own_containers(
        containerd: Containerd, workload_image: Artifact,
        tmp_path: Path) -> None:
    name = containerd.import_image(workload_image.path / "image.tar")
    theirs = container_id()
    containerd.run_detached(name, theirs, ["cedana", "test.sh"])
    # The private daemon's runc root: keep runc's state out of /run.
    attached = Containerd.attach(containerd.address, containerd.namespace,
                                 tmp_path / "attached-logs",
                                 runc_root=containerd.runc_root)
    ours = container_id()
    attached.run_detached(name, ours, ["cedana", "test.sh"])
    assert sorted(containerd.containers()) == sorted([theirs, ours])

    attached.close()

    assert containerd.containers() == [theirs]
    assert containerd.proc is not None and containerd.proc.poll() is None
    attached.close()


def test_close_before_start_is_harmless(tmp_path: Path) -> None:
    daemon = Containerd(tmp_path / "ctrd", tmp_path / "logs")
    daemon.close()
    daemon.close()
    assert daemon.proc is None and daemon.created == []
