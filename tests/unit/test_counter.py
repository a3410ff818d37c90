"""The state check: restored output continues the dumped output."""

from __future__ import annotations

import pytest

from katacr.errors import StateNotCarriedOver
from katacr.workloads.counter import check_continuation, check_counting, parse_values


def test_parse_drops_a_torn_last_line() -> None:
    assert parse_values("1\n2\n3") == [1, 2]


def test_parse_refuses_garbage() -> None:
    with pytest.raises(StateNotCarriedOver, match="line 2 is not"):
        parse_values("1\nhello\n")


def test_continuation_accepts_the_next_values() -> None:
    dumped = list(range(1, 12))
    assert check_continuation(dumped, dumped + [12, 13, 14], 6) == 12


def test_continuation_accepts_a_small_gap() -> None:
    # A tick can land between the dump and the copy of the output.
    dumped = list(range(1, 12))
    with pytest.raises(StateNotCarriedOver):
        check_continuation(dumped, dumped + [14, 15], 6)


@pytest.mark.parametrize("after,message", [
    ([1, 2, 3], "does not start with the 11 dumped values"),
    (list(range(1, 12)) + [1, 2, 3], "first value after restore is 1"),
    (list(range(1, 12)), "no value written after the restore"),
    (list(range(1, 12)) + [40], "first value after restore is 40"),
    (list(range(1, 12)) + [12, 14], "counter went from 12 to 14"),
])
def test_continuation_catches_a_workload_that_did_not_resume(
        after: list[int], message: str) -> None:
    with pytest.raises(StateNotCarriedOver, match=message):
        check_continuation(list(range(1, 12)), after, 6)


def test_counting_must_go_up_by_one() -> None:
    check_counting([3, 4, 5], "x")
    with pytest.raises(StateNotCarriedOver, match="from 5 to 5"):
        check_counting([4, 5, 5], "x")
