"""A checkpoint on the host: ``DIR/dmp.tar`` and ``DIR/manifest.json``.

``dmp.tar`` holds ``images/`` (the CRIU images) and ``rootfs-diff.tar``
(the container's writable layer: files the workload holds open must be
on the target, at the same size).  The manifest records what a target
must match and what proves the archive intact.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from katacr.cache import digest_file
from katacr.errors import CheckpointCorrupt, StageError

ARCHIVE = "dmp.tar"
MANIFEST = "manifest.json"
ROOTFS_DIFF = "rootfs-diff.tar"
INVENTORY = "images/inventory.img"


@dataclass
class CheckpointManifest:
    sha256: str
    size: int
    criu_version: str
    kernel_release: str
    image_digest: str
    workload_image_digest: str
    source: str
    container_id: str
    dump_options: list[str] = field(default_factory=list)
    engine: str = "criu"


@dataclass
class Checkpoint:
    """A dumped workload on the host."""

    dir: Path
    manifest: CheckpointManifest

    @property
    def archive(self) -> Path:
        return self.dir / ARCHIVE


def seal(dir: Path, **fields: object) -> Checkpoint:
    """Write the manifest for ``dir/dmp.tar``; fail if it is not a tar."""
    archive = dir / ARCHIVE
    check_archive(archive)
    manifest = CheckpointManifest(sha256=digest_file(archive),
                                  size=archive.stat().st_size,
                                  **fields)  # type: ignore[arg-type]
    (dir / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2))
    return Checkpoint(dir, manifest)


def check_archive(archive: Path) -> None:
    """Fail unless *archive* is a non-empty tar with CRIU images in it."""
    if not archive.is_file() or archive.stat().st_size == 0:
        raise CheckpointCorrupt("dump", f"checkpoint missing or empty: "
                                f"{archive}")
    try:
        with tarfile.open(archive) as tar:
            names = tar.getnames()
    except (tarfile.TarError, EOFError) as exc:
        raise CheckpointCorrupt("dump", f"checkpoint is not a valid tar: "
                                f"{archive}: {exc}") from None
    # cedana's archive has the images at its top, ours under images/.
    if not any(n.lstrip("./").endswith("inventory.img") for n in names):
        raise CheckpointCorrupt("dump", f"checkpoint has no {INVENTORY}: "
                                f"{archive}")


def load(dir: Path) -> Checkpoint:
    """Read ``dir/manifest.json``."""
    path = dir / MANIFEST
    if not path.is_file():
        raise CheckpointCorrupt("transfer", f"checkpoint manifest missing: "
                                f"{path}")
    data = json.loads(path.read_text())
    return Checkpoint(dir, CheckpointManifest(**data))


def verify(ckpt: Checkpoint) -> None:
    """Fail "checkpoint corrupt" unless the archive matches its manifest."""
    archive = ckpt.archive
    m = ckpt.manifest
    size = archive.stat().st_size if archive.exists() else -1
    if size != m.size:
        raise CheckpointCorrupt(
            "transfer", f"checkpoint corrupt: {archive} is {size} bytes, "
            f"manifest says {m.size}")
    digest = digest_file(archive)
    if digest != m.sha256:
        raise CheckpointCorrupt(
            "transfer", f"checkpoint corrupt: {archive} sha256 {digest}, "
            f"manifest says {m.sha256}")
    check_archive(archive)


def read_member(ckpt: Checkpoint, path: str) -> bytes | None:
    """A file of the container's writable layer as dumped, or None."""
    with tarfile.open(ckpt.archive) as outer:
        try:
            diff = outer.extractfile(ROOTFS_DIFF)
        except KeyError:
            return None
        assert diff is not None
        with tarfile.open(fileobj=diff) as inner:
            for name in (path, "./" + path.lstrip("/")):
                try:
                    member = inner.extractfile(name)
                except KeyError:
                    continue
                return member.read() if member else None
    return None


def check_target(ckpt: Checkpoint, *, kernel_release: str,
                 criu_version: str, image_digest: str) -> None:
    """Refuse a target whose kernel, CRIU or guest image differs from the
    source's (an empty *image_digest* means the target's is unknown)."""
    m = ckpt.manifest
    pairs = {"kernel release": (m.kernel_release, kernel_release),
             "CRIU": (m.criu_version, criu_version),
             "guest image": (m.image_digest, image_digest or m.image_digest)}
    diffs = [f"{what}: source {src}, target {dst}"
             for what, (src, dst) in pairs.items() if src != dst]
    if diffs:
        raise StageError("restore", "source/target mismatch: "
                         + "; ".join(diffs))
