"""One run's configuration: built-in defaults, a YAML file, overrides.

Precedence, lowest first: defaults (the ``local`` profile), the YAML file,
``KATACR_<SECTION>_<KEY>`` environment variables, ``--katacr-set
section.key=value`` options.  Relative paths in a file are relative to
that file; relative default paths are relative to the repository.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from katacr.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "assets"


@dataclass
class KernelConfig:
    source: str = "/usr/src/linux-source-6.1.tar.xz"
    fragments: list[str] = field(default_factory=lambda: [
        str(ASSETS / "kernel-config" / "guest.conf"),
        str(ASSETS / "kernel-config" / "criu.conf")])
    jobs: int = 0
    timeout: int = 3600


@dataclass
class RootfsConfig:
    suite: str = "bookworm"
    mirror: str = ""
    packages: list[str] = field(default_factory=lambda: [
        "criu", "qemu-guest-agent", "util-linux", "procps", "iproute2",
        "tar", "kmod"])
    cedana_binary: str = ""
    criu_source: str = ""
    timeout: int = 1800


@dataclass
class ImageConfig:
    size_mb: int = 1024


@dataclass
class WorkloadConfig:
    busybox: str = "/bin/busybox"
    command: list[str] = field(default_factory=lambda: ["cedana", "test.sh"])
    image_name: str = "docker.io/library/my-busybox:latest"


@dataclass
class VmConfig:
    qemu: str = "qemu-system-x86_64"
    accel: str = "auto"
    kvm_probe_timeout: int = 20
    cpu_model: str = "max"
    cpus: int = 1
    memory_mb: int = 1024
    boot_timeout: int = 90
    command_timeout: int = 120


@dataclass
class CheckpointConfig:
    engine: str = "criu"
    dump_timeout: int = 180
    restore_timeout: int = 180
    transfer_timeout: int = 300
    counter_before_dump: int = 10
    max_gap_ticks: int = 6
    advance_seconds: float = 3.0


@dataclass
class KataConfig:
    """The kata profile: a Kata host with containerd, Docker and cedana."""

    checkout: str = ""
    branch: str = "rootfs-kernel"
    kernel_version: str = ""
    os_distro: str = "ubuntu"
    os_version: str = "jammy"
    agent_source_bin: str = ""
    criu_prebuilt: str = ""
    cedana: str = ""
    # No default daemon: the harness talks only to the ones named here.
    containerd_address: str = ""
    namespace: str = "katacr"
    runtime: str = "io.containerd.kata.v2"
    base_configuration: str = (
        "/opt/kata/share/defaults/kata-containers/configuration-qemu.toml")
    configuration: str = ""
    install_configuration: bool = False
    kata_runtime: str = "kata-runtime"
    kata_ctl: str = "kata-ctl"
    docker: str = "docker"
    docker_host: str = ""
    prompt_timeout: int = 30
    build_timeout: int = 7200


@dataclass
class Config:
    profile: str = "local"
    cache_dir: str = "~/.cache/katacr"
    log_dir: str = str(REPO / "logs")
    keep_images: str = "failed"
    kernel: KernelConfig = field(default_factory=KernelConfig)
    rootfs: RootfsConfig = field(default_factory=RootfsConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    vm: VmConfig = field(default_factory=VmConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    kata: KataConfig = field(default_factory=KataConfig)

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser()


CHOICES = {
    "profile": ("local", "kata"),
    "keep_images": ("always", "failed", "never"),
    "vm.accel": ("auto", "kvm", "tcg"),
    "checkpoint.engine": ("criu", "cedana"),
}
# Checked in this order, so the first error is predictable.
PATH_KEYS = ("kernel.source", "kernel.fragments", "rootfs.cedana_binary",
             "rootfs.criu_source", "workload.busybox")
# Paths resolved against the config file's directory (the kata ones are
# checked by the kata preflight, not here).
RELATIVE_KEYS = (*PATH_KEYS, "cache_dir", "log_dir", "kata.checkout",
                 "kata.cedana", "kata.agent_source_bin", "kata.criu_prebuilt",
                 "kata.base_configuration", "kata.configuration")


def _fields(obj: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def _coerce(value: Any, kind: Any, key: str, origin: str) -> Any:
    """Return *value* as *kind*, or fail naming the key and where it came from."""
    wrong = ConfigError(f"{origin}: {key}: expected {_kind_name(kind)}, "
                        f"got {value!r}")
    if typing.get_origin(kind) is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise wrong
        return [_coerce(v, str, key, origin) for v in value]
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise wrong
        return value
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise wrong
        try:
            number = kind(value)
        except ValueError:
            raise wrong from None
        if kind is int and isinstance(value, float) and value != number:
            raise wrong
        return number
    if kind is str:
        if isinstance(value, (dict, list)) or value is None:
            raise wrong
        return str(value)
    raise wrong


def _kind_name(kind: Any) -> str:
    if typing.get_origin(kind) is list:
        return "a list of strings"
    return {int: "an integer", float: "a number", str: "a string",
            bool: "true or false"}.get(kind, str(kind))


def _apply(obj: Any, data: Mapping[str, Any], origin: str,
           prefix: str = "", base: Path | None = None) -> None:
    """Set *data* onto the dataclass *obj*, checking every key and type."""
    hints = typing.get_type_hints(type(obj))
    known = _fields(obj)
    for name, value in data.items():
        key = prefix + str(name)
        if name not in known:
            raise ConfigError(f"{origin}: unknown key {key!r}")
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{origin}: {key}: expected a mapping, "
                                  f"got {value!r}")
            _apply(getattr(obj, name), value, origin, key + ".", base)
            continue
        value = _coerce(value, kind, key, origin)
        if base is not None and key in RELATIVE_KEYS:
            value = _resolve(value, base)
        setattr(obj, name, value)


def _resolve(value: Any, base: Path) -> Any:
    if isinstance(value, list):
        return [_resolve(v, base) for v in value]
    if not value or value.startswith("~") or os.path.isabs(value):
        return value
    return str(base / value)


def _all_keys(obj: Any, prefix: str = "") -> Iterable[str]:
    for name, f in _fields(obj).items():
        value = getattr(obj, name)
        if dataclasses.is_dataclass(value):
            yield from _all_keys(value, prefix + name + ".")
        else:
            yield prefix + name


def _nest(key: str, value: Any) -> dict[str, Any]:
    head, _, rest = key.partition(".")
    return {head: _nest(rest, value) if rest else value}


def env_name(key: str) -> str:
    """The environment variable that overrides *key*."""
    return "KATACR_" + key.upper().replace(".", "_")


def load(path: str | Path | None = None,
         overrides: Iterable[str] = (),
         environ: Mapping[str, str] | None = None,
         check_paths: bool = True) -> Config:
    """Build the run's configuration; raise :class:`ConfigError` if bad."""
    cfg = Config()
    if path:
        cfg_file = Path(path)
        if not cfg_file.is_file():
            raise ConfigError(f"config file not found: {cfg_file}")
        try:
            data = yaml.safe_load(cfg_file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{cfg_file}: not valid YAML: "
                              f"{str(exc).splitlines()[0]}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cfg_file}: expected a mapping at top level")
        _apply(cfg, data, str(cfg_file), base=cfg_file.resolve().parent)
    environ = os.environ if environ is None else environ
    check_environment(cfg, environ)
    for key in list(_all_keys(cfg)):
        if env_name(key) in environ:
            _apply(cfg, _nest(key, environ[env_name(key)]),
                   f"environment {env_name(key)}", base=Path.cwd())
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--katacr-set {item!r}: expected KEY=VALUE")
        _apply(cfg, _nest(key.strip(), value), f"--katacr-set {key}",
               base=Path.cwd())
    validate(cfg, check_paths)
    return cfg


