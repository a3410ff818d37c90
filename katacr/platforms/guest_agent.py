"""The QEMU guest agent as the guest channel: run a command, read a file.

Built on ``qemu.qmp`` with greeting and negotiation off (qemu-ga has
neither).  A call that times out leaves the channel in an unknown state,
so the client reconnects and resynchronises with ``guest-sync`` before the
next call.
"""

from __future__ import annotations

import base64
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from qemu.qmp import ExecuteError
from qemu.qmp.legacy import QEMUMonitorProtocol

from katacr.errors import StageError, StageTimeout

log = logging.getLogger("katacr.guest")
# qemu.qmp logs every refused connection while a guest boots, and every
# disconnect: expected here, and reported by this module when they matter.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)

POLL_S = 0.05
RPC_TIMEOUT_S = 10.0


@dataclass
class GuestResult:
    """A finished guest command."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration: float


class GuestAgent:
    """One client of one VM's qemu-ga socket."""

    def __init__(self, socket_path: Path, name: str,
                 log_path: Path | None = None) -> None:
        self.socket_path = socket_path
        self.name = name
        self.log_path = log_path
        self._qmp: QEMUMonitorProtocol | None = None

    def _connect(self, timeout: float) -> QEMUMonitorProtocol:
        if self._qmp is None:
            qmp = QEMUMonitorProtocol(str(self.socket_path),
                                      nickname=f"qga-{self.name}")
            qmp.connect(negotiate=False)
            qmp.settimeout(timeout)
            self._qmp = qmp
            self._sync(timeout)
        self._qmp.settimeout(timeout)
        return self._qmp

    def _sync(self, timeout: float) -> None:
        assert self._qmp is not None
        token = random.randrange(1, 2**31)
        self._qmp.settimeout(timeout)
        got = self._qmp.cmd("guest-sync", id=token)
        if got != token:
            raise ConnectionError(f"guest-sync answered {got}, not {token}")

    def close(self) -> None:
        """Drop the connection (a later call reconnects)."""
        if self._qmp is not None:
            try:
                self._qmp.close()
            except Exception:  # noqa: BLE001 - closing a broken channel
                pass
            self._qmp = None

    def call(self, command: str, timeout: float = RPC_TIMEOUT_S,
             **args: object) -> object:
        """Execute one agent command and return its ``return`` value."""
        try:
            return self._connect(timeout).cmd(command, **args)
        except ExecuteError:
            raise
        except Exception:
            self.close()
            raise

    def _rpc(self, stage: str, command: str, **args: object) -> object:
        """:meth:`call`, with a lost channel reported as a stage failure."""
        try:
            return self.call(command, **args)
        except ExecuteError:
            raise
        except Exception as exc:  # noqa: BLE001 - any channel failure
            raise StageError(stage, f"guest agent of {self.name} "
                             f"unreachable ({command}): "
                             f"{type(exc).__name__}: {exc}") from None

    def ping(self, timeout: float = 2.0) -> bool:
        """True when the agent answers within *timeout*."""
        try:
            self.call("guest-ping", timeout=timeout)
            return True
        except Exception:  # noqa: BLE001 - any failure means not yet
            return False

    def wait_ready(self, timeout: float, alive=lambda: True) -> float:
        """Wait until the agent answers; return how long it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if not alive():
                raise StageError("boot", f"VM {self.name} exited while "
                                 "booting")
            if self.ping(timeout=min(2.0, timeout)):
                return time.monotonic() - start
            time.sleep(0.2)
        raise StageTimeout("boot", f"boot timed out after {timeout:g} s: "
                           f"guest agent of {self.name} never answered")

    def _log(self, text: str) -> None:
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(text)

    def run(self, argv: Sequence[str], *, stage: str, timeout: float,
            check: bool = True, input: bytes | None = None,
            capture: bool = True) -> GuestResult:
        """Run *argv* in the guest and wait for it, under *timeout*.

        Without *capture*, a command that leaves a daemon behind returns
        as soon as it exits (the agent would otherwise wait for the
        daemon to close the output pipes it inherited).
        """
        args = [str(a) for a in argv]
        log.debug("RUN [%s] %s", self.name, " ".join(args))
        start = time.monotonic()
        request: dict[str, object] = {"path": args[0], "arg": args[1:],
                                      "capture-output": capture}
        if input is not None:
            request["input-data"] = base64.b64encode(input).decode()
        try:
            pid = self._rpc(stage, "guest-exec",
                            **request)["pid"]  # type: ignore[index]
        except ExecuteError as exc:
            raise StageError(stage, f"guest could not start {args[0]}: "
                             f"{exc}", argv=args) from None
        status = self._wait_exec(pid, args, stage, timeout, start)
        duration = time.monotonic() - start
        result = GuestResult(
            args, status.get("exitcode", 128 + status.get("signal", 0)),
            _decode(status.get("out-data")), _decode(status.get("err-data")),
            duration)
        log.debug("DONE [%s] status=%d in %.2f s: %s", self.name,
                  result.returncode, duration, args[0])
        self._log(f"\n[{self.name}]$ {' '.join(args)}\n{result.stdout}"
                  f"{result.stderr}[status {result.returncode}, "
                  f"{duration:.2f} s]\n")
        if check and result.returncode != 0:
            raise StageError(stage, f"{args[0]} exited with status "
                             f"{result.returncode} in guest {self.name}",
                             argv=args, returncode=result.returncode,
                             log_path=self.log_path,
                             tail=_last_lines(result.stderr
                                              or result.stdout))
        return result

    def _wait_exec(self, pid: int, args: list[str], stage: str,
                   timeout: float, start: float) -> dict:
        while True:
            status = self._rpc(stage, "guest-exec-status", pid=pid)
            assert isinstance(status, dict)
            if status.get("exited"):
                return status
            if time.monotonic() - start > timeout:
                self._kill(pid)
                self._log(f"\n[{self.name}]$ {' '.join(args)}\n"
                          f"[timed out after {timeout:g} s]\n")
                raise StageTimeout(stage, f"{stage} timed out after "
                                   f"{timeout:g} s in guest {self.name}",
                                   argv=args, log_path=self.log_path)
            time.sleep(POLL_S)

    def _kill(self, pid: int) -> None:
        try:
            self.call("guest-exec", path="/bin/kill",
                      arg=["-KILL", str(pid)])
        except Exception:  # noqa: BLE001 - best effort after a timeout
            pass

    def read_text(self, path: str, stage: str, timeout: float = 30) -> str:
        """Return a small guest text file's content."""
        return self.run(["/bin/cat", path], stage=stage,
                        timeout=timeout).stdout


def _decode(data: str | None) -> str:
    return base64.b64decode(data).decode(errors="replace") if data else ""


def _last_lines(text: str, n: int = 15) -> str:
    return "\n".join(text.splitlines()[-n:])
