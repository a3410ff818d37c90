"""Kata profile builders: the users' kata-containers checkout does the work.

- kernel: ``tools/packaging/kernel/build-kernel.sh`` with Kata's config
  for the version merged with ``assets/kernel-config/criu.conf``, made
  complete with ``olddefconfig`` so ``oldconfig`` has nothing to ask;
- rootfs: ``tools/osbuilder/rootfs-builder/rootfs.sh`` (in Docker), then
  ``/criu``, ``/cedana`` and ``/bin/build_start_daemon.sh`` added;
- image: ``tools/osbuilder/image-builder/image_builder.sh``;
- runtime config: the installed ``configuration-qemu.toml`` with this
  kernel and image and the debug console on, at a harness-owned path;
- workload image: ``docker build`` of ``assets/busybox`` + ``docker save``.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from katacr import commands
from katacr.builders.kernel import verify_config
from katacr.builders.rootfs import INSTALLER
from katacr.builders.workload import WORKLOAD_ASSETS, compile_wrapper
from katacr.cache import Artifact, Cache, digest_path
from katacr.config import ASSETS, Config
from katacr.errors import ConfigError, StageError

log = logging.getLogger("katacr.kata-build")

CRIU_FRAGMENT = ASSETS / "kernel-config" / "criu.conf"
BUILD_KERNEL = "tools/packaging/kernel/build-kernel.sh"
ROOTFS_SH = "tools/osbuilder/rootfs-builder/rootfs.sh"
IMAGE_BUILDER = "tools/osbuilder/image-builder/image_builder.sh"
KERNEL_INSTALLED = "usr/share/kata-containers/vmlinux.container"


def docker_env(cfg: Config) -> dict[str, str]:
    """Point docker, and osbuilder's docker, at ``kata.docker_host``."""
    return {"DOCKER_HOST": cfg.kata.docker_host} if cfg.kata.docker_host \
        else {}


def checkout(cfg: Config) -> Path:
    path = Path(cfg.kata.checkout)
    if not cfg.kata.checkout or not (path / BUILD_KERNEL).is_file():
        raise ConfigError(f"kata.checkout: not a kata-containers checkout: "
                          f"{cfg.kata.checkout or '(not set)'}")
    return path


def checkout_revision(repo: Path, log_path: Path) -> str:
    res = commands.run(["git", "-C", repo, "rev-parse", "HEAD"],
                       stage="inspect-checkout", timeout=30, check=False,
                       capture=True, log_path=log_path)
    return res.stdout.strip() or "unknown"


def merge_fragment(base: str, fragment: str) -> str:
    """Kata's config with every option of *fragment* set its way."""
    options = set(re.findall(r"^(?:# )?(CONFIG_\w+)[= ]", fragment, re.M))
    kept = [ln for ln in base.splitlines()
            if not (m := re.match(r"^(?:# )?(CONFIG_\w+)[= ]", ln))
            or m.group(1) not in options]
    added = [ln for ln in fragment.splitlines()
             if ln.startswith(("CONFIG_", "# CONFIG_"))]
    return "\n".join(kept + added) + "\n"


def _kernel_dir(work: Path) -> Path:
    dirs = sorted(work.glob("kata-linux-*"))
    if not dirs:
        raise StageError("build-kernel", f"build-kernel.sh setup left no "
                         f"kata-linux-* directory in {work}")
    return dirs[-1]


