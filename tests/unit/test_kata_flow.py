"""Kata profile flow, pinned against stand-ins: preflight, console,
sandbox commands, cedana dump/restore."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pytest

from katacr import checkpoint, preflight
from katacr.config import Config, KataConfig
from katacr.engines.cedana import CedanaEngine
from katacr.errors import CheckpointCorrupt, StageError, StageTimeout
from katacr.platforms import kata as kata_platform
from katacr.platforms.console import PtyConsole
from katacr.platforms.guest_agent import GuestResult
from katacr.platforms.kata import KataSandbox


def cfg_with(tmp_path: Path, **kata: object) -> Config:
    return Config(kata=dataclasses.replace(
        KataConfig(containerd_address=str(tmp_path / "no-containerd.sock"),
                   base_configuration=str(tmp_path / "none.toml")), **kata))


# -- preflight ---------------------------------------------------------


def test_preflight_lists_every_missing_prerequisite_with_its_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(preflight, "VHOST_VSOCK", tmp_path / "vhost-vsock")
    monkeypatch.setattr(preflight, "DOCKER_SOCKET", tmp_path / "docker.sock")
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    text = preflight.report(preflight.kata_problems(cfg_with(tmp_path)))

    for expected in ("containerd socket not reachable",
                     "containerd-shim-kata-v2 not on PATH",
                     "kata-runtime not on PATH", "vhost-vsock missing",
                     "Kata base configuration missing",
                     "Docker engine not reachable", "cedana binary missing",
                     "kata-containers checkout missing"):
        assert expected in text
    assert text.count("(fix: ") == len(text.splitlines()) - 1


def test_preflight_names_file_and_key_when_debug_console_is_off(
        tmp_path: Path) -> None:
    conf = tmp_path / "configuration-qemu.toml"
    conf.write_text("[agent.kata]\ndebug_console_enabled = false\n")
    problem = preflight.debug_console_problem(conf)
    assert problem is not None
    assert f"{conf}: [agent.kata] debug_console_enabled is not true" in \
        str(problem)
    assert "vsock port 1026" in str(problem)


def test_preflight_accepts_a_config_with_the_console_on(
        tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text("[agent.kata]\ndebug_console_enabled = true\n")
    assert preflight.check_configuration(
        cfg_with(tmp_path, configuration=str(conf))) == []


def test_preflight_reports_a_failing_kata_runtime_check(
        standins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATACR_STANDIN_FAIL", "kata-runtime:check:1")
    problems = preflight.check_kata_runtime(cfg_with(tmp_path), None)
    assert [str(p) for p in problems] == [
        "`kata-runtime check` failed with status 1 (fix: run it by hand "
        "and fix what it reports)"]
    assert standins() == [["kata-runtime", "check"]]


# -- the debug console under a pty ---------------------------------------


def console(tmp_path: Path, timeout: float = 10) -> PtyConsole:
    return PtyConsole([shutil.which("kata-runtime") or "kata-runtime",
                       "exec", "vm1"], "vm1", tmp_path / "console.log",
                      timeout)


def test_console_runs_commands_and_reads_their_status(
        standins, tmp_path: Path) -> None:
    con = console(tmp_path)
    try:
        res = con.run(["echo", "hello world"], stage="install", timeout=10)
        assert res.stdout.strip() == "hello world"
        assert res.returncode == 0
        res = con.run(["sh", "-c", "echo out; exit 3"], stage="install",
                      timeout=10, check=False)
        assert (res.returncode, res.stdout.strip()) == (3, "out")
        with pytest.raises(StageError, match="FAIL at install: false "
                           "exited with status 1 in guest vm1"):
            con.run(["false"], stage="install", timeout=10)
    finally:
        con.close()
    assert standins() == [["kata-runtime", "exec", "vm1"]]


def test_console_without_prompt_times_out_naming_the_stage(
        standins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATACR_STANDIN_FAIL", "kata-runtime:no-prompt:1")
    con = console(tmp_path, timeout=2)
    with pytest.raises(StageTimeout, match="FAIL at install: install timed "
                       "out after 2 s waiting for the prompt of vm1"):
        con.run(["true"], stage="install", timeout=5)
    assert con.child is None


def test_kata_runtime_exec_panics_without_a_terminal(standins,
                                                     tmp_path: Path) -> None:
    from katacr import commands
    res = commands.run(["kata-runtime", "exec", "vm1"], stage="install",
                       timeout=10, check=False,
                       log_path=tmp_path / "exec.log")
    assert res.returncode == 2
    assert "provided file is not a console" in (tmp_path /
                                                 "exec.log").read_text()


def test_console_names_a_program_that_needs_a_terminal(
        tmp_path: Path) -> None:
    con = PtyConsole([sys.executable, "-c", "import sys; sys.stderr.write("
                      "'panic: provided file is not a console\\n'); "
                      "sys.exit(2)"], "vm1", tmp_path / "c.log", 5)
    with pytest.raises(StageError, match="refused to run without a "
                       "terminal"):
        con.run(["true"], stage="install", timeout=5)


# -- the sandbox over ctr ---------------------------------------------------


class RecordingContainerd:
    """Records the Containerd calls KataSandbox makes (ctr itself is real
    and tested in tests/e2e/test_workload_image.py)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def run_detached(self, image, container_id, argv, runtime,
                     runtime_config=None) -> None:
        self.calls.append(("run", image, container_id, list(argv), runtime,
                           runtime_config))

    def remove(self, container_id) -> None:
        self.calls.append(("remove", container_id))


