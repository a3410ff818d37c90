"""Kata profile flow, pinned against stand-ins: preflight, console,
sandbox commands, cedana dump/restore."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from katacr import checkpoint, preflight
from katacr.config import Config, KataConfig
from katacr.engines.cedana import GUEST_CRIU_VERSION, CedanaEngine
from katacr.errors import CheckpointCorrupt, StageError, StageTimeout
from katacr.platforms import kata as kata_platform
from katacr.platforms.console import PtyConsole
from katacr.platforms.containerd import Containerd
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
    text = preflight.report(preflight.kata_problems(cfg_with(
        tmp_path, docker_host=f"unix://{tmp_path}/docker.sock")))

    for expected in ("containerd socket not reachable",
                     "containerd-shim-kata-v2 not on PATH",
                     "kata-runtime not on PATH", "vhost-vsock missing",
                     "Kata base configuration missing",
                     f"Docker engine not reachable: {tmp_path}/docker.sock",
                     "cedana binary missing",
                     "kata-containers checkout missing"):
        assert expected in text
    assert text.count("(fix: ") == len(text.splitlines()) - 1


def test_preflight_talks_to_no_daemon_it_was_not_told_of(
        tmp_path: Path) -> None:
    cfg = Config()
    assert (cfg.kata.containerd_address, cfg.kata.docker_host) == ("", "")
    text = preflight.report([*preflight.check_containerd(cfg),
                             *preflight.check_docker(cfg, None)])
    assert "containerd socket not reachable: kata.containerd_address not " \
        "set" in text
    assert "Docker engine not reachable: kata.docker_host not set" in text


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

NAMESPACE = "katacr-unit"


@pytest.fixture
def containerd(standins, tmp_path: Path) -> Iterator[Containerd]:
    """A Containerd attached, through the ctr stand-in, to no daemon."""
    ctr = Containerd.attach(str(tmp_path / "containerd.sock"), NAMESPACE,
                            tmp_path)
    yield ctr
    ctr.close()


def ctr_calls(calls: list[list]) -> list[list]:
    """ctr's arguments after ``--address A --namespace N``."""
    return [c[5:] for c in calls if c[0] == "ctr"]


def sandbox(tmp_path: Path, containerd: Containerd,
            name: str = "katacr-src-1") -> KataSandbox:
    return KataSandbox(name, cfg_with(tmp_path), containerd, "img:1",
                       tmp_path / "configuration-qemu.toml", tmp_path)


