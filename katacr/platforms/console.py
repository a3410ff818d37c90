"""Drive a guest shell that insists on a terminal (``kata-runtime exec``).

``kata-runtime exec <sandbox>`` takes no command: it opens the guest's
debug console and needs a real terminal.  The console is spawned under a
pseudo-terminal; each command is sent framed by a unique marker and its
exit status read back after it.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
import uuid
from pathlib import Path
from typing import Sequence

import pexpect

from katacr.errors import StageError, StageTimeout
from katacr.platforms.guest_agent import GuestResult

log = logging.getLogger("katacr.console")

PROMPT = re.compile(rb"[#$] ?$", re.M)
NOT_A_CONSOLE = "provided file is not a console"


class PtyConsole:
    """One interactive guest shell behind a pty."""

    def __init__(self, argv: Sequence[str], name: str, log_path: Path,
                 prompt_timeout: float) -> None:
        self.argv = list(argv)
        self.name = name
        self.log_path = log_path
        self.prompt_timeout = prompt_timeout
        self.child: pexpect.spawn | None = None

    def _fail(self, stage: str, message: str) -> StageError:
        seen = ""
        if self.child is not None:
            seen = (self.child.before or b"").decode(errors="replace")
        if NOT_A_CONSOLE in seen:
            message = (f"{self.argv[0]} refused to run without a terminal "
                       f"({NOT_A_CONSOLE})")
        return StageError(stage, message, argv=self.argv,
                          log_path=self.log_path, tail=seen[-2000:])

    def open(self, stage: str) -> None:
        """Spawn the console and wait for its first prompt."""
        if self.child is not None and self.child.isalive():
            return
        log.debug("RUN %s", " ".join(self.argv))
        self.child = pexpect.spawn(self.argv[0], self.argv[1:],
                                   timeout=self.prompt_timeout,
                                   dimensions=(50, 4000),
                                   logfile=open(self.log_path, "ab"))
        self.child.sendline("")
        try:
            self.child.expect(PROMPT, timeout=self.prompt_timeout)
        except pexpect.TIMEOUT:
            err = self._fail(stage, "")
            self.close()
            raise StageTimeout(stage, f"{stage} timed out after "
                               f"{self.prompt_timeout:g} s waiting for the "
                               f"prompt of {self.name}", argv=self.argv,
                               log_path=self.log_path, tail=err.tail) \
                from None
        except pexpect.EOF:
            err = self._fail(stage, f"{self.argv[0]} exited before its "
                             "prompt")
            self.close()
            raise err from None

    def run(self, argv: Sequence[str], *, stage: str, timeout: float,
            check: bool = True) -> GuestResult:
        """Run *argv* in the guest shell; return its output and status."""
        self.open(stage)
        assert self.child is not None
        marker = f"KATACR-{uuid.uuid4().hex[:12]}"
        command = shlex.join(argv)
        log.debug("RUN [%s] %s", self.name, command)
        start = time.monotonic()
        # The marker is printed split so the echoed command never matches.
        self.child.sendline(f"{command}; echo {marker[:6]}''{marker[6:]} $?")
        done = re.compile(rf"{marker} (\d+)\r?\n".encode())
        try:
            self.child.expect(done, timeout=timeout)
        except pexpect.TIMEOUT:
            self.close()
            raise StageTimeout(stage, f"{stage} timed out after {timeout:g} "
                               f"s in guest {self.name}", argv=list(argv),
                               log_path=self.log_path) from None
        except pexpect.EOF:
            err = self._fail(stage, f"guest console of {self.name} closed")
            self.close()
            raise err from None
        status = int(self.child.match.group(1))
        output = self.child.before.decode(errors="replace")
        output = output.split("\n", 1)[1] if "\n" in output else ""
        result = GuestResult(list(argv), status, output.replace("\r", ""),
                             "", time.monotonic() - start)
        log.debug("DONE [%s] status=%d in %.2f s: %s", self.name, status,
                  result.duration, argv[0])
        if check and status != 0:
            raise StageError(stage, f"{argv[0]} exited with status {status} "
                             f"in guest {self.name}", argv=list(argv),
                             returncode=status, log_path=self.log_path,
                             tail=result.stdout[-2000:])
        return result

    def close(self) -> None:
        if self.child is not None:
            self.child.close(force=True)
            self.child = None
