"""katacr's pytest entry point: options, and the fixtures from fixtures/."""

from __future__ import annotations

import signal

import pytest

pytest_plugins = ["fixtures.artifacts", "fixtures.vms", "fixtures.kata"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("katacr", "katacr save-migrate-resume harness")
    group.addoption("--katacr-config", metavar="FILE", default=None,
                    help="YAML file describing the run (default: built-in "
                         "local profile; env KATACR_CONFIG)")
    group.addoption("--katacr-set", metavar="KEY=VALUE", action="append",
                    default=[], help="override one config value, e.g. "
                    "vm.memory_mb=2048 (repeatable)")
    group.addoption("--profile", choices=("local", "kata"), default=None,
                    help="platform profile (config key: profile)")
    group.addoption("--cache-dir-katacr", dest="katacr_cache_dir",
                    metavar="DIR", default=None,
                    help="artifact cache (config key: cache_dir)")
    group.addoption("--keep-images", choices=("always", "failed", "never"),
                    default=None, help="keep checkpoint archives of "
                    "passed/failed tests (config key: keep_images)")
    group.addoption("--require-kata", action="store_true", default=False,
                    help="fail instead of skipping kata tests on a host "
                    "that cannot run Kata (release gating)")


def _interrupt(signum: int, frame: object) -> None:
    # Unwind like Ctrl-C, so every fixture stops its VMs and containers.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "local_profile: runs only under the "
                            "local profile (plain QEMU, criu engine)")
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    # A session started in the background inherits SIGINT ignored; the
    # harness still wants Ctrl-C to stop its VMs cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"katacr_report_{report.when}", report)
    log_dir = getattr(item, "katacr_log_dir", None)
    if log_dir and report.failed:
        report.sections.append(("katacr", f"logs of this test: {log_dir}"))
