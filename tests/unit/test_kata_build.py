"""Kata profile builders, pinned against stand-ins of the kata tools."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from katacr.builders import kata
from katacr.cache import Cache
from katacr.config import Config, KataConfig
from katacr.errors import StageError


def kata_config(repo: Path, tmp_path: Path, **kw: str) -> Config:
    return Config(kata=dataclasses.replace(
        KataConfig(), checkout=str(repo), kernel_version="6.1.62", **kw),
        log_dir=str(tmp_path / "logs"))


def test_kernel_runs_setup_build_install_with_the_criu_config(
        standins, kata_checkout: Path, tmp_path: Path) -> None:
    cfg = kata_config(kata_checkout, tmp_path)
    art = kata.build_kata_kernel(cfg, Cache(tmp_path / "cache"), tmp_path)

    calls = [c for c in standins() if c[0] == "build-kernel.sh"]
    merged = calls[1][calls[1].index("-c") + 1]
    assert calls == [
        ["build-kernel.sh", "-v", "6.1.62", "setup"],
        ["build-kernel.sh", "-v", "6.1.62", "-c", merged, "-f", "setup"],
        ["build-kernel.sh", "-v", "6.1.62", "-c", merged, "build"],
        ["build-kernel.sh", "-v", "6.1.62", "-c", merged, "install"],
    ]
    config = (art.path / "config").read_text()
    assert "CONFIG_CHECKPOINT_RESTORE=y" in config
    assert "# CONFIG_CHECKPOINT_RESTORE is not set" not in config
    assert "CONFIG_VIRTIO=y" in config
    assert (art.path / "vmlinux.container").read_text() == "vmlinux"


def test_kernel_missing_an_option_after_build_fails_naming_it(
        standins, kata_checkout: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATACR_STANDIN_DROP", "CONFIG_UNIX_DIAG")
    cfg = kata_config(kata_checkout, tmp_path)
    with pytest.raises(StageError, match="FAIL at build-kernel: .*"
                       "CONFIG_UNIX_DIAG"):
        kata.build_kata_kernel(cfg, Cache(tmp_path / "cache"), tmp_path)
    assert [c[-1] for c in standins()] == ["setup", "setup", "build"]


def test_kernel_setup_failure_names_stage_and_status(
        standins, kata_checkout: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATACR_STANDIN_FAIL", "build-kernel.sh:setup:3")
    cfg = kata_config(kata_checkout, tmp_path)
    with pytest.raises(StageError) as err:
        kata.build_kata_kernel(cfg, Cache(tmp_path / "cache"), tmp_path)
    assert "FAIL at build-kernel" in str(err.value)
    assert err.value.returncode == 3


def test_missing_checkout_names_the_config_key(tmp_path: Path) -> None:
    cfg = kata_config(tmp_path / "nowhere", tmp_path)
    with pytest.raises(Exception, match="kata.checkout: not a "
                       "kata-containers checkout"):
        kata.build_kata_kernel(cfg, Cache(tmp_path / "cache"), tmp_path)


def test_rootfs_runs_osbuilder_in_docker_and_adds_harness_files(
        standins, kata_checkout: Path, tmp_path: Path) -> None:
    cedana = Path(__file__).resolve().parent.parent / "stand-ins" / "cedana"
    agent = tmp_path / "kata-agent"
    agent.write_text("agent")
    cfg = kata_config(kata_checkout, tmp_path, cedana=str(cedana),
                      agent_source_bin=str(agent), os_version="noble",
                      docker_host="unix:///tmp/katacr-unit/docker.sock")
    art = kata.build_kata_rootfs(cfg, Cache(tmp_path / "cache"), tmp_path)

    calls = standins()
    assert calls[0] == ["rootfs.sh", "ubuntu"]
    env = calls[1][1]
    assert env["USE_DOCKER"] == "true" and env["OS_VERSION"] == "noble"
    assert env["AGENT_SOURCE_BIN"] == str(agent)
    assert env["DOCKER_HOST"] == "unix:///tmp/katacr-unit/docker.sock"
    tree = art.path / "tree"
    assert (tree / "bin" / "build_start_daemon.sh").stat().st_mode & 0o111
    assert (tree / "cedana").read_bytes() == cedana.read_bytes()


def test_image_builder_gets_output_and_rootfs(standins, kata_checkout: Path,
                                              tmp_path: Path) -> None:
    cfg = kata_config(kata_checkout, tmp_path)
    cache = Cache(tmp_path / "cache")
    rootfs = kata.build_kata_rootfs(cfg, cache, tmp_path)
    image = kata.build_kata_image(cfg, cache, rootfs, tmp_path)

    call = standins()[-1]
    assert call == ["image_builder.sh", "-o",
                    call[2], str(rootfs.path / "tree")]
    assert call[2].endswith("/kata-containers.img")
    assert (image.path / "kata-containers.img").is_file()


BASE_TOML = """\
# installed default
[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"
kernel = "/usr/share/kata-containers/vmlinux.container"
image = "/usr/share/kata-containers/kata-containers.img"
initrd = "/usr/share/kata-containers/kata-containers-initrd.img"

[agent.kata]
# debug_console_enabled = true
enable_debug = false
"""


def test_runtime_config_points_at_our_kernel_and_image_with_console(
        tmp_path: Path) -> None:
    base = tmp_path / "configuration-qemu.toml"
    base.write_text(BASE_TOML)
    cfg = Config(kata=KataConfig(base_configuration=str(base)))
    out = kata.write_runtime_config(cfg, Path("/c/vmlinux"),
                                    Path("/c/kata.img"),
                                    tmp_path / "run" / "config.toml")
    import tomllib
    data = tomllib.loads(out.read_text())
    assert data["hypervisor"]["qemu"]["kernel"] == "/c/vmlinux"
    assert data["hypervisor"]["qemu"]["image"] == "/c/kata.img"
    assert data["agent"]["kata"]["debug_console_enabled"] is True
    assert "initrd" not in data["hypervisor"]["qemu"], "initrd or image"
    assert "# installed default" in out.read_text()
    assert base.read_text() == BASE_TOML, "host default must stay untouched"


def test_workload_image_is_docker_built_and_saved(standins,
                                                  tmp_path: Path) -> None:
    cfg = Config()
    art = kata.build_docker_workload(cfg, Cache(tmp_path / "cache"),
                                     tmp_path)
    calls = [c for c in standins() if c[0] == "docker"]
    assert calls[0][:3] == ["docker", "build", "-t"]
    assert calls[0][3] == cfg.workload.image_name
    assert calls[1] == ["docker", "save", "-o",
                        calls[1][3], cfg.workload.image_name]
    assert (art.path / "image.tar").is_file()


def test_merge_fragment_overrides_kata_values() -> None:
    merged = kata.merge_fragment(
        "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n",
        "# comment\nCONFIG_B=y\nCONFIG_C=y\n")
    assert merged.splitlines() == ["CONFIG_A=y", "CONFIG_B=y", "CONFIG_C=y"]
