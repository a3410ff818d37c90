"""The guest kernel: built from the fragments, with every CRIU option in."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from katacr import commands
from katacr.builders.kernel import CRIU_REQUIRED, configure, parse_config, verify_config
from katacr.cache import Artifact
from katacr.config import Config
from katacr.errors import StageError

pytestmark = [pytest.mark.order(1), pytest.mark.local_profile]


def test_kernel_config_has_every_fragment_option_built_in(
        guest_kernel: Artifact, katacr_config: Config) -> None:
    fragments = [Path(f) for f in katacr_config.kernel.fragments]
    verify_config(guest_kernel.path / "config", fragments)
    final = parse_config((guest_kernel.path / "config").read_text())
    assert [o for o in CRIU_REQUIRED if final.get(o) != "y"] == []
    assert final.get("MODULES", "n") == "n"


def test_kernel_is_a_pvh_bootable_vmlinux(guest_kernel: Artifact,
                                          test_log_dir: Path) -> None:
    vmlinux = guest_kernel.path / "vmlinux"
    assert vmlinux.read_bytes()[:4] == b"\x7fELF"
    notes = commands.run(["readelf", "--notes", vmlinux], stage="verify",
                         timeout=60, capture=True,
                         log_path=test_log_dir / "readelf.log").stdout
    assert "Xen" in notes, "no PVH (Xen) ELF note: QEMU cannot boot it"
    assert guest_kernel.manifest["release"].startswith("6.")


def _fragment_with(tmp_path: Path, src: Path, option: str,
                   line: str) -> Path:
    text = [ln for ln in src.read_text().splitlines()
            if not ln.startswith(f"CONFIG_{option}=")
            and ln != f"# CONFIG_{option} is not set"]
    out = tmp_path / src.name
    out.write_text("\n".join(text + [line]) + "\n")
    return out


@pytest.mark.parametrize("option,line,expect", [
    ("CHECKPOINT_RESTORE", "# CONFIG_CHECKPOINT_RESTORE is not set",
     "CONFIG_CHECKPOINT_RESTORE (wanted y, found n; required by CRIU)"),
    ("UNIX_DIAG", "CONFIG_UNIX_DIAG=m", "CONFIG_UNIX_DIAG (wanted y, "
     "found '=m' requested"),
], ids=["switched-off", "as-module"])
def test_kernel_config_fails_naming_the_missing_option(
        kernel_source: Path, katacr_config: Config, tmp_path: Path,
        test_log_dir: Path, option: str, line: str, expect: str) -> None:
    fragments = [Path(f) for f in katacr_config.kernel.fragments]
    criu = next(f for f in fragments if f.name == "criu.conf")
    bad = [_fragment_with(tmp_path, criu, option, line) if f == criu else f
           for f in fragments]
    out = tmp_path / "build"
    config = configure(kernel_source, out, bad, test_log_dir / "kconfig.log")
    with pytest.raises(StageError) as err:
        verify_config(config, bad)
    assert expect in str(err.value)
    assert "FAIL at build-kernel" in str(err.value)
    shutil.rmtree(out)
