"""Host commands: argv only, logged, under a timeout that kills the group."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from katacr import commands
from katacr.errors import MissingTool, StageError, StageTimeout


def test_output_goes_to_the_step_log(tmp_path: Path) -> None:
    log = tmp_path / "step.log"
    res = commands.run(["sh", "-c", "echo out; echo err >&2"], stage="t",
                       timeout=10, log_path=log)
    assert res.returncode == 0
    text = log.read_text()
    assert "$ sh -c" in text and "out" in text and "err" in text


def test_failure_names_stage_command_status_and_log_tail(
        tmp_path: Path) -> None:
    log = tmp_path / "step.log"
    with pytest.raises(StageError) as err:
        commands.run(["sh", "-c", "echo boom >&2; exit 3"],
                     stage="build-rootfs", timeout=10, log_path=log)
    msg = str(err.value)
    assert msg.startswith("FAIL at build-rootfs: sh exited with status 3")
    assert "exit status: 3" in msg and "boom" in msg and str(log) in msg


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    start = time.monotonic()
    with pytest.raises(StageTimeout, match="dump timed out after 1 s"):
        commands.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"],
                     stage="dump", timeout=1, log_path=tmp_path / "l")
    assert time.monotonic() - start < 10
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or \
        Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"


def test_missing_program_is_named() -> None:
    with pytest.raises(MissingTool, match="missing tool: no-such-tool-x"):
        commands.run(["no-such-tool-x"], stage="t", timeout=5)
    with pytest.raises(MissingTool, match="needed to test"):
        commands.which("no-such-tool-x", "to test")


def test_each_command_is_logged_with_status_and_duration(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="katacr.commands"):
        commands.run(["true"], stage="t", timeout=5)
    text = caplog.text
    assert "RUN true" in text and "DONE status=0 in" in text


def test_capture_returns_stdout(tmp_path: Path) -> None:
    res = commands.run(["echo", "hello"], stage="t", timeout=5,
                       capture=True)
    assert res.stdout == "hello\n"


def test_require_root_names_the_privilege(monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(Exception, match="root privilege required: because"):
        commands.require_root("because")
