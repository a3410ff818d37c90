"""Checkpoint archives: sealed with a manifest, refused when damaged."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from katacr import checkpoint
from katacr.errors import CheckpointCorrupt

FIELDS = dict(criu_version="Version: 3.17.1", kernel_release="6.1.0",
              image_digest="sha256:aa", workload_image_digest="sha256:bb",
              source="src", container_id="c1", dump_options=["--x"])


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_archive(dir: Path, io_text: bytes = b"1\n2\n3\n") -> Path:
    dir.mkdir(parents=True, exist_ok=True)
    diff = io.BytesIO()
    with tarfile.open(fileobj=diff, mode="w") as inner:
        _add(inner, "./container_io.txt", io_text)
    with tarfile.open(dir / checkpoint.ARCHIVE, "w") as tar:
        _add(tar, "images/inventory.img", b"\x00" * 4096)
        _add(tar, "images/pages-1.img", b"\x01" * 65536)
        _add(tar, checkpoint.ROOTFS_DIFF, diff.getvalue())
    return dir / checkpoint.ARCHIVE


def test_sealed_checkpoint_verifies_and_reloads(tmp_path: Path) -> None:
    make_archive(tmp_path)
    ckpt = checkpoint.seal(tmp_path, **FIELDS)
    checkpoint.verify(checkpoint.load(tmp_path))
    assert ckpt.manifest.size == (tmp_path / "dmp.tar").stat().st_size
    assert checkpoint.read_member(ckpt, "container_io.txt") == b"1\n2\n3\n"


def test_restore_fails_clearly_on_truncated_checkpoint(
        tmp_path: Path) -> None:
    archive = make_archive(tmp_path)
    ckpt = checkpoint.seal(tmp_path, **FIELDS)
    archive.write_bytes(archive.read_bytes()[:-1])
    with pytest.raises(CheckpointCorrupt, match="checkpoint corrupt: .* "
                       "bytes, manifest says"):
        checkpoint.verify(ckpt)


def test_restore_fails_clearly_on_flipped_byte(tmp_path: Path) -> None:
    archive = make_archive(tmp_path)
    ckpt = checkpoint.seal(tmp_path, **FIELDS)
    data = bytearray(archive.read_bytes())
    data[1000] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorrupt, match="sha256"):
        checkpoint.verify(ckpt)


def test_seal_refuses_a_tar_without_criu_images(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / checkpoint.ARCHIVE, "w") as tar:
        _add(tar, "hello", b"x")
    with pytest.raises(CheckpointCorrupt, match="no images/inventory.img"):
        checkpoint.seal(tmp_path, **FIELDS)


def test_seal_refuses_an_empty_or_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(CheckpointCorrupt, match="missing or empty"):
        checkpoint.seal(tmp_path, **FIELDS)
    (tmp_path / checkpoint.ARCHIVE).write_bytes(b"")
    with pytest.raises(CheckpointCorrupt, match="missing or empty"):
        checkpoint.seal(tmp_path, **FIELDS)


def test_missing_manifest_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointCorrupt, match="manifest missing"):
        checkpoint.load(tmp_path)


class _Target:
    name = "dst"

    def run(self, argv, stage, check=True, **kw):
        from katacr.platforms.guest_agent import GuestResult
        assert argv == ["cat", "/proc/85/comm"]
        return GuestResult(argv, 0, "qemu-ga\n", "", 0.01)


def test_pid_collision_names_the_pid_and_its_holder(tmp_path: Path) -> None:
    from katacr.config import CheckpointConfig
    from katacr.engines.criu import CriuEngine
    engine = CriuEngine(CheckpointConfig(), tmp_path)
    log = ("(00.101) 1: Error (criu/cr-restore.c:1480): Can't fork for 85: "
           "File exists\n")
    assert engine._pid_collision(_Target(), log) == \
        "PID 85 taken on target by qemu-ga"
    assert engine._pid_collision(_Target(), "all fine") is None
