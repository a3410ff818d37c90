"""Configuration: defaults, file, environment, overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from katacr import config
from katacr.errors import ConfigError


def test_defaults_are_the_local_profile() -> None:
    cfg = config.load(environ={}, check_paths=False)
    assert cfg.profile == "local"
    assert cfg.checkpoint.engine == "criu"
    assert cfg.cache_path == Path("~/.cache/katacr").expanduser()


def test_file_then_env_then_override_precedence(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text("vm:\n  memory_mb: 1536\n  cpus: 2\n")
    cfg = config.load(f, ["vm.cpus=3"],
                      environ={"KATACR_VM_MEMORY_MB": "2048"},
                      check_paths=False)
    assert cfg.vm.memory_mb == 2048
    assert cfg.vm.cpus == 3


def test_relative_paths_in_a_file_are_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "linux").mkdir()
    f = tmp_path / "run.yaml"
    f.write_text("kernel:\n  source: linux\ncache_dir: cache\n")
    cfg = config.load(f, environ={}, check_paths=False)
    assert cfg.kernel.source == str(tmp_path / "linux")
    assert cfg.cache_dir == str(tmp_path / "cache")


@pytest.mark.parametrize("text,message", [
    ("vm:\n  memroy_mb: 1\n", "unknown key 'vm.memroy_mb'"),
    ("vm:\n  memory_mb: lots\n", "vm.memory_mb: expected an integer"),
    ("vm: 3\n", "vm: expected a mapping"),
    ("profile: cloud\n", "profile: 'cloud' is not one of local, kata"),
    ("kernel:\n  source: /no/such/linux.tar.xz\n",
     "kernel.source: path does not exist: /no/such/linux.tar.xz"),
    ("rootfs:\n  packages: criu\n", None),
    ("[1, 2]\n", "expected a mapping at top level"),
    ("vm: {\n", "not valid YAML"),
])
def test_bad_file_gives_one_line_error_naming_key_and_file(
        tmp_path: Path, text: str, message: str | None) -> None:
    f = tmp_path / "run.yaml"
    f.write_text(text)
    if message is None:
        assert config.load(f, environ={}, check_paths=False).rootfs.packages == ["criu"]
        return
    with pytest.raises(ConfigError) as err:
        config.load(f, environ={})
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    if "does not exist" not in message and "not one of" not in message:
        assert str(f) in str(err.value)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found: .*nope"):
        config.load(tmp_path / "nope.yaml", environ={}, check_paths=False)


def test_override_without_equals_is_refused() -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        config.load(None, ["vm.cpus"], environ={}, check_paths=False)


def test_env_names_follow_keys() -> None:
    assert config.env_name("vm.boot_timeout") == "KATACR_VM_BOOT_TIMEOUT"


def test_misspelled_environment_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="environment KATACR_VM_MEMROY_MB:"
                       " no such config key"):
        config.load(environ={"KATACR_VM_MEMROY_MB": "1"}, check_paths=False)