def build_kata_kernel(cfg: Config, cache: Cache, log_dir: Path) -> Artifact:
    """``build-kernel.sh`` setup/build/install with the CRIU fragment."""
    repo = checkout(cfg)
    script = repo / BUILD_KERNEL
    log_path = log_dir / "kata-kernel.log"
    version = ["-v", cfg.kata.kernel_version] if cfg.kata.kernel_version \
        else []
    inputs = {"checkout": checkout_revision(repo, log_path),
              "version": cfg.kata.kernel_version,
              "criu": digest_path(CRIU_FRAGMENT)}

    def step(work: Path, *args: str | Path, env: dict | None = None) -> None:
        commands.run([script, *version, *args], stage="build-kernel",
                     timeout=cfg.kata.build_timeout, log_path=log_path,
                     cwd=work, env=env)

    def build(tmp: Path) -> dict:
        work = tmp / "work"
        work.mkdir()
        step(work, "setup")
        kdir = _kernel_dir(work)
        merged = tmp / "kata-criu.config"
        merged.write_text(merge_fragment((kdir / ".config").read_text(),
                                         CRIU_FRAGMENT.read_text()))
        # A complete config: oldconfig then has no question to ask.
        commands.run(["make", "-C", kdir, f"KCONFIG_CONFIG={merged}",
                      "olddefconfig"], stage="build-kernel", timeout=600,
                     log_path=log_path)
        step(work, "-c", merged, "-f", "setup")
        step(work, "-c", merged, "build")
        verify_config(_kernel_dir(work) / ".config", [CRIU_FRAGMENT])
        step(work, "-c", merged, "install",
             env={"DESTDIR": str(tmp / "install"), "PREFIX": "/usr"})
        installed = tmp / "install" / KERNEL_INSTALLED
        if not installed.exists():
            raise StageError("build-kernel", f"install left no {installed}",
                             log_path=log_path)
        shutil.copy2(installed, tmp / "vmlinux.container")
        shutil.copy2(merged, tmp / "config")
        shutil.rmtree(work)
        shutil.rmtree(tmp / "install")
        return {"kernel": "vmlinux.container"}

    return cache.obtain("kata-kernel", inputs, build, log_path)


def add_harness_files(tree: Path, cfg: Config) -> None:
    """What the manual flow adds to the osbuilder rootfs."""
    installer = tree / "bin" / INSTALLER.name
    installer.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(INSTALLER, installer)
    installer.chmod(0o755)
    if cfg.kata.cedana:
        shutil.copy2(cfg.kata.cedana, tree / "cedana")
        (tree / "cedana").chmod(0o755)
    if cfg.kata.criu_prebuilt:
        dest = tree / "usr" / "local" / "bin" / "criu"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cfg.kata.criu_prebuilt, dest)
        dest.chmod(0o755)
    elif cfg.rootfs.criu_source:
        shutil.copytree(cfg.rootfs.criu_source, tree / "criu",
                        symlinks=True)


def build_kata_rootfs(cfg: Config, cache: Cache, log_dir: Path) -> Artifact:
    """``USE_DOCKER=true rootfs.sh <distro>`` plus the harness's files."""
    repo = checkout(cfg)
    log_path = log_dir / "kata-rootfs.log"
    inputs = {"checkout": checkout_revision(repo, log_path),
              "distro": cfg.kata.os_distro, "os": cfg.kata.os_version,
              "agent": digest_path(Path(cfg.kata.agent_source_bin))
              if cfg.kata.agent_source_bin else "",
              "installer": digest_path(INSTALLER),
              "cedana": digest_path(Path(cfg.kata.cedana))
              if cfg.kata.cedana else "",
              "criu": cfg.kata.criu_prebuilt or cfg.rootfs.criu_source}

    def build(tmp: Path) -> dict:
        tree = tmp / "tree"
        env = {"USE_DOCKER": "true", "OS_VERSION": cfg.kata.os_version,
               "ROOTFS_DIR": str(tree), **docker_env(cfg)}
        if cfg.kata.agent_source_bin:
            env["AGENT_SOURCE_BIN"] = cfg.kata.agent_source_bin
        commands.run([repo / ROOTFS_SH, cfg.kata.os_distro],
                     stage="build-rootfs", timeout=cfg.kata.build_timeout,
                     log_path=log_path, cwd=repo / ROOTFS_SH.rsplit("/", 1)[0],
                     env=env)
        if not (tree / "sbin" / "init").exists() and \
                not (tree / "sbin" / "init").is_symlink():
            raise StageError("build-rootfs", f"rootfs.sh left no "
                             f"{tree}/sbin/init", log_path=log_path)
        add_harness_files(tree, cfg)
        return {"distro": cfg.kata.os_distro}

    return cache.obtain("kata-rootfs", inputs, build, log_path)


