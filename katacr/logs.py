"""Log directories: one per run, one per build, one per test."""

from __future__ import annotations

import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def new_run_dir(root: Path) -> Path:
    """``root/<utc time>-<pid>``, created, with ``root/latest`` pointing at it."""
    run = root / (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                  + f"-{os.getpid()}")
    (run / "build").mkdir(parents=True, exist_ok=True)
    latest = root / "latest"
    try:
        if latest.is_symlink():
            latest.unlink()
        latest.symlink_to(run.name)
    except OSError:
        pass
    return run


def test_dir_name(nodeid: str) -> str:
    """A file-system-safe directory name for a pytest node id."""
    name = nodeid.split("::", 1)[-1] if "::" in nodeid else nodeid
    module = Path(nodeid.split("::", 1)[0]).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{module}.{name}")[:120]


@contextmanager
def capture(path: Path, level: int = logging.DEBUG) -> Iterator[Path]:
    """Send every ``katacr`` log record to *path* while the block runs."""
    handler = logging.FileHandler(path)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("katacr")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(min(old or logging.DEBUG, level))
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
        handler.close()
