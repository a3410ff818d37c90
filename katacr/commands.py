"""Run host commands: argv lists only, each under a timeout, each logged.

Every command is logged once on the ``katacr.commands`` logger as
``RUN argv`` and ``DONE status=N in S s``; its output goes to the step's
log file, never to the terminal.  A command that outruns its timeout has
its whole process group killed and raises :class:`StageTimeout`.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from katacr.errors import MissingTool, PrivilegeError, StageError, StageTimeout

log = logging.getLogger("katacr.commands")

TAIL_LINES = 20
KILL_GRACE_S = 5.0


@dataclass
class Result:
    """What one finished command left behind."""

    argv: list[str]
    returncode: int
    duration: float
    stdout: str
    log_path: Path | None


def which(tool: str, why: str) -> str:
    """Return the path of *tool* or fail naming it and what needs it."""
    path = shutil.which(tool)
    if not path:
        raise MissingTool(f"missing tool: {tool} (needed {why})")
    return path


def tail(path: Path | None, lines: int = TAIL_LINES) -> str:
    """Return the last *lines* lines of a log file, or an empty string."""
    if path is None or not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 16384))
        text = f.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def kill_group(proc: subprocess.Popen, grace: float = KILL_GRACE_S) -> None:
    """Stop a process group we started: TERM, *grace* seconds, then KILL.

    KILL always follows (stragglers of the group may outlive the leader);
    the leader is always reaped.
    """
    if grace:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log.error("process group %d did not die after SIGKILL", proc.pid)


def run(argv: Sequence[str | os.PathLike], *, stage: str, timeout: float,
        log_path: Path | None = None, check: bool = True,
        capture: bool = False, cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None) -> Result:
    """Run *argv* for *stage*; raise :class:`StageError` when it fails.

    Output is appended to *log_path*; with *capture*, stdout is also
    returned (stderr still goes to the log).
    """
    args = [os.fspath(a) for a in argv]
    full_env = None if env is None else {**os.environ, **env}
    log.debug("RUN %s", " ".join(args))
    sink = open(log_path, "ab") if log_path else subprocess.DEVNULL
    if log_path:
        sink.write(f"\n$ {' '.join(args)}\n".encode())
        sink.flush()
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            args, cwd=cwd, env=full_env, start_new_session=True,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else sink, stderr=sink)
    except (FileNotFoundError, PermissionError) as exc:
        if log_path:
            sink.close()
        what = "missing tool" if isinstance(exc, FileNotFoundError) \
            else "cannot execute"
        raise MissingTool(f"{what}: {args[0]} (stage {stage})") from exc
    try:
        out, _ = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        duration = time.monotonic() - start
        log.info("TIMEOUT after %.1f s: %s", duration, " ".join(args))
        raise StageTimeout(stage, f"{stage} timed out after {timeout:g} s",
                           argv=args, log_path=log_path,
                           tail=tail(log_path)) from None
    except BaseException:
        kill_group(proc)
        raise
    finally:
        if log_path:
            sink.close()
    duration = time.monotonic() - start
    stdout = (out or b"").decode(errors="replace")
    if capture and log_path:
        with open(log_path, "ab") as f:
            f.write(out or b"")
    log.debug("DONE status=%d in %.2f s: %s", proc.returncode, duration,
              args[0])
    result = Result(args, proc.returncode, duration, stdout, log_path)
    if check and proc.returncode != 0:
        raise StageError(stage, f"{Path(args[0]).name} exited with status "
                         f"{proc.returncode}", argv=args,
                         returncode=proc.returncode, log_path=log_path,
                         tail=tail(log_path))
    return result


def start_daemon(argv: Sequence[str | os.PathLike],
                 log_path: Path) -> subprocess.Popen:
    """Start a long-running process in its own group, output to *log_path*.

    The caller owns it and stops it with :func:`kill_group`.
    """
    args = [os.fspath(a) for a in argv]
    log.debug("RUN %s", " ".join(args))
    with open(log_path, "ab") as out:
        out.write(f"\n$ {' '.join(args)}\n".encode())
        out.flush()
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=out, start_new_session=True)


def package_version(package: str) -> str:
    """The installed Debian package's version, for cache keys."""
    res = run(["dpkg-query", "-W", "-f=${Version}", package],
              stage="inspect-host", timeout=30, capture=True, check=False)
    return res.stdout.strip() or "unknown"


def require_root(why: str) -> None:
    """Fail up front, naming the privilege and the reason, unless root."""
    if os.geteuid() != 0:
        raise PrivilegeError(
            f"root privilege required: {why} (run with sudo)")
