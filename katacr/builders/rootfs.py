"""Guest rootfs: a debootstrapped Debian tree plus the harness's guest files.

Two cached layers: ``rootfs-base`` (debootstrap, slow, rarely changes)
and ``rootfs`` (base + init, container helpers, the installer at
``/bin/build_start_daemon.sh``, ``/cedana`` and ``/criu`` when
configured).
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from katacr import commands
from katacr.cache import Artifact, Cache, digest_path
from katacr.config import ASSETS, Config
from katacr.errors import ConfigError

log = logging.getLogger("katacr.rootfs")

APT_SOURCES = Path("/etc/apt")
INSTALLER = ASSETS / "build_start_daemon.sh"
GUEST_FILES = ASSETS / "guest"
# Where each guest file goes in the rootfs.
GUEST_LAYOUT = {
    "init": "sbin/katacr-init",
    "container-run": "usr/libexec/katacr/container-run",
    "container-init": "usr/libexec/katacr/container-init",
}
# Mount points the guest needs on its read-only root.
MOUNT_POINTS = ("mnt/katacr", "run", "tmp", "dev/shm")


def _apt_entries(etc: Path) -> list[tuple[str, list[str]]]:
    """Every (uri, suites) of a ``deb`` source in one-line or deb822 form."""
    entries = []
    files = [etc / "sources.list", *sorted(etc.glob("sources.list.d/*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza,
                                         re.M))
                if "deb" not in fields.get("Types", "").split():
                    continue
                if fields.get("Enabled", "yes").lower() == "no":
                    continue
                for uri in fields.get("URIs", "").split():
                    entries.append((uri, fields.get("Suites", "").split()))
        elif path.suffix in ("", ".list"):
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb":
                    entries.append((words[1], [words[2]]))
    return entries


def find_mirror(suite: str, etc: Path = APT_SOURCES) -> str:
    """The Debian mirror the host's apt uses that can serve *suite*."""
    entries = [(u, s) for u, s in _apt_entries(etc)
               if "security" not in u and u.startswith(("http", "file"))]
    for uri, suites in entries:
        if suite in suites:
            return uri
    for uri, _ in entries:
        if uri.rstrip("/").endswith("/debian"):
            return uri
    raise ConfigError(f"rootfs.mirror: no Debian mirror for suite {suite!r} "
                      f"in {etc}/sources.list*; set rootfs.mirror")


def build_base(cfg: Config, cache: Cache, log_dir: Path) -> Artifact:
    """debootstrap the base tree (cached by suite, packages, tool)."""
    commands.require_root("debootstrap creates device nodes and "
                          "root-owned files")
    mirror = cfg.rootfs.mirror or find_mirror(cfg.rootfs.suite)
    debootstrap = commands.which("debootstrap", "to build the guest rootfs")
    inputs = {"suite": cfg.rootfs.suite, "mirror": mirror,
              "packages": sorted(cfg.rootfs.packages),
              "debootstrap": commands.package_version("debootstrap")}
    log_path = log_dir / "rootfs-base.log"

    def build(tmp: Path) -> dict:
        tree = tmp / "tree"
        commands.run([debootstrap, "--variant=minbase",
                      "--include=" + ",".join(cfg.rootfs.packages),
                      cfg.rootfs.suite, tree, mirror],
                     stage="build-rootfs", timeout=cfg.rootfs.timeout,
                     log_path=log_path)
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (tree / sub).glob("*"):
                if p.is_file() and p.name != "lock":
                    p.unlink()
        return {"suite": cfg.rootfs.suite}

    return cache.obtain("rootfs-base", inputs, build, log_path)


def _optional_inputs(cfg: Config) -> dict[str, str]:
    inputs = {}
    if cfg.rootfs.cedana_binary:
        inputs["cedana"] = digest_path(Path(cfg.rootfs.cedana_binary))
    if cfg.rootfs.criu_source:
        inputs["criu_source"] = digest_path(Path(cfg.rootfs.criu_source))
    return inputs


def install_guest_files(tree: Path, cfg: Config) -> None:
    """Put the harness's init, helpers, installer and extras in *tree*."""
    for name, dest in GUEST_LAYOUT.items():
        target = tree / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(GUEST_FILES / name, target)
        target.chmod(0o755)
    installer = tree / "bin" / INSTALLER.name
    shutil.copy2(INSTALLER, installer)
    installer.chmod(0o755)
    for mp in MOUNT_POINTS:
        (tree / mp).mkdir(parents=True, exist_ok=True)
    if cfg.rootfs.cedana_binary:
        shutil.copy2(cfg.rootfs.cedana_binary, tree / "cedana")
        (tree / "cedana").chmod(0o755)
    if cfg.rootfs.criu_source:
        shutil.copytree(cfg.rootfs.criu_source, tree / "criu",
                        symlinks=True)


def build_rootfs(cfg: Config, cache: Cache, log_dir: Path) -> Artifact:
    """Return the cached guest rootfs tree (artifact dir ``tree/``)."""
    base = build_base(cfg, cache, log_dir)
    inputs = {"base": base.key, "guest": digest_path(GUEST_FILES),
              "installer": digest_path(INSTALLER), **_optional_inputs(cfg)}
    log_path = log_dir / "rootfs.log"

    def build(tmp: Path) -> dict:
        commands.run(["cp", "-a", "--reflink=auto", base.path / "tree",
                      tmp / "tree"], stage="build-rootfs", timeout=600,
                     log_path=log_path)
        install_guest_files(tmp / "tree", cfg)
        return {"base": base.key,
                "cedana": bool(cfg.rootfs.cedana_binary),
                "criu_source": bool(cfg.rootfs.criu_source)}

    return cache.obtain("rootfs", inputs, build, log_path)
