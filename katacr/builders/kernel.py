"""Guest kernel: unpack the source, merge the config fragments, build.

The config starts from ``allnoconfig`` and adds the fragments with the
kernel's own ``scripts/kconfig/merge_config.sh``, then ``olddefconfig``:
no step can stop at an interactive question.  A Kata guest loads no
modules, so every option asked for must end up ``=y``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from katacr import commands
from katacr.cache import Artifact, Cache, digest_file
from katacr.config import Config
from katacr.errors import ConfigError, StageError

log = logging.getLogger("katacr.kernel")

# What CRIU needs whatever the fragments say (criu.org "Linux kernel").
CRIU_REQUIRED = (
    "CHECKPOINT_RESTORE", "NAMESPACES", "UTS_NS", "IPC_NS", "PID_NS",
    "NET_NS", "FHANDLE", "EVENTFD", "EPOLL", "UNIX_DIAG", "INET_DIAG",
    "INET_UDP_DIAG", "PACKET_DIAG", "NETLINK_DIAG", "NETFILTER_XT_MARK",
    "TUN",
)

_SET = re.compile(r"^CONFIG_(\w+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_(\w+) is not set$")


@dataclass
class ConfigProblem:
    option: str
    wanted: str
    found: str
    source: str

    def __str__(self) -> str:
        return (f"CONFIG_{self.option} (wanted {self.wanted}, found "
                f"{self.found}; {self.source})")


def parse_config(text: str) -> dict[str, str]:
    """Map option name (no CONFIG_ prefix) to value; unset maps to 'n'."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if m := _SET.match(line):
            values[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            values[m.group(1)] = "n"
    return values


def check_config(final: dict[str, str],
                 fragments: dict[str, dict[str, str]]) -> list[ConfigProblem]:
    """List every CRIU requirement or fragment request the config misses."""
    problems = [ConfigProblem(o, "y", final.get(o, "n"), "required by CRIU")
                for o in CRIU_REQUIRED if final.get(o, "n") != "y"]
    named = {p.option for p in problems}
    for name, wanted in fragments.items():
        for option, value in wanted.items():
            found = final.get(option, "n")
            if option in named:
                continue
            if value == "m":
                problems.append(ConfigProblem(
                    option, "y", "'=m' requested",
                    f"{name}: the guest loads no modules"))
            elif value != found:
                problems.append(ConfigProblem(option, value, found, name))
    return problems


def verify_config(config_path: Path, fragment_paths: list[Path],
                  stage: str = "build-kernel") -> None:
    """Fail, listing each option, unless the config has what was asked."""
    final = parse_config(config_path.read_text())
    fragments = {p.name: parse_config(p.read_text()) for p in fragment_paths}
    problems = check_config(final, fragments)
    if problems:
        raise StageError(stage, "kernel config lacks required options: "
                         + "; ".join(str(p) for p in problems),
                         log_path=config_path)


def _source_inputs(source: Path) -> dict[str, str]:
    if source.is_dir():
        makefile = (source / "Makefile").read_text()[:300]
        return {"source_dir": str(source), "makefile_head": makefile}
    return {"source_tarball": digest_file(source)}


def unpack_source(cfg: Config, cache: Cache, log_dir: Path) -> Path:
    """Return a kernel source tree: the configured directory, or unpacked."""
    source = Path(cfg.kernel.source).expanduser()
    if source.is_dir():
        if not (source / "scripts/kconfig/merge_config.sh").exists():
            raise ConfigError(f"kernel.source: not a kernel tree: {source}")
        return source
    log_path = log_dir / "kernel-source.log"

    def build(tmp: Path) -> dict:
        commands.run(["tar", "-xf", source, "-C", tmp,
                      "--strip-components=1"], stage="unpack-kernel",
                     timeout=900, log_path=log_path)
        return {"tarball": str(source)}

    art = cache.obtain("kernel-source", _source_inputs(source), build,
                       log_path)
    return art.path


def configure(src: Path, out: Path, fragments: list[Path],
              log_path: Path) -> Path:
    """Write ``out/.config``: allnoconfig + fragments + olddefconfig."""
    out.mkdir(parents=True, exist_ok=True)
    commands.run([src / "scripts/kconfig/merge_config.sh", "-n", "-O", out,
                  *fragments], stage="configure-kernel", timeout=600,
                 log_path=log_path, cwd=src)
    commands.run(["make", "-C", src, f"O={out}", "olddefconfig"],
                 stage="configure-kernel", timeout=600, log_path=log_path)
    return out / ".config"


def compile_kernel(src: Path, out: Path, jobs: int, timeout: int,
                   log_path: Path) -> str:
    """Build ``vmlinux`` in *out*; return the kernel release string."""
    commands.run(["make", "-C", src, f"O={out}", f"-j{jobs}", "vmlinux"],
                 stage="build-kernel", timeout=timeout, log_path=log_path)
    res = commands.run(["make", "-s", "-C", src, f"O={out}",
                        "kernelrelease"], stage="build-kernel", timeout=120,
                       log_path=log_path, capture=True)
    return res.stdout.strip().splitlines()[-1]


def _tool_versions() -> dict[str, str]:
    versions = {}
    for tool in ("gcc", "make", "ld"):
        res = commands.run([commands.which(tool, "to build the kernel"),
                            "--version"], stage="build-kernel", timeout=30,
                           capture=True)
        versions[tool] = res.stdout.splitlines()[0]
    for tool in ("flex", "bison", "bc"):
        commands.which(tool, "to build the kernel")
    return versions


def build_kernel(cfg: Config, cache: Cache, log_dir: Path) -> Artifact:
    """Return the cached guest kernel for this config, building if needed.

    The artifact holds ``vmlinux`` (PVH-bootable ELF) and ``config``.
    """
    fragments = [Path(f) for f in cfg.kernel.fragments]
    src = unpack_source(cfg, cache, log_dir)
    inputs = {
        **_source_inputs(Path(cfg.kernel.source).expanduser()),
        "fragments": {f.name: digest_file(f) for f in fragments},
        "tools": _tool_versions(),
    }
    log_path = log_dir / "kernel.log"
    jobs = cfg.kernel.jobs or os.cpu_count() or 1

    def build(tmp: Path) -> dict:
        out = tmp / "build"
        config = configure(src, out, fragments, log_path)
        verify_config(config, fragments, stage="configure-kernel")
        release = compile_kernel(src, out, jobs, cfg.kernel.timeout,
                                 log_path)
        verify_config(config, fragments)
        shutil.copy2(out / "vmlinux", tmp / "vmlinux")
        shutil.copy2(config, tmp / "config")
        shutil.rmtree(out)
        return {"release": release}

    art = cache.obtain("kernel", inputs, build, log_path)
    log.info("kernel %s: %s", art.manifest["release"], art.path / "vmlinux")
    return art