# KATACR_* variables that are not config keys.
OTHER_VARIABLES = ("KATACR_CONFIG",)
OTHER_PREFIXES = ("KATACR_STANDIN_", "KATACR_PROBE_")


def check_environment(cfg: Config, environ: Mapping[str, str]) -> None:
    """Refuse a KATACR_* variable that overrides nothing (a typo)."""
    known = {env_name(k) for k in _all_keys(cfg)} | set(OTHER_VARIABLES)
    for name in sorted(environ):
        if name.startswith("KATACR_") and name not in known and \
                not name.startswith(OTHER_PREFIXES):
            raise ConfigError(f"environment {name}: no such config key")


def get(cfg: Config, key: str) -> Any:
    """Return the value at dotted *key*."""
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: Config, check_paths: bool = True) -> None:
    """Check choices, ranges and that configured paths exist."""
    for key, allowed in CHOICES.items():
        if get(cfg, key) not in allowed:
            raise ConfigError(f"{key}: {get(cfg, key)!r} is not one of "
                              f"{', '.join(allowed)}")
    for key in _all_keys(cfg):
        value = get(cfg, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value < 0:
                raise ConfigError(f"{key}: must not be negative, got {value}")
    for key in PATH_KEYS if check_paths else ():
        if key == "kernel.source" and cfg.profile == "kata":
            continue  # the kata profile builds from kata.checkout
        value = get(cfg, key)
        for item in value if isinstance(value, list) else [value]:
            if item and not Path(item).expanduser().exists():
                raise ConfigError(f"{key}: path does not exist: {item}")
