"""The guest rootfs: CRIU runs in it, the installer is in /bin, and
``/cedana`` is there exactly when configured."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from katacr import commands
from katacr.builders.rootfs import build_rootfs
from katacr.cache import Artifact, Cache
from katacr.config import Config

pytestmark = [pytest.mark.order(2), pytest.mark.local_profile]

STAND_IN = Path(__file__).resolve().parent.parent / "stand-ins" / "cedana"


def test_criu_runs_in_the_rootfs(guest_rootfs: Artifact,
                                 test_log_dir: Path) -> None:
    res = commands.run(["chroot", guest_rootfs.path / "tree", "criu",
                        "--version"], stage="verify", timeout=60,
                       capture=True, log_path=test_log_dir / "chroot.log")
    assert res.stdout.startswith("Version: 3."), res.stdout


def test_installer_is_in_bin_and_executable(guest_rootfs: Artifact) -> None:
    installer = guest_rootfs.path / "tree" / "bin" / "build_start_daemon.sh"
    assert installer.is_file()
    assert os.access(installer, os.X_OK)


def test_guest_agent_and_init_are_installed(guest_rootfs: Artifact) -> None:
    tree = guest_rootfs.path / "tree"
    assert (tree / "usr/sbin/qemu-ga").is_file()
    assert os.access(tree / "sbin/katacr-init", os.X_OK)


def test_cedana_absent_when_not_configured(guest_rootfs: Artifact,
                                           katacr_config: Config) -> None:
    assert not katacr_config.rootfs.cedana_binary
    assert not (guest_rootfs.path / "tree" / "cedana").exists()
    assert guest_rootfs.manifest["cedana"] is False


def test_cedana_present_when_configured(
        guest_rootfs: Artifact, katacr_config: Config, artifact_cache: Cache,
        test_log_dir: Path) -> None:
    cfg = dataclasses.replace(
        katacr_config, rootfs=dataclasses.replace(
            katacr_config.rootfs, cedana_binary=str(STAND_IN)))
    with_cedana = build_rootfs(cfg, artifact_cache, test_log_dir)
    assert with_cedana.key != guest_rootfs.key
    cedana = with_cedana.path / "tree" / "cedana"
    assert cedana.read_bytes() == STAND_IN.read_bytes()
    assert os.access(cedana, os.X_OK)
    assert with_cedana.manifest["cedana"] is True