@pytest.fixture
def host_workload(tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A process named test.sh, where the stand-ins run guest commands."""
    script = tmp_path / "test.sh"
    script.write_text("#!/bin/sh\nwhile :; do sleep 1; done\n")
    script.chmod(0o755)
    proc = subprocess.Popen([script])
    yield proc
    proc.kill()
    proc.wait()


def test_sandbox_runs_starts_and_tears_down_through_ctr_in_order(
        standins, containerd: Containerd, host_workload: subprocess.Popen,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATACR_STANDIN_KATA_CTL_EXEC", "1")
    box = sandbox(tmp_path, containerd)
    assert box.start_workload(box.name, ["cedana", "test.sh"]) == \
        host_workload.pid
    box.close()

    config = str(tmp_path / "configuration-qemu.toml")
    assert ctr_calls(standins()) == [
        ["version"],
        ["run", "--runtime", "io.containerd.kata.v2", "-d", "--fifo-dir",
         str(containerd.fifo_dir), "--runtime-config-path", config,
         "--null-io", "img:1", box.name, "cedana", "test.sh"],
        ["task", "ls"],
        ["task", "kill", "--all", "--signal", "SIGKILL", box.name],
        ["task", "ls"],
        ["task", "ls"],
        ["task", "rm", "-f", box.name],
        ["container", "ls", "-q"],
        ["container", "rm", box.name],
    ]


def test_target_sandbox_runs_an_idle_workload_named_after_the_vm(
        standins, containerd: Containerd, tmp_path: Path) -> None:
    box = sandbox(tmp_path, containerd, "katacr-dst-2")
    box.prepare_target(box.name)
    run = ctr_calls(standins())[1]
    assert run[-3:] == ["katacr-dst-2", *kata_platform.TARGET_IDLE]
    box.close()


def test_sandbox_refuses_a_container_id_other_than_its_name(
        standins, containerd: Containerd, tmp_path: Path) -> None:
    box = sandbox(tmp_path, containerd)
    with pytest.raises(StageError, match="must equal the sandbox name"):
        box.start_workload("other", ["cedana", "test.sh"])


def test_teardown_runs_after_a_workload_that_never_shows_up(
        standins, containerd: Containerd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATACR_STANDIN_KATA_CTL_EXEC", "1")
    monkeypatch.setattr(kata_platform, "WORKLOAD_START_S", 1)
    box = sandbox(tmp_path, containerd)
    with pytest.raises(StageTimeout, match="FAIL at start-workload: .* no "
                       "process test.sh in guest katacr-src-1"):
        box.start_workload(box.name, ["cedana", "test.sh"])
    box.close()
    assert ctr_calls(standins())[-3:] == [
        ["task", "rm", "-f", box.name], ["container", "ls", "-q"],
        ["container", "rm", box.name]]


def spawn(argv0: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([argv0, "-c", "import time; time.sleep(60)",
                             *args], executable=sys.executable)


def test_teardown_kills_only_this_sandboxs_leftover_qemu_and_shim(
        standins, containerd: Containerd, tmp_path: Path) -> None:
    mine = [spawn("qemu-system-x86_64", "-name", "sandbox-katacr-x-1"),
            spawn(kata_platform.SHIM, "-namespace", NAMESPACE, "-id",
                  "katacr-x-1")]
    others = [spawn("qemu-system-x86_64", "-name", "sandbox-katacr-x-10"),
              spawn(kata_platform.SHIM, "-namespace", "other", "-id",
                    "katacr-x-1")]
    try:
        found = kata_platform.sandbox_processes("katacr-x-1", NAMESPACE)
        assert sorted(pid for pid, _ in found) == sorted(p.pid for p in mine)
        sandbox(tmp_path, containerd, "katacr-x-1").close()
        assert [p.wait(timeout=10) for p in mine] == [-9, -9]
        assert [p.poll() for p in others] == [None, None]
    finally:
        for proc in mine + others:
            proc.kill()
            proc.wait()
    assert ctr_calls(standins()) == [["version"]], "never launched: no ctr"


def test_kata_ctl_runs_commands_only_where_its_usage_shows_one() -> None:
    kata_3 = "Usage: kata-ctl exec [OPTIONS] <SANDBOX_ID>\n"
    kata_41 = "Usage: kata-ctl exec [OPTIONS] <SANDBOX_ID> [-- <CMD>...]\n"
    assert not kata_platform.kata_ctl_runs_commands(kata_3)
    assert kata_platform.kata_ctl_runs_commands(kata_41)


def test_guest_commands_use_kata_ctl_exec_where_it_takes_a_command(
        standins, containerd: Containerd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATACR_STANDIN_KATA_CTL_EXEC", "1")
    box = sandbox(tmp_path, containerd)
    assert box.run(["echo", "hi"], stage="install").stdout == "hi\n"
    assert [c for c in standins() if c[0] == "kata-ctl"] == [
        ["kata-ctl", "exec", "--help"],
        ["kata-ctl", "exec", box.name, "--", "echo", "hi"]]


def test_guest_commands_use_the_debug_console_with_a_kata_3_kata_ctl(
        standins, containerd: Containerd, host_workload: subprocess.Popen,
        tmp_path: Path) -> None:
    box = sandbox(tmp_path, containerd)
    try:
        assert box.run(["echo", "hi"], stage="verify").stdout == "hi\n"
        assert box.workload_pid("test.sh") == host_workload.pid
        assert box.pid_alive(host_workload.pid)
    finally:
        box.close()
    calls = [c for c in standins() if c[0] in ("kata-ctl", "kata-runtime")]
    assert calls == [["kata-ctl", "exec", "--help"],
                     ["kata-runtime", "exec", box.name]]


# -- cedana --------------------------------------------------------------


class FakeGuest:
    """The guest side of a Kata sandbox, for the engine's own commands."""

    name = "katacr-src-1"
    image_digest = "sha256:img"
    workload_image_digest = "sha256:wl"

    release = "6.1.62"

    def run(self, argv, stage, timeout=None, check=True, capture=True):
        out = {"uname -r": self.release + "\n",
               f"sh -c {GUEST_CRIU_VERSION}": "Version: 3.19\n"}.get(
            " ".join(argv), "")
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
    assert ckpt.manifest.criu_version == "Version: 3.19"
    assert ckpt.manifest.engine == "cedana"
    assert ckpt.manifest.dump_options == [
        "kata", "cedana cedana version v0.0.0-stand-in"]
    assert eng.restore(FakeGuest(), ckpt, "katacr-dst-2") == 77

    assert [c[1:] for c in standins()] == [
        ["--version"],
        ["dump", "kata", "katacr-src-1", "-d", str(tmp_path / "ck")],
        ["restore", "kata", "katacr-src-1", "-d", str(ckpt.archive)],
    ]


@pytest.mark.parametrize("fail, error, message", [
    ("cedana:dump:1", StageError, "FAIL at dump: cedana exited with "
     "status 1"),
    ("cedana:dump-no-tar:0", CheckpointCorrupt, "cedana dump exited 0 but "
     "left no .*dmp.tar"),
    ("cedana:dump-truncated:0", CheckpointCorrupt, "FAIL at dump: "
     "checkpoint is not a valid tar"),
], ids=["status", "no-tar", "truncated-tar"])
def test_cedana_dump_is_judged_by_its_tar_not_its_status(
        standins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        fail: str, error: type, message: str) -> None:
    monkeypatch.setenv("KATACR_STANDIN_FAIL", fail)
    with pytest.raises(error, match=message):
        engine(tmp_path).dump(FakeGuest(), "c", 1, tmp_path / "ck")


def test_cedana_restore_never_sees_a_corrupt_checkpoint(
        standins, tmp_path: Path) -> None:
    eng = engine(tmp_path)
    ckpt = eng.dump(FakeGuest(), "c", 1, tmp_path / "ck")
    ckpt.archive.write_bytes(ckpt.archive.read_bytes()[:-1])
    with pytest.raises(CheckpointCorrupt, match="checkpoint corrupt"):
        eng.restore(FakeGuest(), checkpoint.load(ckpt.dir), "d")
    assert not any(c[1] == "restore" for c in standins())


def test_cedana_restore_refuses_a_target_with_another_kernel(
        standins, tmp_path: Path) -> None:
    eng = engine(tmp_path)
    ckpt = eng.dump(FakeGuest(), "c", 1, tmp_path / "ck")
    target = FakeGuest()
    target.release = "6.6.1"
    with pytest.raises(StageError, match="FAIL at restore: source/target "
                       "mismatch: kernel release: source 6.1.62, target "
                       "6.6.1"):
        eng.restore(target, ckpt, "d")
    assert not any(c[1] == "restore" for c in standins())

