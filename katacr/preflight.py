"""Kata host preflight: every prerequisite checked, all reported at once.

Nothing is built on a Kata host before this passes; on a host that is
not one, the kata tests skip with the list as the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

import tomllib

from katacr import commands
from katacr.builders.kata import docker_env
from katacr.config import Config
from katacr.errors import KatacrError
from katacr.platforms.accel import kvm_device_usable

VHOST_VSOCK = Path("/dev/vhost-vsock")
CHECK_TIMEOUT_S = 60


@dataclass
class Problem:
    """One missing prerequisite and how to fix it."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what} (fix: {self.fix})"


def _socket_reachable(path: Path) -> str | None:
    try:
        if not stat.S_ISSOCK(path.stat().st_mode):
            return f"{path} is not a socket"
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        try:
            sock.connect(str(path))
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
    return None


def check_containerd(cfg: Config) -> list[Problem]:
    address = cfg.kata.containerd_address
    why = _socket_reachable(Path(address)) if address else \
        "kata.containerd_address not set"
    return [Problem(f"containerd socket not reachable: {why}",
                    "start containerd, and set kata.containerd_address to "
                    "its socket (e.g. /run/containerd/containerd.sock)")] \
        if why else []


def check_tools(cfg: Config) -> list[Problem]:
    problems = []
    for tool, key in (("containerd-shim-kata-v2", None),
                      (cfg.kata.kata_runtime, "kata.kata_runtime"),
                      ("ctr", None)):
        if not shutil.which(tool):
            where = f", or set {key}" if key else ""
            problems.append(Problem(f"{tool} not on PATH",
                                    f"install Kata Containers{where}"))
    return problems


def check_kata_runtime(cfg: Config, log_path: Path | None) -> list[Problem]:
    tool = shutil.which(cfg.kata.kata_runtime)
    if not tool:
        return []
    try:
        res = commands.run([tool, "check"], stage="preflight",
                           timeout=CHECK_TIMEOUT_S, check=False,
                           capture=True, log_path=log_path)
    except KatacrError as exc:
        return [Problem(f"kata-runtime check did not finish: {exc}",
                        "see kata-runtime check's output")]
    if res.returncode != 0:
        return [Problem(f"`kata-runtime check` failed with status "
                        f"{res.returncode}", "run it by hand and fix what "
                        "it reports")]
    return []


def check_virtualization() -> list[Problem]:
    problems = []
    why = kvm_device_usable()
    if why:
        problems.append(Problem(f"KVM not usable: {why}",
                                "run on a host with (nested) KVM"))
    if not VHOST_VSOCK.exists():
        problems.append(Problem(f"{VHOST_VSOCK} missing: Kata talks to "
                                "its agent over vsock", "modprobe "
                                "vhost_vsock"))
    return problems


def debug_console_problem(path: Path) -> Problem | None:
    """The config lacks ``[agent.kata] debug_console_enabled = true``."""
    key = "[agent.kata] debug_console_enabled"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return Problem(f"Kata configuration missing: {path}",
                       "install Kata, or set kata.base_configuration")
    except tomllib.TOMLDecodeError as exc:
        return Problem(f"Kata configuration {path} is not valid TOML: {exc}",
                       "repair the file")
    if data.get("agent", {}).get("kata", {}).get("debug_console_enabled") \
            is not True:
        return Problem(f"{path}: {key} is not true (kata-runtime exec "
                       "then times out connecting to vsock port 1026)",
                       f"set {key} = true, or leave kata.configuration "
                       "empty so the harness generates one")
    return None


def check_configuration(cfg: Config) -> list[Problem]:
    if cfg.kata.configuration:
        problem = debug_console_problem(Path(cfg.kata.configuration))
        return [problem] if problem else []
    base = Path(cfg.kata.base_configuration)
    if not base.is_file():
        return [Problem(f"Kata base configuration missing: {base}",
                        "install Kata, or set kata.base_configuration")]
    return []


def check_docker(cfg: Config, log_path: Path | None) -> list[Problem]:
    fix = ("start dockerd, and set kata.docker_host to its address "
           "(e.g. unix:///var/run/docker.sock)")
    host = cfg.kata.docker_host
    why = "kata.docker_host not set" if not host else \
        _socket_reachable(Path(host.removeprefix("unix://"))) \
        if host.startswith("unix://") else None
    if why:
        return [Problem(f"Docker engine not reachable: {why} (osbuilder "
                        "and the workload image build in Docker)", fix)]
    tool = shutil.which(cfg.kata.docker)
    if not tool:
        return [Problem(f"{cfg.kata.docker} not on PATH",
                        "install Docker, or set kata.docker")]
    res = commands.run([tool, "info"], stage="preflight",
                       timeout=CHECK_TIMEOUT_S, check=False, capture=True,
                       log_path=log_path, env=docker_env(cfg))
    if res.returncode != 0:
        return [Problem(f"Docker engine at {host} not reachable (`docker "
                        f"info` failed with status {res.returncode})", fix)]
    return []


def check_inputs(cfg: Config) -> list[Problem]:
    problems = []
    cedana = Path(cfg.kata.cedana) if cfg.kata.cedana else None
    if cedana is None or not os.access(cedana, os.X_OK):
        problems.append(Problem(
            f"cedana binary missing: {cfg.kata.cedana or '(not set)'}",
            "build cedana and set kata.cedana"))
    checkout = Path(cfg.kata.checkout) if cfg.kata.checkout else None
    if checkout is None or not (checkout / "tools" / "osbuilder").is_dir():
        problems.append(Problem(
            "kata-containers checkout missing: "
            f"{cfg.kata.checkout or '(not set)'}",
            "clone the users' fork, check out kata.branch, set "
            "kata.checkout"))
    return problems


def kata_problems(cfg: Config, log_path: Path | None = None
                  ) -> list[Problem]:
    """Every missing prerequisite of the kata profile, each with its fix."""
    return [*check_containerd(cfg), *check_tools(cfg),
            *check_kata_runtime(cfg, log_path), *check_virtualization(),
            *check_configuration(cfg), *check_docker(cfg, log_path),
            *check_inputs(cfg)]


def report(problems: list[Problem]) -> str:
    """The problems as one message, one per line."""
    return "not a Kata host:\n" + "\n".join(f"  - {p}" for p in problems)
