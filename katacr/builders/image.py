"""VM image: a raw ext4 file made from the rootfs tree, no loop mount."""

from __future__ import annotations

import logging
from pathlib import Path

from katacr import commands
from katacr.cache import Artifact, Cache, digest_file
from katacr.config import Config
from katacr.errors import ConfigError

log = logging.getLogger("katacr.image")

IMAGE = "rootfs.img"


def tree_size_mb(tree: Path, log_path: Path) -> int:
    """Disk usage of *tree* in MiB."""
    res = commands.run(["du", "-sm", "--apparent-size", tree],
                       stage="build-image", timeout=300, capture=True,
                       log_path=log_path)
    return int(res.stdout.split()[0])


def make_ext4(tree: Path, image: Path, size_mb: int, log_path: Path) -> None:
    """Write an ext4 image of *tree* with ``mkfs.ext4 -d``."""
    mkfs = commands.which("mkfs.ext4", "to build the VM image (e2fsprogs)")
    commands.run([mkfs, "-F", "-q", "-L", "katacr-root", "-d", tree, image,
                  f"{size_mb}M"], stage="build-image", timeout=600,
                 log_path=log_path)


def build_image(cfg: Config, cache: Cache, rootfs: Artifact,
                log_dir: Path) -> Artifact:
    """Return the cached raw ext4 VM image for *rootfs*."""
    inputs = {"rootfs": rootfs.key, "size_mb": cfg.image.size_mb,
              "e2fsprogs": commands.package_version("e2fsprogs")}
    log_path = log_dir / "image.log"

    def build(tmp: Path) -> dict:
        tree = rootfs.path / "tree"
        need = tree_size_mb(tree, log_path)
        if need * 1.2 + 64 > cfg.image.size_mb:
            raise ConfigError(f"image.size_mb: {cfg.image.size_mb} MiB is "
                              f"too small for a {need} MiB rootfs")
        make_ext4(tree, tmp / IMAGE, cfg.image.size_mb, log_path)
        return {"image": IMAGE, "digest": "sha256:" +
                digest_file(tmp / IMAGE), "rootfs": rootfs.key}

    return cache.obtain("image", inputs, build, log_path)
