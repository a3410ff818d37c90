"""The artifact cache: keyed by content, atomic, locked, with a manifest."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from katacr.cache import Cache, digest_inputs, digest_tree


def test_second_obtain_rebuilds_nothing(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    calls = []

    def build(out: Path) -> dict:
        calls.append(out)
        (out / "thing").write_text("x")
        return {"produced": "thing"}

    first = cache.obtain("kernel", {"a": 1}, build)
    second = cache.obtain("kernel", {"a": 1}, build)
    assert len(calls) == 1
    assert not first.hit and second.hit
    assert second.path == first.path
    manifest = json.loads((first.path / "manifest.json").read_text())
    assert manifest["inputs"] == {"a": 1}
    assert manifest["produced"] == "thing"
    assert "duration_s" in manifest


def test_changed_input_builds_a_new_key(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    a = cache.obtain("k", {"v": 1}, lambda out: {})
    b = cache.obtain("k", {"v": 2}, lambda out: {})
    assert a.key != b.key


def test_failed_build_leaves_nothing_under_the_key(tmp_path: Path) -> None:
    cache = Cache(tmp_path)

    def build(out: Path) -> dict:
        (out / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.obtain("k", {"v": 1}, build)
    assert [p.name for p in (tmp_path / "k").iterdir()
            if not p.name.endswith(".lock")] == []
    assert cache.lookup("k", digest_inputs({"v": 1})[:24]) is None


def _slow_build(root: str, marker: str) -> None:
    def build(out: Path) -> dict:
        with open(marker, "a") as f:
            f.write("built\n")
        time.sleep(1)
        return {}

    Cache(Path(root)).obtain("k", {"same": True}, build)


def test_two_sessions_build_one_key_once(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    procs = [multiprocessing.Process(target=_slow_build,
                                     args=(str(tmp_path / "c"), str(marker)))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert marker.read_text() == "built\n"


def test_tree_digest_sees_content_and_mode(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a")
    d1 = digest_tree(tmp_path)
    (tmp_path / "f").chmod(0o755)
    d2 = digest_tree(tmp_path)
    (tmp_path / "f").write_text("b")
    assert len({d1, d2, digest_tree(tmp_path)}) == 3
