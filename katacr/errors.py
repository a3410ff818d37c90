"""Error kinds: each names what failed and at which stage."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


class KatacrError(Exception):
    """A known failure; its message is meant for the user as is."""


class ConfigError(KatacrError):
    """A configuration value is unknown, mistyped or points nowhere."""


class MissingTool(KatacrError):
    """A host program the harness needs is not installed."""


class PrivilegeError(KatacrError):
    """The harness lacks a privilege a stage needs."""


class StageError(KatacrError):
    """A stage failed; carries the command, its status and its log tail."""

    def __init__(self, stage: str, message: str, *,
                 argv: Sequence[str] | None = None,
                 returncode: int | None = None,
                 log_path: Path | None = None,
                 tail: str = "") -> None:
        self.stage = stage
        self.message = message
        self.argv = list(argv) if argv else None
        self.returncode = returncode
        self.log_path = log_path
        self.tail = tail
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"FAIL at {self.stage}: {self.message}"]
        if self.argv:
            lines.append("  command: " + " ".join(self.argv))
        if self.returncode is not None:
            lines.append(f"  exit status: {self.returncode}")
        if self.tail:
            lines.append("  log tail:")
            lines.extend("    " + ln for ln in self.tail.splitlines())
        if self.log_path:
            lines.append(f"  full log: {self.log_path}")
        return "\n".join(lines)


class StageTimeout(StageError):
    """A stage ran past its own timeout; its process group was killed."""


class CheckpointCorrupt(StageError):
    """A checkpoint archive does not match its manifest."""


class StateNotCarriedOver(KatacrError):
    """The restored workload's state does not continue the dumped one."""
