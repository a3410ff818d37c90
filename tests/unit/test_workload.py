"""The busybox workload image: its layer, its archive and the wrapper."""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from katacr.builders import workload
from katacr.builders.workload import build_workload_image, compile_wrapper
from katacr.cache import Artifact, Cache
from katacr.config import Config
from katacr.errors import ConfigError, MissingTool

SCRIPT = workload.WORKLOAD_ASSETS / "test.sh"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    base = tmp_path_factory.mktemp("workload")
    return build_workload_image(Config(), Cache(base / "cache"),
                                base / "logs")


@pytest.fixture(scope="module")
def layer(image: Artifact) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(image.path / "layer.tar") as tar:
        return {m.name: m for m in tar.getmembers()}


@pytest.fixture(scope="module")
def wrapper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wrapper") / "cedana"
    compile_wrapper(workload.WORKLOAD_ASSETS / "cedana.c", out,
                    out.parent / "gcc.log")
    return out


def test_layer_holds_busybox_wrapper_and_script(
        layer: dict[str, tarfile.TarInfo]) -> None:
    for name in ("bin/busybox", "bin/cedana", "bin/test.sh"):
        assert layer[name].isreg(), name
        assert layer[name].mode == 0o755, name


def test_layer_links_every_busybox_applet(
        layer: dict[str, tarfile.TarInfo]) -> None:
    applets = subprocess.run(["/bin/busybox", "--list"], check=True,
                             capture_output=True, text=True).stdout.split()
    for applet in set(applets) - {"busybox"}:
        assert layer[f"bin/{applet}"].issym(), applet
        assert layer[f"bin/{applet}"].linkname == "busybox"


def test_layer_has_empty_runtime_dirs(
        layer: dict[str, tarfile.TarInfo]) -> None:
    for name in ("proc", "dev", "sys", "tmp", "etc", "root", "run", "var"):
        assert layer[name].isdir(), name
        assert not [n for n in layer if n.startswith(name + "/")], name
    assert layer["tmp"].mode == 0o1777
    assert layer["root"].mode == 0o700


def test_layer_entries_are_sorted_root_owned_and_undated(
        image: Artifact) -> None:
    with tarfile.open(image.path / "layer.tar") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "root", "root")
        assert m.mtime == workload.MTIME


def test_test_script_is_the_asset_and_executable(image: Artifact) -> None:
    with tarfile.open(image.path / "layer.tar") as tar:
        info = tar.getmember("bin/test.sh")
        data = tar.extractfile(info).read()
    assert info.mode & 0o111 == 0o111
    assert data == SCRIPT.read_bytes()
    assert data.startswith(b"#!/bin/sh\n")


def test_archive_is_an_oci_layout_naming_the_image(image: Artifact) -> None:
    with tarfile.open(image.path / "image.tar") as tar:
        def blob(digest: str) -> bytes:
            path = "blobs/sha256/" + digest.split(":", 1)[1]
            return tar.extractfile(path).read()

        layout = json.loads(tar.extractfile("oci-layout").read())
        index = json.loads(tar.extractfile("index.json").read())
        desc = index["manifests"][0]
        manifest = json.loads(blob(desc["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        layer_blob = blob(manifest["layers"][0]["digest"])
    name = "docker.io/library/my-busybox:latest"
    assert layout == {"imageLayoutVersion": "1.0.0"}
    assert desc["annotations"] == {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name}
    assert desc["digest"] == image.manifest["image_digest"]
    assert manifest["layers"][0]["mediaType"] == workload.MT_LAYER
    assert layer_blob == (image.path / "layer.tar").read_bytes()
    assert config["config"]["Cmd"] == ["cedana", "test.sh"]
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    assert config["rootfs"]["diff_ids"] == [image.manifest["layer_digest"]]
    assert image.manifest["busybox_version"].startswith("BusyBox v")


def test_same_inputs_give_a_byte_identical_layer(
        tmp_path: Path, wrapper: Path) -> None:
    one, two = tmp_path / "one.tar", tmp_path / "two.tar"
    for out in (one, two):
        workload.write_layer(out, Path("/bin/busybox"), ["sh", "cat"],
                             wrapper, SCRIPT)
        time.sleep(0.01)
    assert one.read_bytes() == two.read_bytes()


def test_wrapper_sends_stdout_and_stderr_to_container_io(
        tmp_path: Path, wrapper: Path) -> None:
    res = subprocess.run([wrapper, "sh", "-c", "echo hi; echo err >&2"],
                         cwd=tmp_path, capture_output=True, timeout=10)
    assert res.returncode == 0
    assert res.stdout == res.stderr == b""
    assert (tmp_path / "container_io.txt").read_text() == "hi\nerr\n"


def test_wrapper_appends_to_an_existing_container_io(
        tmp_path: Path, wrapper: Path) -> None:
    (tmp_path / "container_io.txt").write_text("1\n")
    subprocess.run([wrapper, "echo", "2"], cwd=tmp_path, check=True,
                   timeout=10)
    assert (tmp_path / "container_io.txt").read_text() == "1\n2\n"


def test_wrapper_without_arguments_exits_2_with_usage(
        tmp_path: Path, wrapper: Path) -> None:
    res = subprocess.run([wrapper], cwd=tmp_path, capture_output=True,
                         timeout=10)
    assert res.returncode == 2
    assert b"usage" in res.stderr


def test_wrapper_exits_127_when_the_command_is_missing(
        tmp_path: Path, wrapper: Path) -> None:
    res = subprocess.run([wrapper, "no-such-command"], cwd=tmp_path,
                         timeout=10)
    assert res.returncode == 127
    assert "cannot exec no-such-command" in (
        tmp_path / "container_io.txt").read_text()


def test_counter_script_counts_from_1_every_half_second(
        tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(["/bin/busybox", "sh", SCRIPT], stdout=sink)
        time.sleep(1.3)
        proc.kill()
        proc.wait()
    values = [int(v) for v in out.read_text().split()]
    assert values[:2] == [1, 2]
    assert values == list(range(1, len(values) + 1))
    assert len(values) <= 4


def test_missing_busybox_is_a_config_error(tmp_path: Path) -> None:
    cfg = Config()
    cfg.workload.busybox = str(tmp_path / "no-busybox")
    with pytest.raises(ConfigError, match="workload.busybox"):
        build_workload_image(cfg, Cache(tmp_path / "cache"), tmp_path)


def test_dynamic_busybox_is_a_config_error(tmp_path: Path) -> None:
    cfg = Config()
    cfg.workload.busybox = "/bin/ls"
    with pytest.raises(ConfigError, match="workload.busybox.*not a static"):
        build_workload_image(cfg, Cache(tmp_path / "cache"), tmp_path)


def test_missing_gcc_is_a_missing_tool(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingTool, match="gcc"):
        build_workload_image(Config(), Cache(tmp_path / "cache"), tmp_path)
