"""Machine identity: the chip key, backend and library versions, on any machine."""

import platform
from importlib import metadata

import pytest

from pytest_mlxvlm.common import machine

# The detection itself, bound before any test replaces it (--simulate-mac, simulated_mac).
DETECT = machine.detect


def test_slug():
    assert machine.slug("Apple M4 Max 128gb") == "apple-m4-max-128gb"
    assert machine.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert machine.slug("  ") == "unknown"


def test_identity_on_this_machine_names_chip_backend_and_versions():
    info = DETECT()
    assert info["backend"] in ("metal", "cuda", "cpu")
    assert info["chip"] and info["key"] == machine.slug(info["key"])
    if "cores" in info:  # a CPU-only machine: its key names the CPU and its cores
        assert info["key"].startswith("cpu-") and info["key"].endswith(f"-{info['cores']}c")
    assert info["mlx"] == metadata.version("mlx")
    assert info["mlx_vlm"] == metadata.version("mlx-vlm")
    assert info["python"] == platform.python_version()
    assert DETECT() is DETECT()  # detected once per process


@pytest.mark.parametrize("backend, chip, key", [
    ("metal", ("Apple M4 Max", 128), "apple-m4-max-128gb"),
    ("metal", ("Apple M2", None), "apple-m2"),
    ("cuda", ("NVIDIA H200", 140), "nvidia-h200"),
    ("cpu", ("AMD EPYC 7B13", 2), "cpu-amd-epyc-7b13-2c"),
])
def test_the_key_on_each_backend(monkeypatch, backend, chip, key):
    monkeypatch.setattr(machine, "backend", lambda: backend)
    monkeypatch.setattr(machine, "_apple_chip", lambda: chip)
    monkeypatch.setattr(machine, "_nvidia_chip", lambda: chip)
    monkeypatch.setattr(machine, "_cpu_chip", lambda: chip)
    monkeypatch.setattr(machine.sys, "platform", "linux")  # a Mac would take its Apple chip
    info = DETECT.__wrapped__()  # uncached
    assert (info["backend"], info["chip"], info["key"]) == (backend, chip[0], key)
    assert info["mlx"] == metadata.version("mlx")


def test_chip_key_override(monkeypatch):
    info = machine.identity("My Lab M2 Ultra")
    assert info["key"] == "my-lab-m2-ultra"
    assert info["detected_key"] == machine.detect()["key"]
    monkeypatch.setenv(machine.CHIP_ENV, "ci-runner")
    assert machine.identity()["key"] == "ci-runner"
    assert machine.identity("option wins")["key"] == "option-wins"


def test_a_simulated_mac_is_what_sessions_see(simulated_mac):
    info = machine.identity()
    assert info == simulated_mac and info["backend"] == "metal" and info["mlx"] == "0.99.0"


def test_host_id_tells_apart_starts_of_machines_that_share_a_name(tmp_path, monkeypatch):
    boot = tmp_path / "boot_id"
    monkeypatch.setattr(machine, "BOOT_ID", boot)
    boot.write_text("first-start\n")
    first = machine.host_id()
    assert first == machine.host_id() and len(first) == 12
    boot.write_text("second-start\n")
    assert machine.host_id() != first  # a fresh cloud machine with the same host name
    boot.unlink()
    assert len(machine.host_id()) == 12  # no boot id (macOS): the host name alone
