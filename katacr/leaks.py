"""Find what a harness session left running: VMs by their sandbox name."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path


def process_alive(pid: int) -> bool:
    """True unless *pid* is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def processes_matching(needle: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose argv has *needle*."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        argv = raw.decode(errors="replace").split("\0")
        if any(needle in a for a in argv) and \
                process_alive(int(entry.name)):
            found.append((int(entry.name), " ".join(argv).strip()))
    return found


def kill_all(pids: list[int]) -> None:
    """SIGKILL each PID (ones this session started)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def temp_dirs(tag: str) -> list[Path]:
    """The harness's temporary dirs (``katacr-*``) whose name holds *tag*."""
    return [p for p in Path(tempfile.gettempdir()).glob("katacr-*")
            if tag in p.name]


def mounts(tag: str) -> list[str]:
    """Mount points whose path holds *tag*."""
    with open("/proc/self/mounts") as f:
        return [ln.split()[1] for ln in f if tag in ln.split()[1]]
