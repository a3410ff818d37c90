"""Kernel config verification: every asked-for option must be =y."""

from __future__ import annotations

from pathlib import Path

import pytest

from katacr.builders.kernel import (
    CRIU_REQUIRED,
    check_config,
    parse_config,
    verify_config,
)
from katacr.engines.criu import kernel_hints
from katacr.errors import StageError

FULL = "".join(f"CONFIG_{o}=y\n" for o in CRIU_REQUIRED)


def test_parse_reads_set_and_unset_options() -> None:
    cfg = parse_config('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x"\n'
                       "# a comment\n")
    assert cfg == {"A": "y", "B": "n", "C": '"x"'}


def test_complete_config_has_no_problem() -> None:
    final = parse_config(FULL + "CONFIG_VIRTIO_BLK=y\n")
    assert check_config(final, {"guest.conf": {"VIRTIO_BLK": "y"}}) == []


def test_fragment_option_dropped_by_kconfig_is_listed() -> None:
    final = parse_config(FULL)
    problems = check_config(final, {"guest.conf": {"VIRTIO_BLK": "y"}})
    assert [str(p) for p in problems] == [
        "CONFIG_VIRTIO_BLK (wanted y, found n; guest.conf)"]


def test_module_request_is_refused_even_if_promoted_to_y() -> None:
    final = parse_config(FULL)
    problems = check_config(final, {"criu.conf": {"UNIX_DIAG": "m"}})
    assert len(problems) == 1
    assert "CONFIG_UNIX_DIAG" in str(problems[0])
    assert "no modules" in str(problems[0])


def test_criu_requirement_checked_even_when_fragment_turns_it_off() -> None:
    final = parse_config(FULL.replace("CONFIG_TUN=y", "CONFIG_TUN=m"))
    problems = check_config(final, {"criu.conf": {"TUN": "n"}})
    assert any("CONFIG_TUN (wanted y, found m; required by CRIU)" in str(p)
               for p in problems)


def test_verify_lists_every_missing_option_in_one_error(
        tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text(FULL.replace("CONFIG_PID_NS=y\n", "").replace(
        "CONFIG_NET_NS=y\n", ""))
    frag = tmp_path / "criu.conf"
    frag.write_text("CONFIG_PID_NS=y\n")
    with pytest.raises(StageError) as err:
        verify_config(config, [frag])
    msg = str(err.value)
    assert msg.startswith("FAIL at build-kernel: kernel config lacks")
    assert "CONFIG_PID_NS" in msg and "CONFIG_NET_NS" in msg


@pytest.mark.parametrize("output,option", [
    ("Error (criu/kerndat.c:508): Unexpected error from memfd_create(\"\", "
     "MFD_HUGETLB): Function not implemented\nError (criu/kerndat.c:1598): "
     "kerndat_has_memfd_hugetlb failed when initializing kerndat.",
     "CONFIG_HUGETLBFS"),
    ("Error (criu/kerndat.c:637): Unable to bind a socket: Cannot assign "
     "requested address\nError (criu/kerndat.c:1570): kerndat_tcp_repair "
     "failed when initializing kerndat.", "loopback"),
    ("Error (criu/cr-check.c:1273): Time namespaces are not supported",
     "CONFIG_TIME_NS"),
    ("Error (criu/cr-check.c:512): System call kcmp is not supported: "
     "Function not implemented", "CONFIG_CHECKPOINT_RESTORE"),
    ("Warn  (criu/cr-check.c:1174): Dirty tracking is OFF. Memory snapshot "
     "will not work.", "CONFIG_MEM_SOFT_DIRTY"),
])
def test_criu_check_messages_map_to_kernel_options(output: str,
                                                   option: str) -> None:
    assert any(option in hint for hint in kernel_hints(output))
