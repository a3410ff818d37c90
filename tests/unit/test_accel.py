"""Accelerator choice: a probe boot decides, never /dev/kvm alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from katacr.config import VmConfig
from katacr.errors import ConfigError
from katacr.platforms import accel


def test_tcg_when_configured_without_probing(monkeypatch) -> None:
    monkeypatch.setattr(accel, "probe_kvm", _no_probe)
    choice = accel.choose_accel(VmConfig(accel="tcg"), Path("k"), Path("i"),
                                Path("."))
    assert (choice.accel, choice.reason) == ("tcg", "vm.accel is tcg")


def test_missing_device_falls_back_to_tcg_saying_why(monkeypatch,
                                                      tmp_path) -> None:
    monkeypatch.setattr(accel, "KVM", tmp_path / "kvm")
    monkeypatch.setattr(accel, "probe_kvm", _no_probe)
    choice = accel.choose_accel(VmConfig(), Path("k"), Path("i"), Path("."))
    assert choice.accel == "tcg"
    assert "kvm does not exist" in choice.reason


def test_device_present_but_probe_hangs_falls_back_to_tcg(monkeypatch,
                                                           tmp_path) -> None:
    dev = tmp_path / "kvm"
    dev.write_text("")
    monkeypatch.setattr(accel, "KVM", dev)
    monkeypatch.setattr(accel, "probe_kvm", lambda *a: "a KVM probe boot "
                        "did not reach the guest agent in 20 s")
    choice = accel.choose_accel(VmConfig(), Path("k"), Path("i"), Path("."))
    assert choice.accel == "tcg" and "probe boot" in choice.reason


def test_kvm_forced_without_device_names_the_key(monkeypatch,
                                                 tmp_path) -> None:
    monkeypatch.setattr(accel, "KVM", tmp_path / "kvm")
    with pytest.raises(ConfigError, match="vm.accel: kvm asked for but"):
        accel.choose_accel(VmConfig(accel="kvm"), Path("k"), Path("i"),
                           Path("."))


def _no_probe(*args: object) -> str:
    raise AssertionError("no probe boot expected")
