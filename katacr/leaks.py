"""Find what a harness session left running: VMs by their sandbox name."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import Iterator


def process_alive(pid: int) -> bool:
    """True unless *pid* is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def process_argvs() -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of every process whose command line can be read."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        yield int(entry.name), raw.decode(errors="replace").split("\0")


def processes_matching(needle: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose argv has *needle*."""
    return [(pid, " ".join(argv).strip()) for pid, argv in process_argvs()
            if pid != os.getpid() and any(needle in a for a in argv)
            and process_alive(pid)]


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
