"""Nothing outlives a test: not after Ctrl-C, SIGTERM or a test timeout.

Each case runs a child pytest that boots a VM, interrupts it from
outside, and checks from outside that the VM, its sockets and its share
are gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from katacr.leaks import process_alive
from katacr.platforms.accel import AccelChoice

pytestmark = [pytest.mark.order(7), pytest.mark.local_profile]

REPO = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).parent / "probes" / "interrupt_probe.py"
BOOT_WAIT_S = 180


def start_probe(tmp_path: Path, accel: AccelChoice,
                *extra: str) -> tuple[subprocess.Popen, Path]:
    marker = tmp_path / "marker.json"
    argv = [sys.executable, "-m", "pytest", str(PROBE), "-q",
            "-p", "no:cacheprovider", "-o", "log_cli=false",
            "--katacr-set", f"vm.accel={accel.accel}",
            "--katacr-set", f"log_dir={tmp_path / 'logs'}", *extra]
    proc = subprocess.Popen(argv, cwd=REPO, start_new_session=True,
                            env={**os.environ,
                                 "KATACR_PROBE_MARKER": str(marker)},
                            stdout=open(tmp_path / "child.log", "wb"),
                            stderr=subprocess.STDOUT)
    return proc, marker


def wait_for_marker(proc: subprocess.Popen, marker: Path,
                    log: Path) -> dict:
    deadline = time.monotonic() + BOOT_WAIT_S
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_probe(proc, None)
            pytest.fail("probe never booted its VM:\n" + log.read_text())
        time.sleep(0.5)
    time.sleep(0.2)
    return json.loads(marker.read_text())


def stop_probe(proc: subprocess.Popen, seen: dict | None) -> None:
    """Kill what the probe left, so a failing check leaks nothing."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if seen and process_alive(seen["qemu_pid"]):
        os.kill(seen["qemu_pid"], signal.SIGKILL)


def assert_nothing_left(seen: dict) -> None:
    pid = seen["qemu_pid"]
    assert not process_alive(pid), \
        f"QEMU {pid} outlived the interrupted session"
    assert not Path(seen["run_dir"]).exists(), "VM socket dir left behind"
    assert not Path(seen["share"]).exists(), "VM share dir left behind"


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM],
                         ids=["sigint", "sigterm"])
def test_interrupted_session_leaves_no_vm(tmp_path: Path, accel: AccelChoice,
                                          how: signal.Signals) -> None:
    proc, marker = start_probe(tmp_path, accel)
    seen = wait_for_marker(proc, marker, tmp_path / "child.log")
    proc.send_signal(how)
    try:
        proc.wait(timeout=60)
        assert proc.returncode != 0
        assert_nothing_left(seen)
    finally:
        stop_probe(proc, seen)


def test_timed_out_test_leaves_no_vm(tmp_path: Path,
                                     accel: AccelChoice) -> None:
    proc, marker = start_probe(tmp_path, accel, "--timeout=40")
    seen = wait_for_marker(proc, marker, tmp_path / "child.log")
    try:
        proc.wait(timeout=120)
        assert proc.returncode == 1
        assert "Timeout" in (tmp_path / "child.log").read_text()
        assert_nothing_left(seen)
    finally:
        stop_probe(proc, seen)
