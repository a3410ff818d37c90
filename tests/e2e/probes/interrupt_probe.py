"""Run by test_leaks.py in a child pytest, which it then interrupts.

Not collected by the main run (its name does not start with ``test_``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from katacr.platforms.local import LocalSandbox


def test_wait_to_be_interrupted(source_sandbox: LocalSandbox) -> None:
    source_sandbox.wait_ready()
    vm = source_sandbox.vm
    Path(os.environ["KATACR_PROBE_MARKER"]).write_text(json.dumps({
        "qemu_pid": vm.pid, "run_dir": str(vm.run_dir),
        "share": str(source_sandbox.share)}))
    time.sleep(600)
