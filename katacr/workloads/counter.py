"""The counter workload: ``test.sh`` appends 1, 2, 3, ... every 0.5 s.

Its own output is its state, so the workload itself says whether its
state survived: after a restore, ``container_io.txt`` must hold exactly
the values it held at dump time, then go on from the next value.
"""

from __future__ import annotations

import time
from typing import Protocol

from katacr.errors import StageTimeout, StateNotCarriedOver

IO_FILE = "container_io.txt"
TICK_S = 0.5


class Sandbox(Protocol):
    def read_container_file(self, container_id: str, path: str,
                            stage: str) -> str: ...


def parse_values(text: str) -> list[int]:
    """The complete counter lines of *text* (a torn last line is dropped)."""
    lines = text.split("\n")[:-1]
    values = []
    for n, line in enumerate(lines, 1):
        try:
            values.append(int(line))
        except ValueError:
            raise StateNotCarriedOver(f"{IO_FILE} line {n} is not a counter "
                                      f"value: {line[:60]!r}") from None
    return values


def read_values(sandbox: Sandbox, container_id: str,
                stage: str = "verify") -> list[int]:
    """The counter values the workload has written so far."""
    return parse_values(sandbox.read_container_file(container_id, IO_FILE,
                                                    stage))


def wait_for_value(sandbox: Sandbox, container_id: str, at_least: int,
                   timeout: float, stage: str = "workload") -> list[int]:
    """Poll until the counter reaches *at_least*; return the values."""
    deadline = time.monotonic() + timeout
    values: list[int] = []
    while time.monotonic() < deadline:
        try:
            values = read_values(sandbox, container_id, stage)
        except Exception:  # noqa: BLE001 - the file may not exist yet
            values = []
        if values and values[-1] >= at_least:
            return values
        time.sleep(TICK_S)
    raise StageTimeout(stage, f"{stage} timed out after {timeout:g} s: "
                       f"counter at {values[-1] if values else 'nothing'}, "
                       f"waiting for {at_least}")


def wait_for_lines(sandbox: Sandbox, container_id: str, count: int,
                   timeout: float, stage: str = "verify") -> list[int]:
    """Poll until the workload has written more than *count* lines."""
    deadline = time.monotonic() + timeout
    values: list[int] = []
    while time.monotonic() < deadline:
        values = read_values(sandbox, container_id, stage)
        if len(values) > count:
            return values
        time.sleep(TICK_S)
    raise StageTimeout(stage, f"{stage} timed out after {timeout:g} s: "
                       f"no new counter value after line {count}")


def check_counting(values: list[int], what: str) -> None:
    """Fail unless *values* go up by exactly one each line."""
    for prev, cur in zip(values, values[1:]):
        if cur != prev + 1:
            raise StateNotCarriedOver(f"{what}: counter went from {prev} "
                                      f"to {cur}")


def check_continuation(dumped: list[int], after: list[int],
                       max_gap: int) -> int:
    """Fail unless *after* is *dumped* followed by the next values.

    Returns the first value written after the restore.
    """
    if not dumped:
        raise StateNotCarriedOver("the checkpoint holds no counter value")
    if after[:len(dumped)] != dumped:
        raise StateNotCarriedOver(
            f"{IO_FILE} on the target does not start with the "
            f"{len(dumped)} dumped values (dumped ... {dumped[-3:]}, "
            f"target starts {after[:3]})")
    new = after[len(dumped):]
    if not new:
        raise StateNotCarriedOver(f"no value written after the restore "
                                  f"(last dumped {dumped[-1]})")
    last = dumped[-1]
    if not last < new[0] <= last + max_gap:
        raise StateNotCarriedOver(
            f"first value after restore is {new[0]}, expected "
            f"{last + 1}..{last + max_gap} (dumped at {last})")
    check_counting(dumped + new, "after restore")
    return new[0]


def check_advancing(sandbox: Sandbox, container_id: str, seconds: float,
                    stage: str = "verify") -> tuple[int, int]:
    """Fail unless the counter keeps increasing for *seconds*."""
    first = read_values(sandbox, container_id, stage)
    deadline = time.monotonic() + seconds
    last = first
    while time.monotonic() < deadline:
        time.sleep(TICK_S)
        last = read_values(sandbox, container_id, stage)
    if not first or not last or last[-1] <= first[-1]:
        raise StateNotCarriedOver(
            f"counter did not advance in {seconds:g} s "
            f"({first[-1:] or 'none'} -> {last[-1:] or 'none'})")
    need = int(seconds / TICK_S * 0.5)
    if last[-1] - first[-1] < need:
        raise StateNotCarriedOver(
            f"counter advanced only {last[-1] - first[-1]} in {seconds:g} s"
            f" (expected at least {need})")
    check_counting(last, "while advancing")
    return first[-1], last[-1]
