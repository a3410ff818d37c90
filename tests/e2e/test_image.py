"""The VM image boots with the built kernel: agent, kernel, CRIU, installer."""

from __future__ import annotations

from pathlib import Path

import pytest

from katacr.cache import Artifact
from katacr.config import Config
from katacr.engines.criu import CriuEngine
from katacr.errors import StageTimeout
from katacr.platforms.local import LocalSandbox

pytestmark = [pytest.mark.order(4), pytest.mark.local_profile]


def test_guest_agent_answers_within_boot_timeout(
        source_sandbox: LocalSandbox, katacr_config: Config) -> None:
    seconds = source_sandbox.wait_ready()
    assert seconds < katacr_config.vm.boot_timeout
    assert source_sandbox.run(["true"], stage="verify").returncode == 0


def test_guest_runs_the_built_kernel(source_sandbox: LocalSandbox,
                                     guest_kernel: Artifact) -> None:
    release = source_sandbox.run(["uname", "-r"], stage="verify").stdout
    assert release.strip() == guest_kernel.manifest["release"]


def test_criu_check_passes_in_guest(source_sandbox: LocalSandbox,
                                    criu_engine: CriuEngine,
                                    test_log_dir: Path) -> None:
    output = criu_engine.check(source_sandbox)
    (test_log_dir / "criu-check.txt").write_text(output)
    assert "Looks good." in output


def test_root_is_read_only_and_tmp_is_tmpfs(
        source_sandbox: LocalSandbox) -> None:
    mounts = source_sandbox.read_text("/proc/mounts", stage="verify")
    by_point = {ln.split()[1]: ln.split() for ln in mounts.splitlines()}
    assert "ro" in by_point["/"][3].split(",")
    assert by_point["/tmp"][2] == "tmpfs"
    assert by_point["/run"][2] == "tmpfs"


def test_installer_is_idempotent_and_says_what_it_did(
        source_sandbox: LocalSandbox) -> None:
    first = source_sandbox.install()
    second = source_sandbox.install()
    assert "CRIU ready" in first and "CRIU ready" in second
    assert "no /cedana: daemon not started" in second


def test_installer_fails_clearly_without_criu(
        source_sandbox: LocalSandbox) -> None:
    res = source_sandbox.run(["env", "PATH=/nonexistent", "/bin/sh",
                              "/bin/build_start_daemon.sh"], stage="verify",
                             check=False)
    assert res.returncode == 1
    assert "no usable CRIU" in res.stderr


def test_hung_guest_command_times_out_and_is_killed(
        source_sandbox: LocalSandbox) -> None:
    source_sandbox.wait_ready()
    with pytest.raises(StageTimeout, match="verify timed out after 2 s"):
        source_sandbox.run(["sleep", "300"], stage="verify", timeout=2)
    left = source_sandbox.run(["ps", "-eo", "args"], stage="verify").stdout
    assert "sleep 300" not in left
