"""Fixtures for the stand-in tests: PATH and a call log."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import pytest

STAND_INS = Path(__file__).resolve().parent.parent / "stand-ins"


@pytest.fixture
def standins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
             ) -> Callable[[], list[list]]:
    """Put the stand-ins first on PATH; return a reader of their calls."""
    log = tmp_path / "standin-calls.jsonl"
    monkeypatch.setenv("PATH", f"{STAND_INS}{os.pathsep}"
                       f"{os.environ['PATH']}")
    monkeypatch.setenv("KATACR_STANDIN_LOG", str(log))
    monkeypatch.delenv("KATACR_STANDIN_FAIL", raising=False)

    def calls() -> list[list]:
        if not log.exists():
            return []
        return [json.loads(ln) for ln in log.read_text().splitlines()]

    return calls


@pytest.fixture
def kata_checkout(tmp_path: Path) -> Path:
    """A kata-containers checkout whose scripts are the stand-ins."""
    repo = tmp_path / "kata-containers"
    for rel, name in (("tools/packaging/kernel", "build-kernel.sh"),
                      ("tools/osbuilder/rootfs-builder", "rootfs.sh"),
                      ("tools/osbuilder/image-builder", "image_builder.sh")):
        (repo / rel).mkdir(parents=True)
        (repo / rel / name).symlink_to(STAND_INS / name)
    return repo