def build_kata_image(cfg: Config, cache: Cache, rootfs: Artifact,
                     log_dir: Path) -> Artifact:
    """``USE_DOCKER=true image_builder.sh -o IMG ROOTFS``."""
    repo = checkout(cfg)
    log_path = log_dir / "kata-image.log"

    def build(tmp: Path) -> dict:
        image = tmp / "kata-containers.img"
        commands.run([repo / IMAGE_BUILDER, "-o", image,
                      rootfs.path / "tree"], stage="build-image",
                     timeout=cfg.kata.build_timeout, log_path=log_path,
                     env={"USE_DOCKER": "true", **docker_env(cfg)})
        if not image.is_file():
            raise StageError("build-image", f"image_builder.sh left no "
                             f"{image}", log_path=log_path)
        return {"image": image.name}

    return cache.obtain("kata-image", {"rootfs": rootfs.key}, build,
                        log_path)


def _section_lines(lines: list[str], section: str) -> range | None:
    """The line numbers of ``[section]``'s body, or None if absent."""
    header = f"[{section}]"
    start = next((i for i, ln in enumerate(lines)
                  if ln.strip() == header), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].lstrip().startswith("[")), len(lines))
    return range(start + 1, end)


def _key_pattern(key: str, commented: bool) -> re.Pattern:
    return re.compile(rf"^\s*{'#?' if commented else ''}\s*"
                      rf"{re.escape(key)}\s*=")


def set_toml_key(text: str, section: str, key: str, value: str) -> str:
    """Set ``key = value`` in ``[section]`` of a TOML text, keeping the rest.

    Line-based, so the installed file's comments survive.
    """
    lines = text.splitlines()
    body = _section_lines(lines, section)
    if body is None:
        return "\n".join(lines + [f"[{section}]", f"{key} = {value}"]) + "\n"
    pattern = _key_pattern(key, commented=True)
    for i in body:
        if pattern.match(lines[i]):
            lines[i] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    lines.insert(body.start, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def comment_toml_key(text: str, section: str, key: str) -> str:
    """Comment out ``key`` in ``[section]``, if it is set there."""
    lines = text.splitlines()
    pattern = _key_pattern(key, commented=False)
    for i in _section_lines(lines, section) or ():
        if pattern.match(lines[i]):
            lines[i] = "# " + lines[i]
    return "\n".join(lines) + "\n"


def write_runtime_config(cfg: Config, kernel: Path, image: Path,
                         dest: Path) -> Path:
    """This run's ``configuration-qemu.toml``, at a harness-owned path."""
    base = Path(cfg.kata.base_configuration)
    if not base.is_file():
        raise ConfigError(f"kata.base_configuration: not found: {base}")
    text = base.read_text()
    text = set_toml_key(text, "hypervisor.qemu", "kernel", f'"{kernel}"')
    text = set_toml_key(text, "hypervisor.qemu", "image", f'"{image}"')
    # Kata refuses a config with both an initrd and an image.
    text = comment_toml_key(text, "hypervisor.qemu", "initrd")
    text = set_toml_key(text, "agent.kata", "debug_console_enabled", "true")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    if cfg.kata.install_configuration:
        shutil.copy2(dest, base)
        log.warning("installed %s over %s (kata.install_configuration)",
                    dest, base)
    return dest


def build_docker_workload(cfg: Config, cache: Cache,
                          log_dir: Path) -> Artifact:
    """``docker build`` of assets/busybox, ``docker save`` to image.tar."""
    log_path = log_dir / "kata-workload-image.log"
    docker = cfg.kata.docker
    name = cfg.workload.image_name
    inputs = {"assets": digest_path(WORKLOAD_ASSETS), "name": name}

    def build(tmp: Path) -> dict:
        context = tmp / "context"
        shutil.copytree(WORKLOAD_ASSETS, context)
        compile_wrapper(context / "cedana.c", context / "cedana", log_path)
        commands.run([docker, "build", "-t", name, context],
                     stage="build-workload-image", timeout=1800,
                     log_path=log_path, env=docker_env(cfg))
        commands.run([docker, "save", "-o", tmp / "image.tar", name],
                     stage="build-workload-image", timeout=600,
                     log_path=log_path, env=docker_env(cfg))
        shutil.rmtree(context)
        return {"image_name": name, "image_digest": "sha256:" +
                digest_path(tmp / "image.tar")}

    return cache.obtain("kata-workload-image", inputs, build, log_path)