def sandbox(tmp_path: Path, name: str = "katacr-src-1") -> tuple[
        KataSandbox, RecordingContainerd]:
    ctr = RecordingContainerd()
    return KataSandbox(name, cfg_with(tmp_path), ctr, "img:1",
                       tmp_path / "configuration-qemu.toml", tmp_path), ctr


def test_sandbox_starts_workload_with_the_kata_runtime_and_config(
        standins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATACR_STANDIN_KATA_CTL_EXEC", "1")
    monkeypatch.setattr(KataSandbox, "workload_pid", lambda s, c, **k: 42)
    box, ctr = sandbox(tmp_path)
    assert box.start_workload(box.name, ["cedana", "test.sh"]) == 42
    box.prepare_target(box.name)
    assert ctr.calls == [
        ("run", "img:1", box.name, ["cedana", "test.sh"],
         "io.containerd.kata.v2", str(tmp_path / "configuration-qemu.toml")),
        ("run", "img:1", box.name, kata_platform.TARGET_IDLE,
         "io.containerd.kata.v2", str(tmp_path / "configuration-qemu.toml")),
    ]


def test_sandbox_refuses_a_container_id_other_than_its_name(
        standins, tmp_path: Path) -> None:
    box, _ = sandbox(tmp_path)
    with pytest.raises(StageError, match="must equal the sandbox name"):
        box.start_workload("other", ["cedana", "test.sh"])


def test_guest_commands_use_kata_ctl_exec_where_it_exists(
        standins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATACR_STANDIN_KATA_CTL_EXEC", "1")
    box, ctr = sandbox(tmp_path)
    assert box.run(["echo", "hi"], stage="install").stdout == "hi\n"
    assert standins()[-1] == ["kata-ctl", "exec", box.name, "--", "echo",
                              "hi"]
    box.close()
    assert ctr.calls == [("remove", box.name)]


def test_guest_commands_fall_back_to_the_debug_console(
        standins, tmp_path: Path) -> None:
    box, _ = sandbox(tmp_path)
    try:
        assert box.run(["echo", "hi"], stage="verify").stdout == "hi\n"
    finally:
        box.close()
    assert ["kata-runtime", "exec", box.name] in standins()


# -- cedana --------------------------------------------------------------


class FakeGuest:
    """The guest side of a Kata sandbox, for the engine's own commands."""

    name = "katacr-src-1"
    image_digest = "sha256:img"
    workload_image_digest = "sha256:wl"

    def run(self, argv, stage, timeout=None, check=True, capture=True):
        out = {"uname": "6.1.62\n", "criu": "Version: 3.19\n"}.get(
            argv[0], "")
        return GuestResult(list(argv), 0, out, "", 0.0)

    def workload_pid(self, comm: str, stage: str = "") -> int:
        return 77


def engine(tmp_path: Path) -> CedanaEngine:
    cedana = Path(__file__).resolve().parent.parent / "stand-ins" / "cedana"
    return CedanaEngine(cfg_with(tmp_path, cedana=str(cedana)), tmp_path)


def test_cedana_dump_and_restore_commands(standins, tmp_path: Path) -> None:
    eng = engine(tmp_path)
    ckpt = eng.dump(FakeGuest(), "katacr-src-1", 1, tmp_path / "ck")
    assert ckpt.archive == tmp_path / "ck" / "dmp.tar"
    assert ckpt.manifest.kernel_release == "6.1.62"
    assert ckpt.manifest.engine == "cedana"
    assert eng.restore(FakeGuest(), ckpt, "katacr-dst-2") == 77

    calls = [c[1:] for c in standins() if c[1] in ("dump", "restore")]
    assert calls == [
        ["dump", "kata", "katacr-src-1", "-d", str(tmp_path / "ck")],
        ["restore", "kata", "katacr-src-1", "-d", str(ckpt.archive)],
    ]


def test_cedana_dump_that_leaves_no_tar_is_caught(
        standins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATACR_STANDIN_FAIL", "cedana:dump-no-tar:0")
    with pytest.raises(CheckpointCorrupt, match="cedana dump exited 0 but "
                       "left no .*dmp.tar"):
        engine(tmp_path).dump(FakeGuest(), "c", 1, tmp_path / "ck")


def test_cedana_dump_failure_names_the_stage(
        standins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATACR_STANDIN_FAIL", "cedana:dump:1")
    with pytest.raises(StageError, match="FAIL at dump: cedana exited "
                       "with status 1"):
        engine(tmp_path).dump(FakeGuest(), "c", 1, tmp_path / "ck")


def test_cedana_restore_never_sees_a_corrupt_checkpoint(
        standins, tmp_path: Path) -> None:
    eng = engine(tmp_path)
    ckpt = eng.dump(FakeGuest(), "c", 1, tmp_path / "ck")
    ckpt.archive.write_bytes(ckpt.archive.read_bytes()[:-1])
    with pytest.raises(CheckpointCorrupt, match="checkpoint corrupt"):
        eng.restore(FakeGuest(), checkpoint.load(ckpt.dir), "d")
    assert not any(c[1] == "restore" for c in standins())
