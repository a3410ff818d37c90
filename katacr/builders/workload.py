"""The busybox workload image, built without Docker.

An OCI image layout archive equivalent to ``assets/busybox/Dockerfile``:
one uncompressed layer holding the host's static busybox with a symlink
per applet, the ``cedana`` wrapper compiled from ``cedana.c`` and the
counter script ``test.sh``.  Every tar entry has a fixed mtime and owner
and the entries are sorted, so the same inputs give the same bytes and
the same image digest on every host.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import struct
import tarfile
from pathlib import Path
from typing import Any

from katacr import commands
from katacr.cache import Artifact, Cache, digest_file, digest_tree
from katacr.config import ASSETS, Config
from katacr.errors import ConfigError

log = logging.getLogger("katacr.workload")

STAGE = "build-workload-image"
WORKLOAD_ASSETS = ASSETS / "busybox"
IMAGE_TAR = "image.tar"
LAYER_TAR = "layer.tar"
WRAPPER = "cedana"
# Bump when the layout of the archive changes, so cached images rebuild.
FORMAT_VERSION = 1
# A constant mtime keeps the layer byte-identical across builds.  The
# local platform tells the container's writable layer by files newer than
# the unpack time, which an mtime of 0 never is.
MTIME = 0
# Directories a container runtime mounts over or the workload may write.
EMPTY_DIRS = {"proc": 0o755, "dev": 0o755, "sys": 0o755, "tmp": 0o1777,
              "etc": 0o755, "root": 0o700, "run": 0o755, "var": 0o755}
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
PT_INTERP = 3


def _tar_info(name: str, kind: bytes, mode: int, size: int = 0,
              link: str = "") -> tarfile.TarInfo:
    """A tar header with the fixed owner and mtime of every entry."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = link
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _add_file(tar: tarfile.TarFile, name: str, src: Path, mode: int) -> None:
    with open(src, "rb") as f:
        tar.addfile(_tar_info(name, tarfile.REGTYPE, mode,
                              src.stat().st_size), f)


