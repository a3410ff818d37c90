"""Shared by the stand-ins: record argv, then play back what a test asks.

A stand-in exists only for tests, for what cannot run here (kata-runtime,
kata-ctl, cedana, osbuilder, build-kernel.sh, docker).  Each call appends
one JSON line ``[name, argv...]`` to $KATACR_STANDIN_LOG.  A test makes a
stand-in fail with ``KATACR_STANDIN_FAIL=<name>:<subcommand>:<status>``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def record(name: str) -> list[str]:
    argv = sys.argv[1:]
    log = os.environ.get("KATACR_STANDIN_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps([name, *argv]) + "\n")
    return argv


def failure(name: str, sub: str) -> int | None:
    """The exit status a test asked *name* *sub* to fail with, if any."""
    for spec in os.environ.get("KATACR_STANDIN_FAIL", "").split(","):
        parts = spec.split(":")
        if len(parts) == 3 and parts[0] == name and parts[1] == sub:
            return int(parts[2])
    return None


def option(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def write(path: str | Path, text: str = "") -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
