"""The Debian mirror is read from the host's apt sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from katacr.builders.rootfs import find_mirror
from katacr.errors import ConfigError


def _etc(tmp_path: Path, list_text: str = "", sources: str = "") -> Path:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(list_text)
    if sources:
        (tmp_path / "sources.list.d" / "debian.sources").write_text(sources)
    return tmp_path


def test_deb822_sources(tmp_path: Path) -> None:
    etc = _etc(tmp_path, sources=(
        "Types: deb\nURIs: http://mirror.test/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.test/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"))
    assert find_mirror("bookworm", etc) == "http://mirror.test/debian"


def test_one_line_sources_with_options(tmp_path: Path) -> None:
    etc = _etc(tmp_path, "deb [arch=amd64] http://m.test/debian bookworm "
               "main\n# deb http://other.test/debian bookworm main\n")
    assert find_mirror("bookworm", etc) == "http://m.test/debian"


def test_other_suite_falls_back_to_a_debian_archive(tmp_path: Path) -> None:
    etc = _etc(tmp_path, "deb http://m.test/debian trixie main\n")
    assert find_mirror("bookworm", etc) == "http://m.test/debian"


def test_no_mirror_names_the_config_key(tmp_path: Path) -> None:
    etc = _etc(tmp_path, "deb http://m.test/ubuntu jammy main\n")
    with pytest.raises(ConfigError, match="rootfs.mirror"):
        find_mirror("bookworm", etc)