def is_static(binary: Path) -> bool:
    """True if the ELF *binary* asks for no program interpreter."""
    with open(binary, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, = struct.unpack("<I", f.read(4))
            if p_type == PT_INTERP:
                return False
    return True


def find_busybox(cfg: Config) -> Path:
    """The configured busybox binary, checked to be there and static."""
    path = Path(cfg.workload.busybox).expanduser()
    if not path.is_file():
        raise ConfigError(f"workload.busybox: no busybox binary at {path} "
                          "(install busybox-static or set workload.busybox)")
    # The image holds nothing but busybox: a dynamic one finds no libc.
    if not is_static(path):
        raise ConfigError(f"workload.busybox: {path} is not a static x86-64 "
                          "binary (install busybox-static)")
    return path


def busybox_applets(busybox: Path, log_path: Path) -> list[str]:
    """The applet names *busybox* was built with, sorted."""
    res = commands.run([busybox, "--list"], stage=STAGE, timeout=30,
                       capture=True, log_path=log_path)
    return sorted({a for a in res.stdout.split() if a and "/" not in a}
                  - {"busybox"})


def busybox_version(busybox: Path, log_path: Path) -> str:
    """The first line of busybox's help, e.g. ``BusyBox v1.35.0 (...)``."""
    res = commands.run([busybox, "--help"], stage=STAGE, timeout=30,
                       capture=True, check=False, log_path=log_path)
    return (res.stdout.splitlines() or ["unknown"])[0].strip()


def gcc_version(log_path: Path) -> str:
    """The first line of ``gcc --version``; a cache input."""
    gcc = commands.which("gcc", "to compile the workload wrapper cedana.c")
    res = commands.run([gcc, "--version"], stage=STAGE, timeout=30,
                       capture=True, log_path=log_path)
    return (res.stdout.splitlines() or [""])[0]


def compile_wrapper(src: Path, out: Path, log_path: Path) -> None:
    """Compile the ``cedana`` wrapper *src* into the static binary *out*."""
    gcc = commands.which("gcc", "to compile the workload wrapper cedana.c")
    # Compiled from its own directory by base name, so no checkout path
    # lands in the binary and every checkout builds the same bytes.
    commands.run([gcc, "-static", "-Os", "-o", Path(out).resolve(),
                  Path(src).name], stage=STAGE, timeout=120,
                 cwd=Path(src).resolve().parent, log_path=log_path)


def write_layer(out: Path, busybox: Path, applets: list[str],
                wrapper: Path, script: Path) -> None:
    """Write the image's only layer, an uncompressed deterministic tar."""
    dirs = {"bin": 0o755, **EMPTY_DIRS}
    files = {"bin/busybox": busybox, "bin/cedana": wrapper,
             "bin/test.sh": script}
    links = {f"bin/{a}": "busybox" for a in applets
             if f"bin/{a}" not in files}
    # Sorted by name: a directory sorts before its own entries.
    entries = sorted([*dirs, *files, *links])
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in entries:
            if name in dirs:
                tar.addfile(_tar_info(name + "/", tarfile.DIRTYPE,
                                      dirs[name]))
            elif name in files:
                _add_file(tar, name, files[name], 0o755)
            else:
                tar.addfile(_tar_info(name, tarfile.SYMTYPE, 0o777,
                                      link=links[name]))


def _json_blob(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, data_digest: str, size: int,
                **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": data_digest, "size": size,
            **extra}


def image_config(layer_digest: str, command: list[str]) -> bytes:
    """The OCI image config: platform, default command, the layer's diff."""
    # No "created" field: a timestamp would change the digest every build.
    return _json_blob({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": [PATH_ENV], "Cmd": list(command),
                   "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    })


def write_archive(out: Path, layer: Path, image_name: str,
                  command: list[str]) -> dict[str, str]:
    """Write the OCI image layout tar; return the layer and image digests."""
    layer_digest = "sha256:" + digest_file(layer)
    config = image_config(layer_digest, command)
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = _json_blob({
        "schemaVersion": 2, "mediaType": MT_MANIFEST,
        "config": _descriptor(MT_CONFIG, config_digest, len(config)),
        "layers": [_descriptor(MT_LAYER, layer_digest,
                               layer.stat().st_size)],
    })
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    # ctr image import names the image after io.containerd.image.name;
    # other OCI tools read org.opencontainers.image.ref.name.
    index = _json_blob({
        "schemaVersion": 2, "mediaType": MT_INDEX,
        "manifests": [_descriptor(
            MT_MANIFEST, manifest_digest, len(manifest),
            platform={"architecture": "amd64", "os": "linux"},
            annotations={"io.containerd.image.name": image_name,
                         "org.opencontainers.image.ref.name": image_name})],
    })
    blobs: dict[str, bytes | Path] = {config_digest: config,
                                      manifest_digest: manifest,
                                      layer_digest: layer}
    members: dict[str, bytes | Path | None] = {
        "blobs": None, "blobs/sha256": None,
        "index.json": index,
        "oci-layout": _json_blob({"imageLayoutVersion": "1.0.0"}),
        **{"blobs/sha256/" + d.split(":", 1)[1]: b for d, b in
           blobs.items()}}
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(members):
            _add_member(tar, name, members[name])
    return {"layer_digest": layer_digest, "image_digest": manifest_digest,
            "config_digest": config_digest}


def _add_member(tar: tarfile.TarFile, name: str,
                content: bytes | Path | None) -> None:
    if content is None:
        tar.addfile(_tar_info(name + "/", tarfile.DIRTYPE, 0o755))
    elif isinstance(content, Path):
        _add_file(tar, name, content, 0o644)
    else:
        tar.addfile(_tar_info(name, tarfile.REGTYPE, 0o644, len(content)),
                    io.BytesIO(content))


def build_workload_image(cfg: Config, cache: Cache,
                         log_dir: Path) -> Artifact:
    """Return the cached OCI archive of the busybox workload image."""
    busybox = find_busybox(cfg)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "workload-image.log"
    image_name = cfg.workload.image_name
    command = list(cfg.workload.command)
    inputs = {"format": FORMAT_VERSION,
              "assets": digest_tree(WORKLOAD_ASSETS),
              "busybox": digest_file(busybox), "gcc": gcc_version(log_path),
              "image_name": image_name, "command": command}

    def build(tmp: Path) -> dict[str, Any]:
        log.info("workload image: building %s from %s", image_name, busybox)
        wrapper = tmp / WRAPPER
        compile_wrapper(WORKLOAD_ASSETS / "cedana.c", wrapper, log_path)
        script = tmp / "test.sh"
        shutil.copyfile(WORKLOAD_ASSETS / "test.sh", script)
        write_layer(tmp / LAYER_TAR, busybox,
                    busybox_applets(busybox, log_path), wrapper, script)
        script.unlink()
        digests = write_archive(tmp / IMAGE_TAR, tmp / LAYER_TAR,
                                image_name, command)
        log.info("workload image: %s is %s", image_name,
                 digests["image_digest"])
        return {"image": IMAGE_TAR, "layer": LAYER_TAR,
                "image_name": image_name, **digests,
                "busybox_version": busybox_version(busybox, log_path)}

    return cache.obtain("workload-image", inputs, build, log_path)
