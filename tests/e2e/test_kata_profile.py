"""`--profile kata` on a host that is not a Kata host: the whole list of
what is missing, as a skip, or as a failure with --require-kata."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.order(8)

REPO = Path(__file__).resolve().parents[2]
EXPECTED = ("containerd socket not reachable", "vhost-vsock",
            "Docker engine not reachable", "cedana binary missing",
            "kata-containers checkout missing")


def run_kata_profile(tmp_path: Path, *extra: str, daemons: bool = True
                     ) -> subprocess.CompletedProcess:
    # Daemon addresses, when given, point into tmp_path: this test talks to
    # nothing it did not create (and the defaults name no daemon at all).
    argv = [sys.executable, "-m", "pytest", "tests/e2e/test_checkpoint_"
            "restore.py", "--profile", "kata", "-rs", "-p",
            "no:cacheprovider", "-o", "log_cli=false",
            "--katacr-set", f"log_dir={tmp_path / 'logs'}", *extra]
    if daemons:
        argv += ["--katacr-set",
                 f"kata.containerd_address={tmp_path / 'containerd.sock'}",
                 "--katacr-set",
                 f"kata.docker_host=unix://{tmp_path / 'docker.sock'}"]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_kata_profile_skips_listing_every_missing_prerequisite(
        tmp_path: Path) -> None:
    res = run_kata_profile(tmp_path, daemons=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "skipped" in out and "passed" not in out
    assert "not a Kata host" in out
    for item in EXPECTED:
        assert item in out, item
    assert "kata.containerd_address not set" in out
    assert "kata.docker_host not set" in out


def test_require_kata_turns_the_skip_into_a_failure(tmp_path: Path) -> None:
    res = run_kata_profile(tmp_path, "--require-kata")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "not a Kata host" in out
    for item in EXPECTED:
        assert item in out, item
